//! Backpressure on app writers: after a commit that captured changes, wait
//! as long as the syncer's pace file says (`sdsync_core::pace`).
//!
//! ```sql
//! .load target/release/libsdsync
//! INSERT INTO entries(uuid, name) VALUES ('e1', 'a');  -- may wait after its commit
//! SELECT sdsync_paced();                               -- microseconds it waited so far
//! SELECT sdsync_pace(0);                               -- this connection: never
//! ```
//!
//! A writer faster than a live peer can apply would leave that peer further
//! behind every second, with the unsent changes piling up; the syncer asks
//! writers to slow down instead (`syncer/src/daemon/pace.rs`), by a wait per
//! row captured. The wait comes from the WAL hook, which SQLite calls from the
//! committing statement after the commit, with the write lock released: other
//! connections write meanwhile (the syncer's applies go on). The committing
//! call returns after the wait, so threads sharing this connection wait with
//! it. The file is read at most once every [`READ_EVERY_MS`] and opened
//! again once a second (a file replaced or created since is seen), so a
//! connection's commits cost a clock read when nothing paces.

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, c_char};
use std::fs::File;
use std::path::Path;
use std::time::Duration;

use sqlite3ext_sys::sqlite3;

use sdsync_core::hlc::wall_millis;
use sdsync_core::pace;

use crate::ffi::api;

/// How often the pace file is read while commits capture changes.
const READ_EVERY_MS: u64 = 10;
/// How often the pace file is opened again (found, or replaced, since).
const OPEN_EVERY_MS: u64 = 1_000;

/// One connection's view of the pace file.
#[derive(Default)]
pub struct Pace {
    /// Set by `sdsync_pace(0)`: this connection is never paced (the syncer's
    /// own, or an import the user wants at full speed).
    pub off: Cell<bool>,
    file: RefCell<Option<File>>,
    /// When the file is opened next.
    open_at_ms: Cell<u64>,
    /// When the word was last read, and what it said.
    read_at_ms: Cell<u64>,
    word: Cell<[u8; 8]>,
    /// The connection's local writes at the last commit seen.
    writes_seen: Cell<u64>,
    /// Microseconds this connection waited in all (`sdsync_paced()`).
    pub waited_us: Cell<u64>,
}

impl Pace {
    /// After a commit on `database` of `db`: how long to wait for the rows
    /// this connection captured since the last commit (`writes` counts them).
    pub fn after_commit(&self, db: *mut sqlite3, database: *const c_char, writes: u64) -> Duration {
        let rows = writes.wrapping_sub(self.writes_seen.replace(writes));
        if self.off.get() || rows == 0 {
            return Duration::ZERO;
        }
        let now = wall_millis();
        if now >= self.read_at_ms.get() + READ_EVERY_MS {
            self.read_at_ms.set(now);
            self.word
                .set(self.read(db, database, now).unwrap_or([0; 8]));
        }
        let wait = pace::wait(self.word.get(), now, rows);
        let waited = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        self.waited_us
            .set(self.waited_us.get().saturating_add(waited));
        wait
    }

    /// The word, opening the file on first use and once a second; `None`
    /// without a file (a database in memory or temporary, no syncer yet).
    fn read(&self, db: *mut sqlite3, database: *const c_char, now: u64) -> Option<[u8; 8]> {
        let mut file = self.file.borrow_mut();
        if now >= self.open_at_ms.get() {
            self.open_at_ms.set(now + OPEN_EVERY_MS);
            *file = database_path(db, database).and_then(|p| File::open(pace::path(&p)).ok());
        }
        let mut word = [0; 8];
        read_at_start(file.as_ref()?, &mut word).ok()?;
        Some(word)
    }
}

/// Reads `word` from the start of `file` (one `pread` where there is one).
#[cfg(unix)]
fn read_at_start(file: &File, word: &mut [u8; 8]) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, word, 0)
}

#[cfg(not(unix))]
fn read_at_start(mut file: &File, word: &mut [u8; 8]) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(word)
}

/// The path of the database file SQLite holds open as `database`.
fn database_path(db: *mut sqlite3, database: *const c_char) -> Option<std::path::PathBuf> {
    // SAFETY: valid handle and the schema name SQLite passed to the hook; the
    // returned string lives while the database stays attached (this call).
    let name = unsafe { api!(db_filename)(db, database) };
    if name.is_null() {
        return None;
    }
    // SAFETY: SQLite returns a NUL-terminated string (checked for NULL above).
    let name = unsafe { CStr::from_ptr(name) }.to_str().ok()?;
    (!name.is_empty()).then(|| Path::new(name).to_path_buf())
}
