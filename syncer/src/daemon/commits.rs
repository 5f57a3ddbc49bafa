//! Noticing other connections' commits as they happen, not up to a poll later.
//!
//! ```ignore
//! let mut commits = Commits::watch(&store.lib.path);
//! loop {
//!     tokio::select! {
//!         _ = commits.next() => daemon.poll_commits(),   // a look at data_version
//!         // …
//!     }
//! }
//! ```
//!
//! An app's commit reaches the syncer only through the database file. Looking
//! at `PRAGMA data_version` every 5 ms made every commit wait 2.5 ms on
//! average, and 5 ms at worst, before its first push. A commit in WAL mode
//! writes its frames to `<db>-wal`, and a watch on the folder (inotify on
//! Linux, through `notify`) hears each write. The commit becomes visible to
//! other connections only a moment after its last write, when SQLite updates
//! the WAL index in shared memory (after an fsync, with `synchronous =
//! FULL`), which no watch sees; so a write starts a short run of looks, at
//! once and then 1, 3, 7, 15 and 31 ms later (the timer's resolution is a
//! millisecond). The syncer's own applies write the WAL too and start such
//! runs for nothing: backing off keeps those to six cheap looks (a run of
//! one look per millisecond for 20 ms made ten devices' tails worse). The
//! regular look every [`IDLE_POLL`] stays as a backstop (a file system
//! without watches, a watch that failed): it is then what the latency falls
//! back to.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::proto::store::{SqlStore, StoreError};

/// How often commits are looked for without a watch's word.
pub const IDLE_POLL: Duration = Duration::from_millis(5);
/// The first wait of a run of looks after a write; each next one doubles.
const FIRST_STEP: Duration = Duration::from_millis(1);
/// A run of looks ends before a wait would exceed this (the last look is
/// 31 ms after the write: an app's fsync can take that long).
const LAST_STEP: Duration = Duration::from_millis(16);

/// The watch on the library's folder and the burst it started.
pub struct Commits {
    /// Kept alive for the watch to go on; `None` where no watch could be set.
    watcher: Option<RecommendedWatcher>,
    /// The watched folder.
    folder: std::path::PathBuf,
    stirred: Arc<Notify>,
    idle: Interval,
    /// The next look of the current run, and the wait before it.
    run: Option<(Instant, Duration)>,
}

impl Commits {
    /// Watches the folder of `database` for writes to its WAL file. A watch
    /// that cannot be set is logged and leaves the regular poll alone.
    pub fn watch(database: &Path) -> Self {
        let stirred = Arc::new(Notify::new());
        // SQLite writes the WAL next to the file a symbolic link names.
        let database = std::fs::canonicalize(database).unwrap_or_else(|_| database.to_path_buf());
        let database = database.as_path();
        let folder = folder_of(database);
        let watcher = match watcher(database, &folder, stirred.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    database = %database.display(),
                    error = %e,
                    "cannot watch the library folder; commits are noticed by polling every {} ms",
                    IDLE_POLL.as_millis()
                );
                None
            }
        };
        let mut idle = tokio::time::interval(IDLE_POLL);
        // After a long apply, look once; do not replay the missed ticks.
        idle.set_missed_tick_behavior(MissedTickBehavior::Skip);
        Self {
            watcher,
            folder,
            stirred,
            idle,
            run: None,
        }
    }

    /// Waits until it is time to look for commits again.
    pub async fn next(&mut self) {
        let due = self.run.map(|(at, _)| at);
        tokio::select! {
            () = self.stirred.notified() => {
                self.run = Some((Instant::now() + FIRST_STEP, FIRST_STEP));
            }
            () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                self.run = self.run.and_then(|(at, step)| {
                    let step = step * 2;
                    (step <= LAST_STEP).then_some((at + step, step))
                });
            }
            _ = self.idle.tick() => {}
        }
    }

    /// Runs `work` (the daemon applying pages) without the watch. The
    /// syncer's own writes are most of the WAL's: a commit writes each page
    /// frame with two `pwrite`s, and the kernel queued an event for each and
    /// woke the watch's thread, 11 % of a receiver's CPU while it applied a
    /// backfill in short transactions. Nothing is missed: `work` runs on the
    /// daemon's one task, which could not have looked for commits meanwhile
    /// anyway, and the caller looks once right after.
    pub fn muted<T>(&mut self, work: impl FnOnce() -> T) -> T {
        let Some(watcher) = self.watcher.as_mut() else {
            return work();
        };
        let off = watcher.unwatch(&self.folder);
        if let Err(e) = &off {
            tracing::debug!(folder = %self.folder.display(), error = %e, "the watch stays on");
        }
        let out = work();
        if off.is_ok()
            && let Err(e) = watcher.watch(&self.folder, RecursiveMode::NonRecursive)
        {
            tracing::warn!(
                folder = %self.folder.display(),
                error = %e,
                "cannot watch the library folder again; commits are noticed by polling every {} ms",
                IDLE_POLL.as_millis()
            );
            self.watcher = None;
        }
        out
    }
}

