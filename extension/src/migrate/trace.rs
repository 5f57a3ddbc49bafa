//! The trace callback that reads a schema change's statements, what it
//! keeps of them, and the connection's statement list (see `super::watch`).
//!
//! ```text
//! CREATE TABLE new_t …;          -- DDL prepared: the callback goes on
//! INSERT INTO new_t (…) SELECT … FROM t;   -- kept (sqltext::Statement::Copy)
//! DROP TABLE t; ALTER TABLE new_t RENAME TO t;   -- kept
//! COMMIT;                        -- the repair reads them (super::copies)
//! …                              -- a transaction later the callback goes off
//! ```
//!
//! On only while a connection changes its schema: SQLite calls it as every
//! statement and every trigger program starts (about five times per
//! captured row), and formats the text of nested statements for it, which
//! cost a quarter of a bulk insert's capture when it was always on. SQLite
//! keeps one trace callback per connection: turning it on replaces the
//! host's (Python's `set_trace_callback`), turning it off removes it.

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};

use crate::ffi::{Db, api};
use crate::functions::Conn;

use super::sqltext::{self, Savepoint, Statement};

const SQLITE_TRACE_STMT: c_uint = 0x01;

/// The statements a connection keeps for its repair at most: past that, a
/// repair's renames may be missed (a column then counts as dropped and
/// added), never made up, and a connection that never repairs holds no more.
const MAX_STATEMENTS: usize = 1024;

/// What the trace callback keeps, and whether it is on.
#[derive(Default)]
pub struct Recorder {
    /// The statements that moved tables or columns, in order: this
    /// transaction's, and earlier ones' whose repair is still to come.
    statements: RefCell<Vec<Statement>>,
    /// Where this transaction's statements start in `statements`.
    transaction_start: Cell<usize>,
    /// The open savepoints, each with where its statements start: a
    /// `ROLLBACK TO` takes back what it undid.
    savepoints: RefCell<Vec<(String, usize)>>,
    /// Transaction ends left before the callback goes off (0: off).
    left: Cell<u8>,
    /// Whether the callback is installed.
    on: Cell<bool>,
}

impl Recorder {
    /// DDL was prepared: keep statements until two transaction ends from
    /// now (the DDL's own, and the next: Python's `sqlite3` commits a
    /// rebuild's `CREATE TABLE` alone and copies in the transaction after).
    pub fn open(&self) {
        self.left.set(2);
    }

    /// No more to keep: the repair that needed the statements ran.
    pub fn close(&self) {
        self.left.set(0);
        self.statements.borrow_mut().clear();
    }

    /// The statements kept, which the caller now owns.
    pub fn take(&self) -> Vec<Statement> {
        self.transaction_start.set(0);
        self.savepoints.borrow_mut().clear();
        self.statements.take()
    }

    /// Statements a failed repair hands back, for the next to read.
    pub fn put_back(&self, statements: Vec<Statement>) {
        self.transaction_start.set(statements.len());
        self.statements.replace(statements);
    }

    /// A transaction committed (its statements were taken) or rolled back
    /// (its statements are dropped; earlier ones waiting for a repair stay).
    pub fn ended(&self, rolled_back: bool) {
        if rolled_back {
            let start = self.transaction_start.get();
            self.statements.borrow_mut().truncate(start);
        }
        self.savepoints.borrow_mut().clear();
        self.left.set(self.left.get().saturating_sub(1));
    }

    /// Installs or removes the callback on `db` (`data`: its `Conn`) as
    /// [`Recorder::open`] and [`Recorder::ended`] left it.
    pub fn switch(&self, db: Db, data: *mut c_void) {
        let want = self.left.get() > 0;
        if want == self.on.get() {
            return;
        }
        let (mask, callback) = if want {
            (SQLITE_TRACE_STMT, Some(traced as Callback))
        } else {
            (0, None)
        };
        // SAFETY: valid handle; the callback is a plain function and `data`
        // lives as long as the connection (see `super::watch::install`).
        unsafe { api!(trace_v2)(db.raw(), mask, callback, data) };
        self.on.set(want);
    }

