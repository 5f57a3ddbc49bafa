//! The [`Store`] of the protocol over a library database and the syncer's
//! `sync.db`.
//!
//! ```no_run
//! use sdsync_syncer::library::{Library, extension_path};
//! use sdsync_syncer::sqlstore::SqlStore;
//! use sdsync_syncer::proto::store::Store;
//! let ext = extension_path(None).unwrap();
//! let lib = Library::create("db".as_ref(), &ext).unwrap();
//! let store = SqlStore::new(lib, rusqlite::Connection::open_in_memory().unwrap()).unwrap();
//! println!("{:?}", store.watermarks().unwrap());
//! ```
//!
//! Three rules make a peer's mistakes local and visible instead of silent:
//! - **Quarantine** ([`quarantine`]): a page is applied in one transaction (in
//!   parts while an app writes, [`split`]); if a change in it (in a part) fails
//!   for a reason of its own (a type the schema refuses, an app UNIQUE index, a
//!   table this device lacks), it is applied again change by change, each under
//!   a SAVEPOINT, and the failures are kept in `sdsync_quarantine` in that same
//!   transaction; the page's last transaction advances the watermark. The
//!   stream of that origin goes on.
//! - **Transient errors** (busy, locked, disk full) fail the page (its part,
//!   and the parts after it) without a trace; the protocol retries it later
//!   ([`StoreError::Busy`]), and parts already committed apply again as no-ops.
//! - **Verified watermarks** ([`marks`]): `sdsync_watermarks` says what the
//!   database claims to hold, and anyone with the database open can raise it
//!   (`sdsync_mark_complete`). The syncer vouches only for what it verified itself,
//!   in `sdsync_verified`, written in the apply transaction: the effective
//!   watermark of another origin is the smaller of the two.

mod ahead;
mod gather;
mod layout;
mod lineage;
pub mod marks;
pub mod notices;
mod own_clock;
pub mod points;
pub mod split;
mod sweep;

pub use own_clock::state_dir;
pub mod quarantine;
pub mod syncdb;
mod tune;

pub use layout::layouts;
use layout::specs;
pub use tune::{APPLY_BUSY_TIMEOUT, tune};

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::library::{Change, Library, LibraryError, apply_in, changes_above, read_changes};
use crate::proto::message::{Incarnation, QuarantineSummary, change_size};
use crate::proto::node::PeerState;
use crate::proto::schema::TableLayout;
use crate::proto::store::{Quarantined, Retried, Slice, Store, StoreError};
use crate::room::Room;

/// [`Store`] over a library database and the syncer's `sync.db`.
pub struct SqlStore {
    /// The library.
    pub lib: Library,
    /// The syncer's own state.
    pub sync: Connection,
    me: String,
    /// The database's state when quarantined changes were last retried.
    tried: Cell<Option<[i64; 3]>>,
    /// Rows our own sweeps changed (not a reason to retry the quarantine).
    swept: Cell<i64>,
    /// The database went back in time since the syncer last saw it (see
    /// `went_back`): the sequence peers may hold, until the node takes it.
    restored: Cell<Option<i64>>,
    /// The local sequence last recorded in `sync.db`.
    seen_seq: Cell<Option<i64>>,
    /// When the record outside the folder was last written, and at what
    /// sequence (see `own_clock`).
    kept_outside: Cell<Option<(std::time::Instant, i64)>>,
    /// The record's file outside the folder, when kept (`sdsync run`).
    outside: Option<std::path::PathBuf>,
    /// The schema version the last `sdsync_repair()` saw.
    repaired_at: Cell<Option<i64>>,
    /// A schema version not repaired yet that a sweep saw (see
    /// [`SqlStore::waited_for_repair`]).
    schema_seen: Cell<Option<i64>>,
    /// The references between tracked tables, for parents-first paging
    /// (reloaded when the schema version moves).
    links: RefCell<Option<Arc<ahead::Links>>>,
    /// Whether page applies share one transaction ([`gather`]).
    gathering: Cell<gather::Gathering>,
    /// Until when pages apply alone, after pages applied together failed.
    alone_until: Cell<Option<std::time::Instant>>,
    /// The app's writers' share of the write lock: the daemon's pauses
    /// between pages, and a page's parts while an app writes ([`split`]).
    pub room: RefCell<Room>,
    /// Parts of this many changes for every page ([`split`]).
    split: Cell<Option<usize>>,
    /// How long a change took in the last parts ([`split`]).
    pace: Cell<split::Pace>,
}

