//! One syncer per library folder: `sdsync run` holds an exclusive lock on
//! `<folder>/syncer.lock` for as long as it runs.
//!
//! ```no_run
//! let _lock = sdsync_syncer::runlock::lock("Photos.sdlibrary".as_ref())?; // held until dropped
//! # Ok::<(), sdsync_syncer::runlock::LockError>(())
//! ```
//!
//! Two syncers on one folder would both apply, push and record watermarks as
//! the same device; the second is refused before it opens anything. The lock
//! is the kernel's (`flock`), so a syncer killed with SIGKILL releases it at
//! once and a restart never finds a stale lock. The file holds the holder's
//! pid, for the error message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the library folder.
pub const LOCK_FILE: &str = "syncer.lock";

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another syncer runs on the folder.
    #[error(
        "another `sdsync run` is running on {} (pid {pid}): one syncer per library folder; stop that one first",
        dir.display()
    )]
    Held {
        /// The folder.
        dir: PathBuf,
        /// The holder's pid, as it wrote it.
        pid: String,
    },
    /// The lock file could not be opened or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Held while the syncer runs; dropping it (or the process ending, however)
/// releases the folder.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Takes the folder's syncer lock, or says who holds it.
pub fn lock(dir: &Path) -> Result<RunLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                pid: pid.trim().to_string(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(RunLock { _file: file })
}

/// The pid of the syncer holding the folder's lock, if one does. Probes with
/// a shared lock, released at once (a `sdsync run` starting in that instant
/// is refused and says so).
pub fn holder(dir: &Path) -> Option<String> {
    let mut file = File::open(dir.join(LOCK_FILE)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Some(pid.trim().to_string())
        }
        Err(TryLockError::Error(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_folder_is_refused_until_the_first_is_dropped() {
        let dir = std::env::temp_dir().join(format!("sdsync-runlock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = lock(&dir).unwrap();
        let err = lock(&dir).unwrap_err();
        assert!(
            matches!(&err, LockError::Held { pid, .. } if *pid == std::process::id().to_string()),
            "{err}"
        );
        assert!(err.to_string().contains("one syncer per library folder"));
        assert_eq!(holder(&dir), Some(std::process::id().to_string()));
        drop(first);
        assert_eq!(holder(&dir), None);
        lock(&dir).unwrap();
    }
}
