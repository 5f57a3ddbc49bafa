//! The working folders of `sdsync demo` and `sdsync bench`, which start from
//! nothing on every run.
//!
//! ```text
//! let dir = scratch::fresh("/tmp/sdsync-demo".as_ref())?; // created, or emptied if made by us
//! ```
//!
//! Emptying a folder the user named is dangerous (`--dir ~` once deleted a home
//! folder's contents), so only a folder this module created — marked by a file
//! inside it — is ever emptied; any other non-empty folder is refused.

use std::path::{Path, PathBuf};

use sdsync_syncer::library::LibraryError;

/// The file that marks a folder as sdsync's scratch space.
const MARK: &str = ".sdsync-scratch";

/// Makes `dir` an empty scratch folder: creates it, or empties it if an earlier
/// run made it; refuses a non-empty folder it did not make.
pub fn fresh(dir: &Path) -> Result<PathBuf, LibraryError> {
    let io = |source| LibraryError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map_err(io)?.next().is_none();
        if !empty && !dir.join(MARK).is_file() {
            return Err(LibraryError::NotScratch(dir.to_path_buf()));
        }
        std::fs::remove_dir_all(dir).map_err(io)?;
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(
        dir.join(MARK),
        b"made by sdsync demo/bench; emptied on every run\n",
    )
    .map_err(io)?;
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_folder_it_did_not_make() {
        let base = std::env::temp_dir().join(format!("sdsync-scratch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("precious"), b"keep").unwrap();
        assert!(matches!(fresh(&base), Err(LibraryError::NotScratch(_))));
        assert!(base.join("precious").exists());

        let scratch = base.join("s");
        fresh(&scratch).unwrap();
        std::fs::write(scratch.join("old"), b"x").unwrap();
        fresh(&scratch).unwrap();
        assert!(!scratch.join("old").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
