//! What the protocol needs from storage, and its implementation over the
//! extension's SQL contract.
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
//! that applies the rows), and what must be kept aside (dead letters) goes to the
//! syncer's `sync.db`.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::library::{Change, Library, LibraryError, apply_in, read_changes};
use crate::proto::message::change_size;

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The library database refused (apply errors carry the extension's message).
    #[error(transparent)]
    Library(#[from] LibraryError),
    /// The syncer's own database failed.
    #[error("sync.db: {0}")]
    Sync(#[from] rusqlite::Error),
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

/// Storage as the protocol sees it.
pub trait Store {
    /// This device's id.
    fn device(&self) -> Result<String, StoreError>;
    /// `(origin, seq)`: what this device holds completely.
    fn watermarks(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// The device's current HLC (last issued or received).
    fn hlc(&self) -> Result<i64, StoreError>;
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
    /// Applies changes and, in the same transaction, records completeness.
    fn apply(&self, changes: &[Change], complete: Option<(&str, i64)>) -> Result<(), StoreError>;
    /// Applies parked changes whose wait is over (rows the app re-created).
    fn sweep(&self) -> Result<(), StoreError>;
    /// Keeps a message that could not be delivered or applied, with the reason.
    fn dead_letter(&self, peer: &str, what: &str, reason: &str) -> Result<(), StoreError>;
}

/// The table of `sync.db` that keeps what could not be delivered or applied.
pub const DEAD_LETTERS: &str = "CREATE TABLE IF NOT EXISTS dead_letters(
  id INTEGER PRIMARY KEY, peer TEXT NOT NULL, what TEXT NOT NULL, reason TEXT NOT NULL,
  at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')));";

/// [`Store`] over a library database and the syncer's `sync.db`.
pub struct SqlStore {
    /// The library.
    pub lib: Library,
    /// The syncer's own state.
    pub sync: Connection,
}

impl SqlStore {
    /// Wraps a library and a sync.db connection (creating its tables).
    pub fn new(lib: Library, sync: Connection) -> Result<Self, StoreError> {
        sync.execute_batch(DEAD_LETTERS)?;
        Ok(Self { lib, sync })
    }

    /// Maps a library statement's error to the store's, naming the file.
    pub(crate) fn sql<T>(&self, r: rusqlite::Result<T>) -> Result<T, StoreError> {
        r.map_err(|source| {
            StoreError::Library(LibraryError::Sql {
                path: self.lib.path.clone(),
                source,
            })
        })
    }
}

impl Store for SqlStore {
    fn device(&self) -> Result<String, StoreError> {
        Ok(self.lib.device()?)
    }

    fn watermarks(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(self.lib.watermarks()?)
    }

    fn hlc(&self) -> Result<i64, StoreError> {
        self.sql(
            self.lib
                .conn
                .query_row("SELECT hlc FROM sdsync_clock", [], |r| r.get(0)),
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
        let tx = self.sql(self.lib.conn.unchecked_transaction())?;
        let held: i64 = self
            .sql(
                tx.query_row(
                    "SELECT seq FROM sdsync_watermarks WHERE origin = ?1",
                    [origin],
                    |r| r.get(0),
                )
                .optional(),
            )?
            .unwrap_or(0);
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
        self.sql(tx.commit())?;
        Ok(Slice {
            changes,
            more,
            held,
        })
    }

    fn count_above(&self, origin: &str, after: i64) -> Result<i64, StoreError> {
        self.sql(self.lib.conn.query_row(
            "SELECT count(*) FROM sdsync_changes WHERE origin = ?1 AND seq > ?2",
            params![origin, after],
            |r| r.get(0),
        ))
    }

    fn apply(&self, changes: &[Change], complete: Option<(&str, i64)>) -> Result<(), StoreError> {
        // IMMEDIATE: take the write lock first, so an app's commit cannot
        // invalidate the snapshot between apply's first read and first write.
        let tx = self.sql(Transaction::new_unchecked(
            &self.lib.conn,
            TransactionBehavior::Immediate,
        ))?;
        self.sql(apply_in(&tx, changes))?;
        if let Some((origin, seq)) = complete {
            self.sql(tx.query_row(
                "SELECT sdsync_mark_complete(?1, ?2)",
                params![origin, seq],
                |_| Ok(()),
            ))?;
        }
        self.sql(tx.commit())
    }

    fn sweep(&self) -> Result<(), StoreError> {
        self.sql(
            self.lib
                .conn
                .execute("INSERT INTO sdsync_changes(op) VALUES ('sweep')", [])
                .map(|_| ()),
        )
    }

    fn dead_letter(&self, peer: &str, what: &str, reason: &str) -> Result<(), StoreError> {
        self.sync.execute(
            "INSERT INTO dead_letters(peer, what, reason) VALUES (?1, ?2, ?3)",
            params![peer, what, reason],
        )?;
        Ok(())
    }
}