    /// A statement the app started. One starting outside a transaction
    /// begins one: what the last kept is stale unless `pending` (its repair
    /// is still to come: a database without WAL has no WAL hook, and
    /// `sdsync_repair()` repairs).
    fn saw(&self, sql: &str, new_transaction: bool, pending: bool) {
        let mut kept = self.statements.borrow_mut();
        if new_transaction {
            if !pending {
                kept.clear();
            }
            self.transaction_start.set(kept.len());
            self.savepoints.borrow_mut().clear();
        }
        if let Some(s) = sqltext::savepoint(sql) {
            self.savepoint(s, &mut kept);
        } else if let Some(s) = sqltext::statement(sql) {
            // SQLite calls back with a `DROP TABLE`'s own text again for the
            // foreign key actions it runs per row while foreign keys are on
            // (its implicit `DELETE`): kept each time, 600 rows with three
            // referencing columns filled the list, and the rebuild's rename
            // after it was missed (a user's trial: Alembic's batch mode, the
            // renamed column's values stamped as new changes that beat peers'
            // edits). The same statement twice in a row moves nothing more.
            if kept.len() < MAX_STATEMENTS && kept.last() != Some(&s) {
                kept.push(s);
            }
        }
    }

    /// Follows the savepoints, so a `ROLLBACK TO` takes back the statements
    /// it undid; one not seen open (opened before the callback went on)
    /// takes back the whole transaction's, which misses renames rather than
    /// making one up.
    fn savepoint(&self, s: Savepoint, kept: &mut Vec<Statement>) {
        let mut open = self.savepoints.borrow_mut();
        let find = |open: &[(String, usize)], name: &str| {
            open.iter().rposition(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        match s {
            Savepoint::Open(name) => open.push((name, kept.len())),
            Savepoint::Release(name) => match find(&open, &name) {
                Some(i) => open.truncate(i),
                None => open.clear(),
            },
            Savepoint::RollbackTo(name) => match find(&open, &name) {
                Some(i) => kept.truncate(open[i].1),
                None => kept.truncate(self.transaction_start.get()),
            },
        }
    }
}

type Callback = unsafe extern "C" fn(c_uint, *mut c_void, *mut c_void, *mut c_void) -> c_int;

/// Keeps the statements that move tables and columns
/// ([`sqltext::statement`]) and follows savepoints. Only the app's
/// top-level statements: the text SQLite passes is the statement's own
/// (`sqlite3_sql`) for those, and a formatted `-- …` for trigger programs
/// and statements run inside another; sdsync's own work is skipped too.
unsafe extern "C" fn traced(
    event: c_uint,
    data: *mut c_void,
    stmt: *mut c_void,
    text: *mut c_void,
) -> c_int {
    let _ = std::panic::catch_unwind(|| {
        if event != SQLITE_TRACE_STMT || text.is_null() || super::watch::in_own_ddl() {
            return;
        }
        // SAFETY: for SQLITE_TRACE_STMT, `stmt` is the statement starting and
        // `text` NUL-terminated text valid for this call; `data` is the
        // connection's `Conn`.
        let own_text = unsafe { api!(sql)(stmt.cast()) };
        if !std::ptr::eq(own_text, text as *const c_char) {
            return;
        }
        let sql = unsafe { CStr::from_ptr(text as *const c_char) }.to_string_lossy();
        if !sqltext::may_matter(&sql) {
            return;
        }
        let conn = unsafe { &*(data as *const Conn) };
        let watch = &conn.watch;
        watch
            .recorder()
            .saw(&sql, watch.outside_transaction(), watch.repair_pending());
    });
    0
}

/// Whether one of `db`'s statements that are running now (stepped and not
/// reset) has SQL text that `matches`; the first such text.
pub fn running(db: Db, matches: impl Fn(&str) -> bool) -> Option<String> {
    statements(db, true, matches)
}

/// Whether any of `db`'s prepared statements has SQL text that `matches`.
pub fn prepared(db: Db, matches: impl Fn(&str) -> bool) -> bool {
    statements(db, false, matches).is_some()
}

fn statements(db: Db, busy: bool, matches: impl Fn(&str) -> bool) -> Option<String> {
    let mut stmt = std::ptr::null_mut();
    loop {
        // SAFETY: valid handle; next_stmt walks the connection's own
        // statement list, and `stmt` is null or one of its statements.
        stmt = unsafe { api!(next_stmt)(db.raw(), stmt) };
        if stmt.is_null() {
            return None;
        }
        // SAFETY: `stmt` is a live statement of this connection, and
        // sqlite3_sql returns its NUL-terminated text (or NULL).
        if busy && unsafe { api!(stmt_busy)(stmt) } == 0 {
            continue;
        }
        let text = unsafe { api!(sql)(stmt) };
        if text.is_null() {
            continue;
        }
        let sql = unsafe { CStr::from_ptr(text) }.to_string_lossy();
        if matches(&sql) {
            return Some(sql.into_owned());
        }
    }
}