/// How many log entries one fold transaction takes at most (about a tenth
/// of a second of work; see [`SqlStore::fold`]).
const FOLD_PART: i64 = 20_000;

impl SqlStore {
    /// Wraps a library and a sync.db connection (creating the tables both need).
    pub fn new(lib: Library, sync: Connection) -> Result<Self, StoreError> {
        let me = lib.device()?;
        let err = |source| {
            StoreError::Library(LibraryError::Sql {
                path: lib.path.clone(),
                source,
            })
        };
        tune(&lib.conn).map_err(err)?;
        quarantine::ensure(&lib.conn).map_err(err)?;
        marks::ensure(&lib.conn, &me).map_err(err)?;
        // What follows reads this device's clock (see `SqlStore::fold`).
        crate::library::fold(&lib.conn).map_err(err)?;
        lineage::ensure(&lib.conn).map_err(err)?;
        syncdb::ensure(&sync)?;
        let store = Self {
            lib,
            sync,
            me,
            tried: Cell::new(None),
            swept: Cell::new(0),
            restored: Cell::new(None),
            seen_seq: Cell::new(None),
            kept_outside: Cell::new(None),
            outside: None,
            repaired_at: Cell::new(None),
            schema_seen: Cell::new(None),
            links: RefCell::new(None),
            gathering: Cell::new(gather::Gathering::Off),
            alone_until: Cell::new(None),
            room: RefCell::new(Room::default()),
            split: Cell::new(None),
            pace: Cell::new(None),
        };
        let seen = syncdb::own_clock(&store.sync, &store.me)?;
        store.restored.set(store.went_back(seen)?);
        store.clock_not_below_seen(seen)?;
        store.note_clock()?;
        Ok(store)
    }

