//! `sdsync_changes`: the one table through which changes leave and enter a database.
//!
//! ```sql
//! SELECT tbl, pk, op, data, origin, seq, hlc, creates FROM sdsync_changes;   -- read
//! INSERT INTO sdsync_changes(tbl, pk, op, data, origin, seq, hlc, creates)   -- apply
//!   VALUES ('tags', '…', 'upsert', '{"canonical_name":"x"}', '…', 3, 1234, 1);
//! ```
//!
//! An eponymous virtual table: it exists on every connection that loaded the
//! extension, without `CREATE VIRTUAL TABLE`. It is DIRECTONLY (no view or trigger
//! stored in a database can read or write it). The callbacks here are the only
//! `extern "C"` entry points of the module; each runs its body under
//! [`crate::ffi::guard`], so a panic becomes an SQLite error with a message.

mod apply;
mod parse;
mod read;
mod rows;
mod shelf;

use std::ffi::{c_char, c_int, c_void};
use std::rc::Rc;

use sqlite3ext_sys::{
    sqlite3, sqlite3_context, sqlite3_index_info, sqlite3_module, sqlite3_value, sqlite3_vtab,
    sqlite3_vtab_cursor,
};

use crate::ffi::{Db, SQLITE_ERROR, SQLITE_OK, Value, api, guard, guard_coded, value_of};
use crate::functions::{Conn, drop_conn};
pub use apply::Engine;
use parse::{ChangeError, Fields};
use read::{Filter, Reader};
use shelf::Shelf;

/// The declared columns; their order is the order of `Fields`.
const DECLARATION: &str = "CREATE TABLE x(tbl TEXT, pk, op TEXT, data TEXT, origin TEXT, seq INTEGER, hlc INTEGER, creates INTEGER)";
const COL_ORIGIN: c_int = 4;
const COL_SEQ: c_int = 5;

const OP_EQ: u8 = 2;
const OP_GT: u8 = 4;
const OP_GE: u8 = 32;
/// `sqlite3_vtab_config` option: the table may only be used from top-level SQL.
const SQLITE_VTAB_DIRECTONLY: c_int = 3;

#[repr(C)]
struct Table {
    base: sqlite3_vtab,
    db: Db,
    conn: Rc<Conn>,
    engine: Engine,
    shelf: Shelf,
}

#[repr(C)]
struct Cursor {
    base: sqlite3_vtab_cursor,
    reader: Option<Reader>,
}

static MODULE: sqlite3_module = sqlite3_module {
    // Version 2: SQLite tells the table about savepoints too.
    iVersion: 2,
    xCreate: None,
    xConnect: Some(x_connect),
    xBestIndex: Some(x_best_index),
    xDisconnect: Some(x_disconnect),
    xDestroy: Some(x_disconnect),
    xOpen: Some(x_open),
    xClose: Some(x_close),
    xFilter: Some(x_filter),
    xNext: Some(x_next),
    xEof: Some(x_eof),
    xColumn: Some(x_column),
    xRowid: Some(x_rowid),
    xUpdate: Some(x_update),
    xBegin: Some(x_begin),
    xSync: Some(x_keep),
    xCommit: Some(x_keep),
    xRollback: Some(x_rollback),
    xSavepoint: Some(x_savepoint),
    xRelease: Some(x_savepoint),
    xRollbackTo: Some(x_rollback_to),
    // SAFETY: every other member is an optional callback; zero is `None`.
    ..unsafe { std::mem::zeroed() }
};

/// Registers the module on a connection; the module owns one reference to `conn`.
pub fn register(db: *mut sqlite3, conn: &Rc<Conn>) -> Result<(), String> {
    let aux = Rc::into_raw(conn.clone()) as *mut c_void;
    // SAFETY: valid handle, static module, NUL-terminated name; SQLite calls
    // `drop_conn` on `aux` when the module goes away.
    let rc = unsafe {
        api!(create_module_v2)(
            db,
            c"sdsync_changes".as_ptr(),
            &MODULE,
            aux,
            Some(drop_conn),
        )
    };
    if rc == SQLITE_OK {
        Ok(())
    } else {
        Err(format!("could not register sdsync_changes (code {rc})"))
    }
}

