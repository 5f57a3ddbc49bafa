//! What the protocol needs from storage.
//!
//! ```no_run
//! use sdsync_syncer::library::{Library, extension_path};
//! use sdsync_syncer::proto::store::{SqlStore, Store};
//! let ext = extension_path(None).unwrap();
//! let store = SqlStore::new(Library::create("db".as_ref(), &ext).unwrap(), rusqlite::Connection::open_in_memory().unwrap()).unwrap();
//! let marks = store.watermarks().unwrap();
//! ```
//!
//! The protocol state machine holds no data of its own that must survive a crash:
//! what a device holds is in `database.db` (watermarks advance in the transaction
//! that applies a page's last rows, quarantined changes are kept in the
//! transaction that applies the rest of their part of the page),
//! and what must be kept aside (dead letters, what peers report) goes to the
//! syncer's `sync.db`. The implementation over SQLite lives in
//! [`crate::sqlstore`]; it is re-exported here for the paths callers already use.

use crate::library::{Change, LibraryError};
use crate::proto::message::QuarantineSummary;
use crate::proto::schema::TableLayout;

pub use crate::sqlstore::SqlStore;

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The library database refused (apply errors carry the extension's message).
    #[error(transparent)]
    Library(#[from] LibraryError),
    /// The syncer's own database failed.
    #[error("sync.db: {0}")]
    Sync(#[from] rusqlite::Error),
    /// The database is busy or locked by another connection (an app writing):
    /// try again later; never a reason to set a change aside.
    #[error("{path}: busy ({source}); will retry")]
    Busy {
        /// The database file.
        path: std::path::PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// SQLite rolled back the transaction that pages were gathered in (an I/O
    /// error, a full disk; see `sqlstore::gather`): none of them was kept, and
    /// they are pulled again.
    #[error(
        "{path}: the transaction of the pages applied together was rolled back ({source}); they will be pulled again"
    )]
    RolledBack {
        /// The database file.
        path: std::path::PathBuf,
        /// SQLite's error (`SQLITE_ABORT_ROLLBACK` when found rolled back).
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// Whether the same operation may succeed later unchanged (lock contention,
    /// a full disk, I/O): such errors are retried, never quarantined.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Busy { .. } | Self::RolledBack { .. } => true,
            Self::Library(LibraryError::Sql { source, .. }) | Self::Sync(source) => {
                crate::sqlstore::transient(source)
            }
            Self::Library(_) => false,
        }
    }
}

/// A bounded slice of an origin's changes.
#[derive(Clone, Debug, PartialEq)]
pub struct Slice {
    /// The changes, in sequence order.
    pub changes: Vec<Change>,
    /// Whether more changes above the last one exist.
    pub more: bool,
    /// Up to which sequence this device held `origin` completely when the
    /// slice was read (same snapshot: a commit between two separate reads would
    /// let a page claim a change it does not carry).
    pub held: i64,
}

/// A change of a page that could not be applied and was quarantined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    /// Origin sequence of the change.
    pub seq: i64,
    /// Table.
    pub table: String,
    /// Why it did not apply.
    pub reason: String,
}

/// What a retry of quarantined changes did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retried {
    /// Changes that applied (or were superseded) and left the quarantine.
    pub applied: usize,
    /// Changes still quarantined.
    pub kept: usize,
}