    /// Which running copy of the library folder this is: kept in `sync.db` with
    /// the database file's inode, new when the file is another one (copied, or
    /// moved to another file system); unknown for a database without a file.
    /// The device number is not part of it: it can change across mounts
    /// (container layers) for the same file.
    pub fn incarnation(&self, now_ms: u64) -> Result<Incarnation, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(&self.lib.path) else {
            return Ok(Incarnation::default());
        };
        Ok(syncdb::incarnation(&self.sync, meta.ino(), now_ms)?)
    }

    /// Why this copy of the folder was told to stop, if it was (`sdsync run`
    /// refuses to start it until it is re-identified or told to take over).
    pub fn stopped(&self) -> Result<Option<String>, StoreError> {
        Ok(syncdb::stopped(&self.sync)?)
    }

    /// Keeps `detail` as the last notice of `kind` for `sdsync status`.
    pub fn note(&self, kind: &str, detail: &str) -> Result<(), StoreError> {
        Ok(notices::note(&self.sync, kind, detail)?)
    }

    /// Records that this copy was told to stop (`None`: clears it).
    pub fn set_stopped(&self, reason: Option<&str>) -> Result<(), StoreError> {
        Ok(syncdb::set_stopped(&self.sync, reason)?)
    }

    /// The same library and `sync.db`, opened again as a restarted syncer would
    /// (after the database file was replaced, say by a restore).
    pub fn reopened(self) -> Result<Self, StoreError> {
        let split = self.split.get();
        let store = Self::new(self.lib, self.sync)?.with_clock_stepped()?;
        store.split.set(split);
        Ok(store)
    }

    /// Records what the running syncer knows of its peers, for `sdsync
    /// status` (another process).
    pub fn record_peers(&self, peers: &[PeerState], now_ms: u64) -> Result<(), StoreError> {
        Ok(syncdb::record_peers(&self.sync, peers, now_ms)?)
    }

    /// Folds this device's update log into its versions (the extension's
    /// `fold.rs`): the store reads its own changes and clock only after one.
    /// In parts of [`FOLD_PART`] entries, each its own transaction outside
    /// gathered pages, so an app's writer never waits behind one long fold.
    pub(crate) fn fold(&self) -> Result<(), StoreError> {
        let mut stmt = self.sql(self.lib.conn.prepare_cached("SELECT sdsync_fold(?1)"))?;
        loop {
            let folded: i64 = self.sql(stmt.query_row([FOLD_PART], |r| r.get(0)))?;
            if folded < FOLD_PART {
                return Ok(());
            }
        }
    }

    /// A read transaction whose snapshot holds no log entry: folds, and
    /// begins again while an app committed more updates in between (a few
    /// tries; then `sdsync_changes` folds inside the snapshot, which fails
    /// transiently if yet another commit came first).
    fn folded_snapshot(&self) -> Result<rusqlite::Transaction<'_>, StoreError> {
        for _ in 0..4 {
            self.fold()?;
            let tx = self.sql(self.lib.conn.unchecked_transaction())?;
            // A library whose upgrade is still put off has no log.
            let empty: bool = self.sql(
                tx.query_row("SELECT NOT EXISTS (SELECT 1 FROM sdsync_log)", [], |r| {
                    r.get(0)
                })
                .or_else(|e| match e {
                    rusqlite::Error::SqliteFailure(_, Some(m)) if m.contains("no such table") => {
                        Ok(true)
                    }
                    e => Err(e),
                }),
            )?;
            if empty {
                return Ok(tx);
            }
        }
        self.sql(self.lib.conn.unchecked_transaction())
    }

    /// Maps a library statement's error to the store's, naming the file; busy
    /// and other transient errors become [`StoreError::Busy`].
    pub(crate) fn sql<T>(&self, r: rusqlite::Result<T>) -> Result<T, StoreError> {
        r.map_err(|source| {
            let path = self.lib.path.clone();
            if transient(&source) {
                StoreError::Busy { path, source }
            } else {
                StoreError::Library(LibraryError::Sql { path, source })
            }
        })
    }

    /// The references between tracked tables, as of `conn`'s snapshot.
    fn links(&self, conn: &Connection) -> rusqlite::Result<Arc<ahead::Links>> {
        let schema: i64 = conn
            .prepare_cached("PRAGMA schema_version")?
            .query_row([], |r| r.get(0))?;
        if let Some(links) = self.links.borrow().as_ref().filter(|l| l.schema == schema) {
            return Ok(links.clone());
        }
        let links = Arc::new(ahead::Links::load(conn, schema)?);
        *self.links.borrow_mut() = Some(links.clone());
        Ok(links)
    }

    /// Marks completeness and clears quarantined copies of what just applied.
    fn finish(
        &self,
        tx: &Connection,
        applied: &[&Change],
        complete: Option<(&str, i64)>,
    ) -> Result<(), StoreError> {
        self.sql(quarantine::release(tx, applied))?;
        if let Some((origin, seq)) = complete {
            self.sql(marks::vouch(tx, origin, seq))?;
        }
        Ok(())
    }

    /// Applies `changes` in one transaction, vouching for `complete`.
    fn apply_part(
        &self,
        peer: &str,
        changes: &[Change],
        complete: Option<(&str, i64)>,
    ) -> Result<Vec<Quarantined>, StoreError> {
        // First the whole page at once: the common case, and the fast one.
        let tx = self.begin()?;
        let whole = self.sql(apply_in(&tx, changes)).and_then(|()| {
            let all: Vec<&Change> = changes.iter().collect();
            self.finish(&tx, &all, complete)
        });
        match whole {
            Ok(()) => return self.sql(tx.commit()).map(|()| vec![]),
            Err(e) if tx.gathered() => return Err(self.abandon(tx, &e)),
            Err(e) if e.is_transient() => return Err(e),
            Err(_) => drop(tx),
        }
        // Some change refused: again change by change, keeping the refused aside.
        let tx = self.begin()?;
        let (applied, quarantined) = self.sql(quarantine::apply_each(&tx, peer, changes))?;
        self.finish(&tx, &applied, complete)?;
        self.sql(tx.commit())?;
        // This was a try: the next automatic one waits for something to change.
        self.tried.set(Some(self.fingerprint()?));
        Ok(quarantined)
    }
}