/// Reports an error through the table's `zErrMsg`, as SQLite expects.
fn fail(vtab: *mut sqlite3_vtab, message: &str) -> c_int {
    fail_with(vtab, (SQLITE_ERROR, message.to_string()))
}

/// [`fail`] with the result code to return (see `ffi::ResultCode`).
fn fail_with(vtab: *mut sqlite3_vtab, (code, message): (c_int, String)) -> c_int {
    crate::ffi::set_vtab_error(vtab, &message);
    code
}

unsafe extern "C" fn x_connect(
    db: *mut sqlite3,
    aux: *mut c_void,
    _argc: c_int,
    _argv: *const *const c_char,
    pp_vtab: *mut *mut sqlite3_vtab,
    pz_err: *mut *mut c_char,
) -> c_int {
    let result = guard(|| {
        // SAFETY: valid handle and a static NUL-terminated declaration.
        let rc = unsafe {
            api!(declare_vtab)(db, c"CREATE TABLE x(tbl TEXT, pk, op TEXT, data TEXT, origin TEXT, seq INTEGER, hlc INTEGER, creates INTEGER)".as_ptr())
        };
        if rc != SQLITE_OK {
            return Err(format!(
                "sdsync_changes: declare_vtab failed ({rc}): {DECLARATION}"
            ));
        }
        // SAFETY: valid handle; the option takes no further arguments.
        unsafe { api!(vtab_config)(db, SQLITE_VTAB_DIRECTONLY) };
        // SAFETY: `aux` is the Rc made by `register`; we take one more reference.
        let conn = unsafe {
            Rc::increment_strong_count(aux as *const Conn);
            Rc::from_raw(aux as *const Conn)
        };
        let table = Box::new(Table {
            // SAFETY: a zeroed sqlite3_vtab is what SQLite expects before it fills it.
            base: unsafe { std::mem::zeroed() },
            db: Db::from_raw(db),
            conn,
            engine: Engine::new(Db::from_raw(db)),
            shelf: Shelf::default(),
        });
        Ok(Box::into_raw(table))
    });
    crate::ffi::finish_connect(result, pp_vtab, pz_err)
}

unsafe extern "C" fn x_disconnect(vtab: *mut sqlite3_vtab) -> c_int {
    // SAFETY: vtab was made by x_connect with Box::into_raw; freed once. Dropping
    // the engine finalizes its cached statements before the connection closes.
    let result = guard(|| {
        drop(unsafe { Box::from_raw(vtab.cast::<Table>()) });
        Ok::<(), String>(())
    });
    if result.is_ok() {
        SQLITE_OK
    } else {
        SQLITE_ERROR
    }
}

unsafe extern "C" fn x_best_index(vtab: *mut sqlite3_vtab, info: *mut sqlite3_index_info) -> c_int {
    // SAFETY: info is valid for the call; arrays have nConstraint entries.
    let result = guard(|| {
        let info = unsafe { &mut *info };
        let n = info.nConstraint.max(0) as usize;
        let cons = unsafe { std::slice::from_raw_parts(info.aConstraint, n) };
        let usage = unsafe { std::slice::from_raw_parts_mut(info.aConstraintUsage, n) };
        let find = |col: c_int, ops: &[u8]| {
            cons.iter()
                .position(|c| c.usable != 0 && c.iColumn == col && ops.contains(&c.op))
        };
        let mut idx = 0;
        let mut argv = 0;
        if let Some(i) = find(COL_ORIGIN, &[OP_EQ]) {
            argv += 1;
            usage[i].argvIndex = argv;
            usage[i].omit = 1;
            idx |= 1;
        }
        if let Some(i) = find(COL_SEQ, &[OP_GT, OP_GE]) {
            argv += 1;
            usage[i].argvIndex = argv;
            usage[i].omit = 1;
            idx |= if cons[i].op == OP_GT { 2 } else { 4 };
        }
        info.idxNum = idx;
        info.estimatedCost = match idx & 1 {
            1 => 10.0,
            _ => 1_000_000.0,
        };
        Ok::<(), String>(())
    });
    match result {
        Ok(()) => SQLITE_OK,
        Err(m) => fail(vtab, &m),
    }
}

