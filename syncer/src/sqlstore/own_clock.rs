//! The syncer's record of its own database's clock, which tells a restored
//! database apart: in `sync.db`, and again outside the library folder, so a
//! whole folder restored from a copy (`sync.db` with it) on the same machine
//! is told apart too.
//!
//! ```text
//! $XDG_STATE_HOME/sdsync/<device>-<folder>.clock   (default ~/.local/state/sdsync/)
//! 1042 117657151590629377                 (local sequence, HLC)
//! ```
//!
//! A database whose own sequence is below the record, or that holds a change
//! of its own numbered at or below it with a later HLC, went back in time: it
//! was restored, and what it wrote since reused numbers peers may hold
//! (`SqlStore::went_back`). The record outside the folder is an extra
//! safety net, written at most once a second (peers still catch what it
//! misses: see `lineage`): it can only be behind, and a record behind the
//! database tells less, never something false. `SDSYNC_STATE_DIR` moves it.
//! Only `sdsync run` keeps it ([`SqlStore::with_clock_outside`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::params;

use sdsync_core::hlc::step;

use super::{SqlStore, syncdb};
use crate::proto::store::StoreError;

/// How often the record outside the folder is rewritten while commits flow.
const OUTSIDE_EVERY: Duration = Duration::from_secs(1);

impl SqlStore {
    /// Whether the database went back in time since the syncer last saw it (a
    /// restore of `database.db`, or of the whole folder where the record
    /// outside it is kept): its local sequence is below what the
    /// syncer saw, or a change of its own at or below that sequence is newer
    /// than the clock then (sequence and HLC of one device's own changes rise
    /// together, so only writes made after a restore look like that). Returns
    /// the sequence peers may hold.
    pub(super) fn went_back(&self, seen: Option<(i64, i64)>) -> Result<Option<i64>, StoreError> {
        let Some((seq, hlc)) = seen else {
            return Ok(None);
        };
        self.fold()?;
        let conn = &self.lib.conn;
        let behind: bool = self.sql(conn.query_row(
            "SELECT (SELECT seq FROM sdsync_clock) < ?1 \
              OR EXISTS (SELECT 1 FROM sdsync_versions v, sdsync_meta m WHERE m.key = 'origin' \
                         AND v.origin = m.value AND v.seq <= ?1 AND v.hlc > ?2) \
              OR EXISTS (SELECT 1 FROM sdsync_tombstones t, sdsync_meta m WHERE m.key = 'origin' \
                         AND t.origin = m.value AND t.seq <= ?1 AND t.hlc > ?2)",
            params![seq, hlc],
            |r| r.get(0),
        ))?;
        Ok(behind.then_some(seq))
    }

    /// A restored database's clock went back with it: it must not issue the
    /// HLCs of the changes it lost again (peers hold them, and `(origin, HLC)`
    /// names one change), so it moves to at least the clock the syncer last
    /// recorded. What apps wrote between the restore and this start may have
    /// reused some, when the lost changes were ahead of the wall clock.
    pub(super) fn clock_not_below_seen(&self, seen: Option<(i64, i64)>) -> Result<(), StoreError> {
        let Some((_, seen)) = seen else {
            return Ok(());
        };
        let conn = &self.lib.conn;
        let now: i64 =
            self.sql(conn.query_row("SELECT hlc FROM sdsync_clock", [], |r| r.get(0)))?;
        // Only then a write (and the write lock an app may hold).
        if now < seen {
            self.sql(conn.execute("UPDATE sdsync_clock SET hlc = ?1 WHERE hlc < ?1", [seen]))?;
        }
        Ok(())
    }

    /// The store with its clock stepped as a syncer starting steps it (see
    /// [`SqlStore::step_clock`]): `sdsync run`, and a store opened again as
    /// a restarted syncer would.
    pub fn with_clock_stepped(self) -> Result<Self, StoreError> {
        self.step_clock()?;
        Ok(self)
    }

    /// Steps the clock ahead by a pseudo-random amount (under 16 ms of HLC)
    /// when it runs at or ahead of the wall clock: once each time the syncer
    /// starts ([`SqlStore::with_clock_stepped`]; the simulation's restarts,
    /// which keep their store, call this; not the tools such as `sdsync
    /// status`, which open a store too).
    ///
    /// Why: while peers' faster clocks keep this device's clock ahead of its
    /// wall clock, each change it issues gets the clock + 1. A whole folder
    /// restored from a copy (on another machine, or with the record outside
    /// the folder gone) would then issue, under the very numbers and from the
    /// very clock its lost history started from, the very same `(seq, HLC)`
    /// pairs, and no comparison of numbers and clocks can tell two such
    /// histories apart: the peers would take the new changes for ones they
    /// hold, silently. The step depends on the wall clock, which a restore
    /// cannot take back, so the restored device's pairs differ from the lost
    /// ones and the checks in `lineage` tell them. It is deterministic (a
    /// mixer), so a simulated seed replays the same. Cost: one write when the
    /// syncer starts on a clock ahead of the wall clock; no step otherwise (the
    /// next change then takes the wall clock, later than the copy's).
    pub fn step_clock(&self) -> Result<(), StoreError> {
        self.fold()?;
        let conn = &self.lib.conn;
        let (seq, hlc, wall): (i64, i64, i64) = self.sql(conn.query_row(
            "SELECT seq, hlc, sdsync_wall() FROM sdsync_clock",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        ))?;
        if hlc < wall {
            return Ok(());
        }
        let stepped = hlc.saturating_add(step(seq, hlc, wall, START_STEP));
        self.sql(conn.execute("UPDATE sdsync_clock SET hlc = ?1 WHERE hlc < ?1", [stepped]))?;
        Ok(())
    }