impl Store for SqlStore {
    fn device(&self) -> Result<String, StoreError> {
        Ok(self.me.clone())
    }

    fn watermarks(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.note_clock()?;
        self.sql(marks::effective(&self.lib.conn, &self.me))
    }

    fn restored(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.restored.get())
    }

    fn hlc(&self) -> Result<i64, StoreError> {
        self.fold()?;
        self.sql(
            self.lib
                .conn
                .prepare_cached("SELECT hlc FROM sdsync_clock")
                .and_then(|mut s| s.query_row([], |r| r.get(0))),
        )
    }

    fn clock(&self) -> Result<(i64, i64), StoreError> {
        self.fold()?;
        self.sql(
            self.lib
                .conn
                .prepare_cached("SELECT seq, hlc FROM sdsync_clock")
                .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?)))),
        )
    }

    fn slice(
        &self,
        origin: &str,
        after: i64,
        rows: usize,
        bytes: usize,
    ) -> Result<Slice, StoreError> {
        // One read transaction: the changes and the watermark from one snapshot.
        let tx = self.folded_snapshot()?;
        let held = self.sql(marks::effective_of(&tx, &self.me, origin))?;
        let mut changes = self.sql(read_changes(
            &tx,
            "SELECT tbl, pk, op, data, origin, seq, hlc, creates FROM sdsync_changes \
             WHERE origin = ?1 AND seq > ?2 LIMIT ?3",
            params![origin, after, rows as i64 + 1],
        ))?;
        let mut size = 0;
        let mut keep = 0;
        for c in &changes {
            size += change_size(c);
            if keep > 0 && size > bytes {
                break;
            }
            keep += 1;
        }
        let more = changes.len() > keep.min(rows);
        changes.truncate(keep.min(rows));
        // Quarantined changes are part of what the origin issued: a peer that
        // gets this origin from here gets them too (and applies or quarantines
        // them itself), as if it had pulled from the origin. Like applied
        // ones, also those above the watermark: a restored origin takes its
        // own changes back from a peer whose watermark of it is behind (seed
        // 153: the peer had stopped vouching after another peer's restore).
        let upper = if more {
            changes.last().map_or(held, |c| c.seq)
        } else {
            i64::MAX
        };
        let kept = self.sql(quarantine::held_between(&tx, origin, after, upper))?;
        if !kept.is_empty() {
            changes.extend(kept);
            changes.sort_by_key(|c| c.seq);
        }
        let first = self.sql(
            self.links(&tx)
                .and_then(|l| l.parents(&tx, origin, &changes, bytes)),
        )?;
        changes.splice(0..0, first);
        self.sql(tx.commit())?;
        Ok(Slice {
            changes,
            more,
            held,
        })
    }

    fn count_above(&self, origin: &str, after: i64) -> Result<i64, StoreError> {
        self.sql(changes_above(&self.lib.conn, origin, after))
    }

    fn apply(
        &self,
        peer: &str,
        changes: &[Change],
        complete: Option<(&str, i64)>,
    ) -> Result<Vec<Quarantined>, StoreError> {
        let mut rest = changes;
        let mut quarantined = Vec::new();
        loop {
            let (part, after) = rest.split_at(self.part_len(rest.len()));
            let last = after.is_empty();
            let started = std::time::Instant::now();
            quarantined.extend(self.apply_part(peer, part, complete.filter(|_| last))?);
            if last {
                return Ok(quarantined);
            }
            self.make_room(started, part.len());
            rest = after;
        }
    }

    fn sweep(&self) -> Result<(), StoreError> {
        self.sweep_here()
    }

    fn retry_quarantined(&self) -> Result<Retried, StoreError> {
        if self.sql(quarantine::is_empty(&self.lib.conn))? {
            return Ok(Retried::default());
        }
        let before = self.fingerprint()?;
        if self.tried.get() == Some(before) {
            return Ok(Retried::default());
        }
        // While an app writes, only what fits in the run of work, as a page's
        // part (`split`): the retry holds the write lock throughout.
        let batch = self.part_len(quarantine::RETRY_BATCH);
        let started = Instant::now();
        let tx = self.begin()?;
        let total = self.sql(quarantine::count(&tx))?;
        let retried = self.sql(quarantine::retry_in(&tx, None, batch))?;
        self.sql(tx.commit())?;
        self.make_room(started, batch.min(total));
        // A large quarantine is retried a batch per round until all were tried.
        if total <= batch {
            self.tried.set(Some(self.fingerprint()?));
        }
        Ok(retried)
    }

    fn quarantine_summary(&self) -> Result<Vec<QuarantineSummary>, StoreError> {
        self.sql(quarantine::summary(&self.lib.conn))
    }

    fn peer_quarantine(&self, peer: &str, summary: &[QuarantineSummary]) -> Result<(), StoreError> {
        Ok(syncdb::peer_quarantine(&self.sync, peer, summary)?)
    }

    fn newest_of(&self, origin: &str, n: usize) -> Result<Vec<(i64, i64)>, StoreError> {
        self.fold()?;
        let mut found = self.sql(lineage::newest_of(&self.lib.conn, origin, n))?;
        for point in points::taken(&self.sync, origin)? {
            if !found.contains(&point) {
                found.push(point);
            }
        }
        Ok(found)
    }

    fn note_points(&self, peer: &str, origin: &str, changes: &[Change]) -> Result<(), StoreError> {
        if peer == origin {
            if let Some(last) = changes.iter().max_by_key(|c| c.seq) {
                points::note_taken(&self.sync, origin, last.seq, last.hlc)?;
            }
        } else if let Some(lowest) = changes.iter().map(|c| c.seq).min() {
            points::note_relayed(&self.sync, origin, lowest)?;
        }
        Ok(())
    }

    fn relayed(&self, origin: &str) -> Result<Option<i64>, StoreError> {
        Ok(points::relayed(&self.sync, origin)?)
    }

    fn reclaiming_here(&self, origin: &str) -> Result<(), StoreError> {
        Ok(points::reclaiming_here(&self.sync, origin)?)
    }

    fn note_renumbered(&self, base: i64) -> Result<(), StoreError> {
        Ok(points::note_renumbered(&self.sync, base)?)
    }

    fn renumbered(&self) -> Result<Option<i64>, StoreError> {
        Ok(points::renumbered(&self.sync)?)
    }

    fn note_restore(&self, device: &str, base: i64) -> Result<(), StoreError> {
        Ok(points::note_restore(&self.sync, device, base)?)
    }

    fn restores(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(points::restores(&self.sync)?)
    }

    fn forget_restores(&self) -> Result<(), StoreError> {
        Ok(points::forget_restores(&self.sync)?)
    }

    fn reuses(&self, seq: i64, hlc: i64) -> Result<bool, StoreError> {
        self.fold()?;
        self.sql(lineage::reuses(&self.lib.conn, seq, hlc))
    }

    fn outran(&self, seq: i64, hlc: i64) -> Result<bool, StoreError> {
        self.fold()?;
        self.sql(lineage::outran(&self.lib.conn, seq, hlc))
    }

    fn announced(&self, peer: &str) -> Result<(i64, i64), StoreError> {
        Ok(syncdb::announced(&self.sync, peer)?)
    }

    fn note_announced(&self, peer: &str, seq: i64, hlc: i64) -> Result<(), StoreError> {
        Ok(syncdb::note_announced(&self.sync, peer, seq, hlc)?)
    }

    fn restamp(&self, floor: i64, hlc: i64) -> Result<i64, StoreError> {
        let conn = &self.lib.conn;
        let tx = self.sql(Transaction::new_unchecked(
            conn,
            TransactionBehavior::Immediate,
        ))?;
        let n =
            self.sql(tx.query_row("SELECT sdsync_restamp(?1, ?2)", [floor, hlc], |r| r.get(0)))?;
        self.sql(tx.commit())?;
        // Only now is the restore dealt with (a busy database keeps the flag).
        self.restored.set(None);
        self.note_clock()?;
        Ok(n)
    }

    fn reclaim_all(&self, peers: &[String]) -> Result<(), StoreError> {
        Ok(syncdb::set_reclaim(&self.sync, peers)?)
    }

    fn reclaim_from(&self) -> Result<Vec<String>, StoreError> {
        Ok(syncdb::reclaim_from(&self.sync)?)
    }

    fn reclaimed(&self, peer: &str) -> Result<(), StoreError> {
        Ok(syncdb::reclaimed(&self.sync, peer)?)
    }

    fn schema(&self) -> Result<Vec<TableLayout>, StoreError> {
        self.sql(layouts(&self.lib.conn))
    }

    fn peer_schema(&self, peer: &str, mismatches: &[String]) -> Result<(), StoreError> {
        Ok(syncdb::peer_schema(&self.sync, peer, mismatches)?)
    }

    fn reverify(&self, restored: &str) -> Result<(), StoreError> {
        self.sql(marks::forget(&self.lib.conn, restored))
    }

    fn reported(&self, origin: &str) -> Result<i64, StoreError> {
        Ok(syncdb::reported(&self.sync, origin)?)
    }

    fn report(&self, origin: &str, seq: i64) -> Result<Option<i64>, StoreError> {
        let known = syncdb::report(&self.sync, origin, seq)?;
        self.sql(marks::cut(&self.lib.conn, origin, known))
    }

    fn dead_letter(
        &self,
        peer: &str,
        cause: &str,
        what: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        Ok(syncdb::dead_letter(&self.sync, peer, cause, what, reason)?)
    }
}

/// Whether SQLite's error is about the environment rather than the data.
pub fn transient(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    match e {
        rusqlite::Error::SqliteFailure(f, msg) => {
            matches!(
                f.code,
                DatabaseBusy
                    | DatabaseLocked
                    | DiskFull
                    | SystemIoFailure
                    | OutOfMemory
                    | OperationInterrupted
                    | FileLockingProtocolFailed
                    | CannotOpen
            ) || msg.as_deref().is_some_and(|m| {
                // The extension reports a nested statement's failure as a plain
                // error with SQLite's message.
                m.contains("database is locked") || m.contains("database table is locked")
            })
        }
        _ => false,
    }
}

/// Reads one optional integer (helper for the submodules).
fn opt_i64(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> rusqlite::Result<Option<i64>> {
    // No row and a NULL (an aggregate over nothing) both mean none. Cached:
    // watermarks are read for every page sent and received.
    conn.prepare_cached(sql)?
        .query_row(p, |r| r.get::<_, Option<i64>>(0))
        .optional()
        .map(Option::flatten)
}
