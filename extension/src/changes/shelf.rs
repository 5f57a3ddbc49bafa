//! What reading `sdsync_changes` keeps between reads on one connection: the
//! parsed catalog and the prepared statements.
//!
//! ```ignore
//! let schema = shelf.schema(db)?;               // parsed once per schema version
//! let mut stmt = shelf.take(db, &sql)?;         // prepared once, then reused
//! shelf.give(stmt);                             // back on the shelf, reset
//! ```
//!
//! A syncer reads the table once per page it sends and once per
//! acknowledgement it gets back, usually finding one change or none. Preparing
//! the reader's statements and parsing every table's spec each time cost about
//! 1.7 M instructions a read: the bulk of a committing syncer's CPU with ten
//! peers. Prepared statements outlive schema changes by design (SQLite
//! re-prepares them); the catalog is parsed again whenever `PRAGMA
//! schema_version` moves. A schema read inside a write transaction is used but
//! not kept: a rollback would take it back, and the cookie it was read under
//! could later name another schema (the vtab hears of rollbacks only of
//! transactions that wrote to it). Statements are taken off the shelf while a
//! cursor uses them, so two cursors open at once (a self-join) never share one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::catalog::Catalog;
use crate::ffi::{Db, SqlError, Stmt};
use crate::store;

use super::parse::ChangeError;

/// The reader's view of the schema, valid while `PRAGMA schema_version` holds.
pub struct Schema {
    /// `PRAGMA schema_version` when this was read.
    version: i64,
    /// Tracked tables.
    pub catalog: Catalog,
    /// The library's tables exist (the extension is loaded on a plain database otherwise).
    pub exists: bool,
    /// `sdsync_kept` exists (a library upgraded to format 6 or later).
    pub kept_table: bool,
}

/// One connection's shelf, shared by its cursors.
#[derive(Clone, Default)]
pub struct Shelf(Rc<RefCell<Inner>>);

#[derive(Default)]
struct Inner {
    schema: Option<Rc<Schema>>,
    free: HashMap<String, Stmt>,
}

const VERSION: &str = "PRAGMA schema_version";

impl Shelf {
    /// The schema as of now, parsed again only when it moved.
    pub fn schema(&self, db: Db) -> Result<Rc<Schema>, ChangeError> {
        let mut stmt = self.take(db, VERSION)?;
        let read = stmt.step().map(|row| if row { stmt.int(0) } else { 0 });
        self.give(stmt);
        let version = read?;
        if let Some(schema) = self
            .0
            .borrow()
            .schema
            .as_ref()
            .filter(|s| s.version == version)
        {
            return Ok(schema.clone());
        }
        let exists = store::exists(db)?;
        let kept_table = exists
            && db
                .query_i64(
                    "SELECT count(*) FROM sqlite_schema WHERE name = 'sdsync_kept'",
                    &[],
                )?
                .unwrap_or(0)
                > 0;
        let schema = Rc::new(Schema {
            version,
            catalog: Catalog::load(db)?,
            exists,
            kept_table,
        });
        let mut inner = self.0.borrow_mut();
        // Statements of the old schema name tables and columns it had: drop
        // them (also inside a write transaction: a select of a table that
        // was just dropped would fail when re-prepared in `step`, where a
        // fresh prepare fails first and the reader skips the table).
        inner.free.retain(|sql, _| sql == VERSION);
        if !db.writing() {
            inner.schema = Some(schema.clone());
        }
        Ok(schema)
    }

    /// A prepared statement for `sql`: off the shelf, or prepared now.
    pub fn take(&self, db: Db, sql: &str) -> Result<Stmt, SqlError> {
        let shelved = self.0.borrow_mut().free.remove(sql);
        match shelved {
            Some(stmt) => Ok(stmt),
            None => db.prepare(sql),
        }
    }

    /// Puts a statement back, reset; a second copy (from a self-join) is dropped.
    pub fn give(&self, mut stmt: Stmt) {
        stmt.reset();
        let mut inner = self.0.borrow_mut();
        if !inner.free.contains_key(stmt.sql()) {
            inner.free.insert(stmt.sql().to_string(), stmt);
        }
    }

    /// A rollback may have moved the schema back: read it again next time.
    pub fn forget(&self) {
        self.0.borrow_mut().schema = None;
    }
}