/// Storage as the protocol sees it.
pub trait Store {
    /// This device's id.
    fn device(&self) -> Result<String, StoreError>;
    /// `(origin, seq)`: what this device holds completely and can vouch for (a
    /// watermark the syncer did not verify is not believed, see `sqlstore`).
    fn watermarks(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// The device's current HLC (last issued or received).
    fn hlc(&self) -> Result<i64, StoreError>;
    /// The device's own clock, `(seq, hlc)`: its last sequence and HLC.
    fn clock(&self) -> Result<(i64, i64), StoreError>;
    /// Changes of `origin` above `after`, at most `rows` and about `bytes`, and
    /// the watermark of `origin`, both read from one snapshot.
    fn slice(
        &self,
        origin: &str,
        after: i64,
        rows: usize,
        bytes: usize,
    ) -> Result<Slice, StoreError>;
    /// How many changes of `origin` lie above `after`.
    fn count_above(&self, origin: &str, after: i64) -> Result<i64, StoreError>;
    /// Applies changes received from `peer` and, in the transaction that
    /// applies the last of them, records completeness. A change that cannot be
    /// applied is quarantined in its transaction instead of failing the page.
    /// Usually one transaction; while an app writes, several (`sqlstore::split`):
    /// then an error may follow parts already committed, which applied again
    /// change nothing, and completeness is recorded only with the last part.
    fn apply(
        &self,
        peer: &str,
        changes: &[Change],
        complete: Option<(&str, i64)>,
    ) -> Result<Vec<Quarantined>, StoreError>;
    /// Applies parked changes whose wait is over (rows the app re-created).
    fn sweep(&self) -> Result<(), StoreError>;
    /// Retries quarantined changes if the schema or data changed since the last
    /// try (cheap when nothing did).
    fn retry_quarantined(&self) -> Result<Retried, StoreError>;
    /// What this device holds in quarantine, per origin.
    fn quarantine_summary(&self) -> Result<Vec<QuarantineSummary>, StoreError>;
    /// Records what `peer` reports holding in quarantine (replacing its last report).
    fn peer_quarantine(&self, peer: &str, summary: &[QuarantineSummary]) -> Result<(), StoreError>;
    /// Whether this database was found restored from an older copy when the
    /// store opened: the sequence its peers may hold (until [`Store::restamp`]).
    fn restored(&self) -> Result<Option<i64>, StoreError>;
    /// The newest changes of `origin` this device holds, as `(seq, hlc)`,
    /// newest first, at most `n`, then the last ones it took from `origin`
    /// itself (held still or not): a Hello carries them to `origin`, which
    /// checks they are its own (see [`Store::reuses`]).
    fn newest_of(&self, origin: &str, n: usize) -> Result<Vec<(i64, i64)>, StoreError>;
    /// A page of `origin` with `changes` arrived from `peer` and is about to
    /// apply: keeps what [`Store::newest_of`] and [`Store::relayed`] send
    /// back to the origin (`sqlstore::points`).
    fn note_points(&self, peer: &str, origin: &str, changes: &[Change]) -> Result<(), StoreError>;
    /// The lowest number of `origin`'s changes this device took from other
    /// devices since `origin` last pulled its own changes from here (kept
    /// only for an origin that ever did: a restored one).
    fn relayed(&self, origin: &str) -> Result<Option<i64>, StoreError>;
    /// `origin` pulls its own changes back from here: forgets that number.
    fn reclaiming_here(&self, origin: &str) -> Result<(), StoreError>;
    /// A restore renumbered every change of this device's own above `base`.
    fn note_renumbered(&self, base: i64) -> Result<(), StoreError>;
    /// The highest base kept by [`Store::note_renumbered`].
    fn renumbered(&self) -> Result<Option<i64>, StoreError>;
    /// This device verified its claims again after `device`'s restore
    /// that renumbered above `base`.
    fn note_restore(&self, device: &str, base: i64) -> Result<(), StoreError>;
    /// The restores of other devices kept by [`Store::note_restore`],
    /// `(device, base)`.
    fn restores(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Forgets them (this device's own restore took its claims back).
    fn forget_restores(&self) -> Result<(), StoreError>;
    /// Whether this device's own history contradicts a peer holding its
    /// change `(seq, hlc)`: it holds another change under that number, or
    /// (where its numbers and HLCs rise together) a change numbered below it
    /// with a later HLC, or above it with an earlier one.
    fn reuses(&self, seq: i64, hlc: i64) -> Result<bool, StoreError>;
    /// Whether this device issued a change numbered at or below `seq` with
    /// an HLC above `hlc`, where it once announced its clock at `(seq, hlc)`
    /// (see `Payload::Hello::your_clock`): one history cannot have done so.
    fn outran(&self, seq: i64, hlc: i64) -> Result<bool, StoreError>;
    /// The clock `(seq, hlc)` `peer` announced in its Hello with the highest
    /// HLC, `(0, 0)` before any: sent back to it (`your_clock`). Kept in
    /// `sync.db`, so a restart of this device does not forget it.
    fn announced(&self, peer: &str) -> Result<(i64, i64), StoreError>;
    /// Records what `peer` announced, if its HLC is the highest yet.
    fn note_announced(&self, peer: &str, seq: i64, hlc: i64) -> Result<(), StoreError>;
    /// Renumbers this device's own current changes above `floor` (peers hold
    /// its origin up to there: the database was restored from an older copy)
    /// and moves its clock to at least `hlc`; returns how many.
    fn restamp(&self, floor: i64, hlc: i64) -> Result<i64, StoreError>;
    /// Records, durably, that this device is to take its own changes back from
    /// each of `peers` (replacing the list).
    fn reclaim_all(&self, peers: &[String]) -> Result<(), StoreError>;
    /// The peers this device still takes its own changes back from.
    fn reclaim_from(&self) -> Result<Vec<String>, StoreError>;
    /// `peer`'s clock `(seq, hlc)` as a page it relayed carried it: kept
    /// like the clock its Hello announces ([`Store::note_announced`]).
    fn note_page_clock(&self, peer: &str, seq: i64, hlc: i64) -> Result<(), StoreError> {
        self.note_announced(peer, seq, hlc)
    }
    /// Whether `peer` is still on that list.
    fn reclaims_from(&self, peer: &str) -> Result<bool, StoreError> {
        Ok(self.reclaim_from()?.iter().any(|p| p == peer))
    }
    /// It took them back from `peer` (a whole pull of its own origin).
    fn reclaimed(&self, peer: &str) -> Result<(), StoreError>;
    /// The tables this device syncs.
    fn schema(&self) -> Result<Vec<TableLayout>, StoreError>;
    /// Records how `peer`'s tables differ from ours (replacing its last report).
    fn peer_schema(&self, peer: &str, mismatches: &[String]) -> Result<(), StoreError>;
    /// Stops vouching for any origin but `restored`'s (and this device's): a
    /// peer that served this device pages was restored from an older copy,
    /// and what it left out of them as superseded may have been superseded by
    /// changes it has now lost. Pulls start over from nothing; changes held
    /// already apply as no-ops. The restored peer's own origin keeps its
    /// watermark: it takes those changes back from here, quarantined ones
    /// included, which a page serves only up to the watermark.
    fn reverify(&self, restored: &str) -> Result<(), StoreError>;
    /// The highest sequence `origin` itself reported having issued (0: unknown).
    fn reported(&self, origin: &str) -> Result<i64, StoreError>;
    /// `origin` itself says it issued up to `seq`: remember it, and stop vouching
    /// for more of it than that. Returns the vouched watermark it cut, if any.
    fn report(&self, origin: &str, seq: i64) -> Result<Option<i64>, StoreError>;
    /// Keeps a message that could not be delivered or applied, with the reason:
    /// one record per `(peer, cause)`, counted, so repeats do not grow it.
    fn dead_letter(
        &self,
        peer: &str,
        cause: &str,
        what: &str,
        reason: &str,
    ) -> Result<(), StoreError>;
}