unsafe extern "C" fn x_open(
    vtab: *mut sqlite3_vtab,
    pp_cursor: *mut *mut sqlite3_vtab_cursor,
) -> c_int {
    let result = guard(|| {
        let cursor = Box::new(Cursor {
            // SAFETY: SQLite fills the base after xOpen returns.
            base: unsafe { std::mem::zeroed() },
            reader: None,
        });
        // SAFETY: out-parameter from SQLite.
        unsafe { *pp_cursor = Box::into_raw(cursor).cast::<sqlite3_vtab_cursor>() };
        Ok::<(), String>(())
    });
    match result {
        Ok(()) => SQLITE_OK,
        Err(m) => fail(vtab, &m),
    }
}

unsafe extern "C" fn x_close(cursor: *mut sqlite3_vtab_cursor) -> c_int {
    // SAFETY: made by x_open with Box::into_raw; freed once.
    let _ = guard(|| {
        drop(unsafe { Box::from_raw(cursor.cast::<Cursor>()) });
        Ok::<(), String>(())
    });
    SQLITE_OK
}

unsafe extern "C" fn x_filter(
    cursor: *mut sqlite3_vtab_cursor,
    idx_num: c_int,
    _idx_str: *const c_char,
    argc: c_int,
    argv: *mut *mut sqlite3_value,
) -> c_int {
    // SAFETY: cursor from x_open; pVtab set by SQLite; argv has argc values.
    let cur = unsafe { &mut *cursor.cast::<Cursor>() };
    let vtab = cur.base.pVtab;
    let result = guard_coded(|| {
        let table = unsafe { &*vtab.cast::<Table>() };
        let args: Vec<Value> = (0..argc.max(0) as usize)
            .map(|i| value_of(unsafe { *argv.add(i) }))
            .collect();
        let mut args = args.into_iter();
        let mut filter = Filter::default();
        if idx_num & 1 != 0 {
            filter.origin = match args.next() {
                Some(Value::Text(t)) => Some(sdsync_core::ids::parse_device(&t).unwrap_or(t)),
                _ => Some(String::new()),
            };
        }
        if idx_num & 6 != 0 {
            let bound = match args.next() {
                Some(Value::Integer(v)) => v,
                Some(Value::Real(r)) => r.floor() as i64,
                _ => i64::MAX,
            };
            filter.after = Some(if idx_num & 4 != 0 {
                bound.saturating_sub(1)
            } else {
                bound
            });
        }
        // The previous reader's statements go back on the shelf first.
        cur.reader = None;
        cur.reader = Some(Reader::open(table.db, &filter, &table.shelf)?);
        Ok::<(), ChangeError>(())
    });
    match result {
        Ok(()) => SQLITE_OK,
        Err(e) => fail_with(vtab, e),
    }
}

unsafe extern "C" fn x_next(cursor: *mut sqlite3_vtab_cursor) -> c_int {
    // SAFETY: cursor from x_open.
    let cur = unsafe { &mut *cursor.cast::<Cursor>() };
    let vtab = cur.base.pVtab;
    let result = guard_coded(|| match cur.reader.as_mut() {
        Some(r) => r.advance(),
        None => Ok(()),
    });
    match result {
        Ok(()) => SQLITE_OK,
        Err(e) => fail_with(vtab, e),
    }
}

unsafe extern "C" fn x_eof(cursor: *mut sqlite3_vtab_cursor) -> c_int {
    // SAFETY: cursor from x_open.
    let cur = unsafe { &*cursor.cast::<Cursor>() };
    // A panic here would mean a broken invariant; report "at end" rather than unwind.
    guard(|| {
        Ok::<c_int, String>(c_int::from(
            cur.reader.as_ref().is_none_or(|r| r.current.is_none()),
        ))
    })
    .unwrap_or(1)
}

unsafe extern "C" fn x_column(
    cursor: *mut sqlite3_vtab_cursor,
    ctx: *mut sqlite3_context,
    i: c_int,
) -> c_int {
    // SAFETY: cursor from x_open; ctx valid for the call.
    let cur = unsafe { &*cursor.cast::<Cursor>() };
    let result = guard(|| {
        let value = match cur.reader.as_ref().and_then(|r| r.current.as_ref()) {
            None => Value::Null,
            Some(row) => match i {
                0 => Value::Text(row.tbl.clone()),
                1 => row.pk.clone(),
                2 => Value::Text(row.op.to_string()),
                3 => row.data.clone().map_or(Value::Null, Value::Text),
                4 => Value::Text(row.origin.clone()),
                5 => Value::Integer(row.seq),
                6 => Value::Integer(row.hlc),
                7 => Value::Integer(row.creates),
                _ => Value::Null,
            },
        };
        crate::ffi::result_value(ctx, &value);
        Ok::<(), String>(())
    });
    match result {
        Ok(()) => SQLITE_OK,
        Err(m) => fail(cur.base.pVtab, &m),
    }
}