    /// Records the local sequence and clock when the sequence moved (the daemon
    /// calls it after every commit it notices and when it stops, so a restore
    /// made while the syncer is stopped is told apart). Not while a restore
    /// is being dealt with: the record is its evidence, and a restart before
    /// the renumbering must find it again. The record outside the folder is
    /// written at most once a second (and when the syncer stops: see
    /// [`SqlStore::note_final_clock`]).
    pub fn note_clock(&self) -> Result<(), StoreError> {
        self.note_clock_with(false)
    }

    /// [`SqlStore::note_clock`] when the syncer stops: the record outside
    /// the folder too, whenever it was last written.
    pub fn note_final_clock(&self) -> Result<(), StoreError> {
        self.note_clock_with(true)
    }

    fn note_clock_with(&self, outside_now: bool) -> Result<(), StoreError> {
        // Inside gathered pages the clock may hold what a rollback undoes;
        // the record must only ever be behind the database (see `gather`).
        if self.restored.get().is_some() || self.gathering() {
            return Ok(());
        }
        self.fold()?;
        let (seq, hlc): (i64, i64) = self.sql(
            self.lib
                .conn
                .prepare_cached("SELECT seq, hlc FROM sdsync_clock")
                .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?)))),
        )?;
        if self.seen_seq.get() != Some(seq) {
            syncdb::set_own_clock(&self.sync, &self.me, seq, hlc)?;
            self.seen_seq.set(Some(seq));
        }
        let Some(path) = &self.outside else {
            return Ok(());
        };
        let due = self
            .kept_outside
            .get()
            .is_none_or(|(at, kept)| kept != seq && (outside_now || at.elapsed() >= OUTSIDE_EVERY));
        if due {
            write_outside(path, seq, hlc);
            self.kept_outside.set(Some((Instant::now(), seq)));
        }
        Ok(())
    }

    /// Keeps the record outside the folder too, in `dir` (the syncer's state
    /// directory: see [`state_dir`]), and looks again whether the database
    /// went back, now with that record. Only `sdsync run` does: tests and
    /// tools that open a store leave the user's state directory alone.
    ///
    /// Only that record is looked at here: the one in `sync.db` was looked at
    /// when the store opened, and then rewritten from the database as it is
    /// (a whole folder restored brings back an old `sync.db` record that the
    /// database agrees with).
    pub fn with_clock_outside(mut self, dir: Option<PathBuf>) -> Result<Self, StoreError> {
        self.outside = dir.map(|d| d.join(record_name(&self.me, &self.lib.path)));
        let seen = self.outside.as_deref().and_then(read_outside);
        if self.restored.get().is_none() {
            self.restored.set(self.went_back(seen)?);
            self.clock_not_below_seen(seen)?;
        }
        Ok(self)
    }
}

/// The largest step of the clock when the syncer starts (see
/// [`SqlStore::with_clock_stepped`]): 2^20 HLC units, 16 ms.
const START_STEP: u64 = 1 << 20;

/// The syncer's state directory: `SDSYNC_STATE_DIR`, else
/// `$XDG_STATE_HOME/sdsync`, else `~/.local/state/sdsync` (none without a
/// home).
pub fn state_dir() -> Option<PathBuf> {
    let env = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("SDSYNC_STATE_DIR")
        .or_else(|| env("XDG_STATE_HOME").map(|d| d.join("sdsync")))
        .or_else(|| env("HOME").map(|h| h.join(".local/state/sdsync")))
}

/// The record's file name: the device and its database file's folder (two
/// copies of a folder on one machine keep two records, and a folder
/// restored in place finds its own).
fn record_name(device: &str, database: &Path) -> String {
    use sha2::{Digest, Sha256};
    let folder = database.parent().unwrap_or(database);
    let folder = std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf());
    let digest = Sha256::digest(folder.as_os_str().as_encoded_bytes());
    let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{device}-{short}.clock")
}

/// The record at `path`, if there is a readable one.
fn read_outside(path: &Path) -> Option<(i64, i64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace().map(str::parse::<i64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(seq)), Some(Ok(hlc))) => Some((seq, hlc)),
        _ => {
            tracing::warn!(path = %path.display(), "ignoring an unreadable clock record");
            None
        }
    }
}

/// Replaces the record at `path` (a new file renamed over the old one, so a
/// crash leaves the old or the new record, never half of one). A failure
/// costs only this safety net: logged, not fatal.
fn write_outside(path: &Path, seq: i64, hlc: i64) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("clock.tmp");
        std::fs::write(&tmp, format!("{seq} {hlc}\n"))?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::debug!(path = %path.display(), error = %e, "keeping the clock record outside the folder");
    }
}
