//! Pages applied back to back share one library transaction.
//!
//! ```ignore
//! store.gather();                          // the daemon has pages waiting
//! node.receive_from(peer, page_1, …);      // applies; the transaction stays open
//! node.receive_from(peer, page_2, …);      // the same transaction
//! store.settle()?;                         // COMMIT; only now are the acks sent
//! ```
//!
//! Each commit writes every page of the database its transaction changed to
//! the WAL. During a backfill with random references (content ids), a commit
//! of one 2,000-change page rewrote about a thousand index leaves, most of
//! which the next page changed again: the WAL writes were a quarter of the
//! receiver's CPU, and with pages of 10,000 changes a million-entry backfill
//! took 16 s of it instead of 23 s. Larger pages would make every reader of
//! a page wait for more, so the daemon gathers instead: while pages already
//! wait behind the one it handles, and the room it leaves the app's writers
//! allows (`room`), their applies join the transaction the first one opened.
//! Nothing a gathered page leads to (its acknowledgement, the next pull, the
//! events) leaves the daemon before [`SqlStore::settle`] committed: a peer
//! never hears that this device holds what a crash could still undo.
//!
//! What the page path writes to `sync.db` (its own connection, committed at
//! once) must not claim what the gathered transaction may still lose: the
//! clock record is not written while gathering, and a device's own pages
//! (taken back after a restore, which marks a peer done in `sync.db`) are
//! never gathered (the daemon applies them alone).
//!
//! A gathered page has no savepoint of its own: SQLite walks its in-memory
//! sub-journal from the start at the end of every statement inside a
//! savepoint, so a page applied under one grew quadratic (a backfill took
//! 170 s). Nor does SQLite undo a failed change's statement alone (an insert
//! into a virtual table keeps no statement journal). So a page that fails
//! among gathered ones rolls back the whole transaction: the gathered pages
//! are pulled again ([`StoreError::RolledBack`]) and, for
//! [`ALONE_AFTER_FAILURE`], applied one transaction each, where a refused
//! change is set aside as before (quarantine).

use std::ops::Deref;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::SqlStore;
use crate::proto::store::StoreError;

/// How long pages apply alone after a page failed among gathered ones.
pub const ALONE_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Where the store stands in gathering pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Gathering {
    /// Each page applies in a transaction of its own.
    Off,
    /// Asked to gather; the transaction opens at the first page.
    Ready,
    /// The gathered transaction is open.
    Open,
    /// The gathered transaction was rolled back: what the pages gathered so
    /// far led to must not be sent; later pages apply alone.
    Abandoned,
}

/// Where one page's apply writes: a transaction of its own, which rolls back
/// unless [`Scope::commit`]ted, or the open gathered one, which
/// [`SqlStore::settle`] commits.
pub(super) struct Scope<'a> {
    conn: &'a Connection,
    gathered: bool,
    done: bool,
}

impl Scope<'_> {
    /// Keeps what the page wrote (a gathered page: at [`SqlStore::settle`]).
    pub(super) fn commit(mut self) -> rusqlite::Result<()> {
        if !self.gathered {
            self.conn.execute_batch("COMMIT")?;
        }
        self.done = true;
        Ok(())
    }

    /// Whether the page was applied in the gathered transaction.
    pub(super) fn gathered(&self) -> bool {
        self.gathered
    }
}

impl Deref for Scope<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        // A gathered page is undone by `SqlStore::abandon`; nothing to undo
        // once SQLite rolled the transaction back itself.
        if self.done || self.gathered || self.conn.is_autocommit() {
            return;
        }
        if let Err(e) = self.conn.execute_batch("ROLLBACK") {
            tracing::warn!(error = %e, "rolling back a page's apply");
        }
    }
}

impl SqlStore {
    /// Lets the page applies that follow share one transaction, until
    /// [`SqlStore::settle`] (not for [`ALONE_AFTER_FAILURE`] after gathered
    /// pages failed, nor while an app writes).
    pub fn gather(&self) {
        let now = Instant::now();
        let wary = self.alone_until.get().is_some_and(|t| now < t);
        // While an app writes, pages are split instead (`split`).
        let app = self.room.borrow().app_writes(now);
        if self.gathering.get() == Gathering::Off && !wary && !app {
            self.gathering.set(Gathering::Ready);
        }
    }

    /// Whether applies are being gathered (what they lead to must wait for
    /// [`SqlStore::settle`]).
    pub fn gathering(&self) -> bool {
        self.gathering.get() != Gathering::Off
    }

    /// Whether another page may still join the gathered transaction (not
    /// once it was rolled back).
    pub fn gathers(&self) -> bool {
        matches!(self.gathering.get(), Gathering::Ready | Gathering::Open)
    }

    /// Ends gathering: commits the gathered transaction, if one is open. An
    /// error means none of the gathered pages was kept.
    pub fn settle(&self) -> Result<(), StoreError> {
        let conn = &self.lib.conn;
        match self.gathering.replace(Gathering::Off) {
            Gathering::Off | Gathering::Ready => Ok(()),
            Gathering::Abandoned => Err(self.lost()),
            Gathering::Open if conn.is_autocommit() => Err(self.wary(self.lost())),
            Gathering::Open => conn.execute_batch("COMMIT").map_err(|source| {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                self.wary(StoreError::RolledBack {
                    path: self.lib.path.clone(),
                    source,
                })
            }),
        }
    }

    /// Where the next page's apply writes (see [`Scope`]). IMMEDIATE: the write
    /// lock first, so an app's commit cannot invalidate the snapshot between
    /// apply's first read and first write.
    pub(super) fn begin(&self) -> Result<Scope<'_>, StoreError> {
        let conn = &self.lib.conn;
        let state = self.gathering.get();
        // SQLite rolled the gathered transaction back (an I/O error, a full
        // disk): applying on would commit pages whose predecessors were lost.
        if state == Gathering::Open && conn.is_autocommit() {
            self.gathering.set(Gathering::Abandoned);
            return Err(self.wary(self.lost()));
        }
        let gathered = matches!(state, Gathering::Ready | Gathering::Open);
        if state != Gathering::Open {
            self.sql(conn.execute_batch("BEGIN IMMEDIATE"))?;
            if gathered {
                self.gathering.set(Gathering::Open);
            }
        }
        Ok(Scope {
            conn,
            gathered,
            done: false,
        })
    }

    /// A page failed among gathered ones: rolls all of them back and applies
    /// pages alone for a while (see the module docs).
    pub(super) fn abandon(&self, scope: Scope<'_>, cause: &StoreError) -> StoreError {
        tracing::warn!(
            error = %cause,
            "a page failed among pages applied together: all of them are pulled again, and applied one by one for {} s",
            ALONE_AFTER_FAILURE.as_secs()
        );
        drop(scope);
        let conn = &self.lib.conn;
        if !conn.is_autocommit()
            && let Err(e) = conn.execute_batch("ROLLBACK")
        {
            tracing::warn!(error = %e, "rolling back pages applied together");
        }
        self.gathering.set(Gathering::Abandoned);
        self.wary(self.lost())
    }

    /// Pages apply alone for [`ALONE_AFTER_FAILURE`] after gathered ones
    /// were lost (to `error`, returned).
    fn wary(&self, error: StoreError) -> StoreError {
        self.alone_until
            .set(Some(Instant::now() + ALONE_AFTER_FAILURE));
        error
    }

    /// The gathered transaction is gone.
    fn lost(&self) -> StoreError {
        let code = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT_ROLLBACK);
        StoreError::RolledBack {
            path: self.lib.path.clone(),
            source: rusqlite::Error::SqliteFailure(code, None),
        }
    }
}