unsafe extern "C" fn x_rowid(cursor: *mut sqlite3_vtab_cursor, rowid: *mut i64) -> c_int {
    // SAFETY: cursor from x_open; out-parameter from SQLite.
    let cur = unsafe { &*cursor.cast::<Cursor>() };
    unsafe { *rowid = cur.reader.as_ref().map_or(0, |r| r.count) };
    SQLITE_OK
}

unsafe extern "C" fn x_update(
    vtab: *mut sqlite3_vtab,
    argc: c_int,
    argv: *mut *mut sqlite3_value,
    rowid: *mut i64,
) -> c_int {
    let result = guard_coded(|| {
        // SAFETY: vtab from x_connect; argv has argc values.
        let table = unsafe { &mut *vtab.cast::<Table>() };
        let args: Vec<*mut sqlite3_value> = (0..argc.max(0) as usize)
            .map(|i| unsafe { *argv.add(i) })
            .collect();
        let is_insert = args.len() > 1 && value_of(args[0]) == Value::Null;
        if !is_insert {
            return Err(ChangeError::ReadOnly);
        }
        let fields = Fields {
            values: args[2..].iter().map(|v| value_of(*v)).collect(),
        };
        let _applying = Applying::start(&table.conn);
        // Apply may move the clock (a change of this device's taken back).
        table.conn.forget_stamp();
        table
            .engine
            .apply(fields, table.conn.wall_ms(), &table.conn.local_writes)?;
        // SAFETY: out-parameter from SQLite.
        unsafe { *rowid = 0 };
        Ok(())
    });
    match result {
        Ok(()) => SQLITE_OK,
        Err(e) => {
            // Also after a caught panic: SQLite rolls the statement back.
            forget(vtab, true);
            fail_with(vtab, e)
        }
    }
}

/// Drops the engine's transaction-scoped state (see `apply::TxState`).
fn forget(vtab: *mut sqlite3_vtab, rolled_back: bool) -> c_int {
    let result = guard(|| {
        // SAFETY: vtab from x_connect, not otherwise borrowed during this callback.
        let table = unsafe { &mut *vtab.cast::<Table>() };
        table.engine.forget_transaction(rolled_back);
        if rolled_back {
            table.shelf.forget();
        }
        Ok::<(), String>(())
    });
    match result {
        Ok(()) => SQLITE_OK,
        Err(m) => fail(vtab, &m),
    }
}

unsafe extern "C" fn x_begin(vtab: *mut sqlite3_vtab) -> c_int {
    forget(vtab, false)
}

unsafe extern "C" fn x_rollback(vtab: *mut sqlite3_vtab) -> c_int {
    forget(vtab, true)
}

unsafe extern "C" fn x_rollback_to(vtab: *mut sqlite3_vtab, _savepoint: c_int) -> c_int {
    forget(vtab, true)
}

/// A savepoint began or was released: what the engine knows stays true.
unsafe extern "C" fn x_savepoint(_vtab: *mut sqlite3_vtab, _savepoint: c_int) -> c_int {
    SQLITE_OK
}

/// Sync and commit: what the engine knows stays true.
unsafe extern "C" fn x_keep(_vtab: *mut sqlite3_vtab) -> c_int {
    SQLITE_OK
}

/// Switches capture to apply mode for the duration of one change, restored on drop
/// (also when the apply fails or panics).
struct Applying<'a>(&'a Conn, bool);

impl<'a> Applying<'a> {
    fn start(conn: &'a Conn) -> Self {
        let was = conn.applying.replace(true);
        Self(conn, was)
    }
}

impl Drop for Applying<'_> {
    fn drop(&mut self) {
        self.0.applying.set(self.1);
    }
}
