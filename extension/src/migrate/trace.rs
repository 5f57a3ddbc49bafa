//! The trace callback that reads a schema change's statements, and the
//! connection's statement list (see `super::watch`).
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

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};

use crate::ffi::{Db, api};
use crate::functions::Conn;

use super::sqltext;

const SQLITE_TRACE_STMT: c_uint = 0x01;

/// Turns the callback on or off for `db` (`data`: its `Conn`).
pub fn switch(db: Db, on: bool, data: *mut c_void) {
    let (mask, callback) = if on {
        (SQLITE_TRACE_STMT, Some(traced as Callback))
    } else {
        (0, None)
    };
    // SAFETY: valid handle; the callback is a plain function and `data`
    // lives as long as the connection (see `super::watch::install`).
    unsafe { api!(trace_v2)(db.raw(), mask, callback, data) };
}

type Callback = unsafe extern "C" fn(c_uint, *mut c_void, *mut c_void, *mut c_void) -> c_int;

/// Keeps the statements that move tables and columns
/// ([`sqltext::statement`]) until their transaction ends. A statement
/// that starts outside a transaction begins one, and what the last one
/// kept is stale. Nested statements (SQLite gives them as `-- text`) and
/// trigger programs (`-- TRIGGER name`) are not the app's: skipped, as is
/// sdsync's own work.
unsafe extern "C" fn traced(
    event: c_uint,
    data: *mut c_void,
    _stmt: *mut c_void,
    text: *mut c_void,
) -> c_int {
    let _ = std::panic::catch_unwind(|| {
        if event != SQLITE_TRACE_STMT || text.is_null() || super::watch::in_own_ddl() {
            return;
        }
        // SAFETY: for SQLITE_TRACE_STMT, SQLite passes the statement's
        // NUL-terminated text; `data` is the connection's `Conn`.
        let sql = unsafe { CStr::from_ptr(text as *const c_char) }.to_bytes();
        if sql.starts_with(b"--") {
            return;
        }
        let conn = unsafe { &*(data as *const Conn) };
        let statement = sqltext::statement(&String::from_utf8_lossy(sql));
        conn.watch.saw(statement, conn.watch.outside_transaction());
    });
    0
}

/// Whether one of `db`'s statements (only running ones when `busy`: stepped
/// and not reset) has SQL text that `matches`.
pub fn has_statement(db: Db, busy: bool, matches: impl Fn(&str) -> bool) -> bool {
    let mut stmt = std::ptr::null_mut();
    loop {
        // SAFETY: valid handle; next_stmt walks the connection's own
        // statement list, and `stmt` is null or one of its statements.
        stmt = unsafe { api!(next_stmt)(db.raw(), stmt) };
        if stmt.is_null() {
            return false;
        }
        // SAFETY: `stmt` is a live statement of this connection, and
        // sqlite3_sql returns its NUL-terminated text (or NULL).
        let running = unsafe { api!(stmt_busy)(stmt) } != 0;
        if (running || !busy) && {
            let text = unsafe { api!(sql)(stmt) };
            !text.is_null() && matches(&unsafe { CStr::from_ptr(text) }.to_string_lossy())
        } {
            return true;
        }
    }
}