/// The folder SQLite writes `database`'s WAL file in.
fn folder_of(database: &Path) -> std::path::PathBuf {
    match database.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

/// A watcher that wakes `stirred` whenever the WAL file of `database` (in
/// `folder`) changes.
fn watcher(
    database: &Path,
    folder: &Path,
    stirred: Arc<Notify>,
) -> notify::Result<RecommendedWatcher> {
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    let wal_name = Path::new(&wal).file_name().map(|n| n.to_owned());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event
            .paths
            .iter()
            .any(|p| p.file_name().is_some() && p.file_name() == wal_name.as_deref())
        {
            stirred.notify_one();
        }
    })?;
    watcher.watch(folder, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Changes whenever another connection commits to the library. Polled every
/// few milliseconds, so the statement is prepared once and cached.
pub(super) fn data_version(store: &SqlStore) -> Result<i64, StoreError> {
    let conn = &store.lib.conn;
    store.sql(
        conn.prepare_cached("PRAGMA data_version")
            .and_then(|mut stmt| stmt.query_row([], |r| r.get(0))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write to the WAL file ends the wait long before the idle poll would
    /// (which is pushed far out here so only the watch can end it).
    #[tokio::test(flavor = "current_thread")]
    async fn a_write_to_the_wal_file_wakes_the_watch() {
        let dir = std::env::temp_dir().join(format!("sdsync-commits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = dir.join("database.db");
        let mut commits = Commits::watch(&db);
        commits.idle =
            tokio::time::interval_at(Instant::now() + Duration::from_secs(3600), IDLE_POLL);
        let write = {
            let wal = dir.join("database.db-wal");
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                std::fs::write(wal, b"frame").expect("write the WAL");
            })
        };
        tokio::time::timeout(Duration::from_secs(10), commits.next())
            .await
            .expect("woken by the write");
        assert!(commits.run.is_some(), "a run of looks started");
        write.join().expect("writer");
        // Drain: the write's other events (create, modify) and their runs.
        while tokio::time::timeout(Duration::from_millis(100), commits.next())
            .await
            .is_ok()
        {}
        // Writes to other files of the folder are not commits.
        std::fs::write(dir.join("sync.db"), b"x").expect("write");
        let woken = tokio::time::timeout(Duration::from_millis(200), commits.next()).await;
        assert!(woken.is_err(), "woken by a write to another file");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Writes while the daemon works muted wake nothing; the watch is back
    /// afterwards.
    #[tokio::test(flavor = "current_thread")]
    async fn writes_while_muted_wake_nothing_and_the_watch_comes_back() {
        let dir = std::env::temp_dir().join(format!("sdsync-muted-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = dir.join("database.db");
        let wal = dir.join("database.db-wal");
        std::fs::write(&wal, b"").expect("create the WAL");
        let mut commits = Commits::watch(&db);
        commits.idle =
            tokio::time::interval_at(Instant::now() + Duration::from_secs(3600), IDLE_POLL);
        commits.muted(|| {
            for _ in 0..100 {
                std::fs::write(&wal, b"frame").expect("write the WAL");
            }
        });
        let woken = tokio::time::timeout(Duration::from_millis(200), commits.next()).await;
        assert!(woken.is_err(), "woken by a write made while muted");
        std::fs::write(&wal, b"frame").expect("write the WAL");
        tokio::time::timeout(Duration::from_secs(10), commits.next())
            .await
            .expect("woken by a write after the work");
        std::fs::remove_dir_all(&dir).ok();
    }
}
