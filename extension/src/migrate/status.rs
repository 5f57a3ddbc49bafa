//! `sdsync_schema`: how each tracked table stands against the live schema.
//!
//! ```sql
//! SELECT tbl, class, state, detail FROM sdsync_schema;
//! -- tags | shared | ok      |
//! -- notes| owned  | missing | table notes does not exist: changes for it are kept …
//! ```
//!
//! Read-only and free of side effects, so it is INNOCUOUS: the guard trigger
//! (`store::FORMAT_6`) names it, which is what makes renames fail on a
//! connection without the extension. `sdsync status` shows it.

use std::ffi::{c_char, c_int, c_void};

use sqlite3ext_sys::{
    sqlite3, sqlite3_context, sqlite3_index_info, sqlite3_module, sqlite3_value, sqlite3_vtab,
    sqlite3_vtab_cursor,
};

use crate::ffi::{Db, SQLITE_ERROR, SQLITE_OK, Value, api, guard, result_value};
use crate::store;

/// `sqlite3_vtab_config` option: safe to use from triggers and views.
const SQLITE_VTAB_INNOCUOUS: c_int = 2;

#[repr(C)]
struct Table {
    base: sqlite3_vtab,
    db: Db,
}

#[repr(C)]
struct Cursor {
    base: sqlite3_vtab_cursor,
    rows: Vec<[Value; 4]>,
    at: usize,
}

static MODULE: sqlite3_module = sqlite3_module {
    iVersion: 1,
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
    // SAFETY: every other member is an optional callback; zero is `None`.
    ..unsafe { std::mem::zeroed() }
};

/// Registers the table on a connection.
pub fn register(db: *mut sqlite3) -> Result<(), String> {
    // SAFETY: valid handle, static module and name, no user data.
    let rc = unsafe {
        api!(create_module_v2)(
            db,
            c"sdsync_schema".as_ptr(),
            &MODULE,
            std::ptr::null_mut(),
            None,
        )
    };
    if rc == SQLITE_OK {
        Ok(())
    } else {
        Err(format!("could not register sdsync_schema (code {rc})"))
    }
}

/// The rows: one per tracked table.
fn rows(db: Db) -> Result<Vec<[Value; 4]>, String> {
    if !store::exists(db).map_err(|e| e.to_string())? {
        return Ok(Vec::new());
    }
    let states = super::inspect(db).map_err(|e| e.to_string())?;
    Ok(states
        .into_iter()
        .map(|(spec, state)| {
            [
                Value::Text(spec.name.clone()),
                Value::Text(spec.class.as_str().to_string()),
                Value::Text(state.word().to_string()),
                Value::Text(state.detail(&spec.name)),
            ]
        })
        .collect())
}

unsafe extern "C" fn x_connect(
    db: *mut sqlite3,
    _aux: *mut c_void,
    _argc: c_int,
    _argv: *const *const c_char,
    pp_vtab: *mut *mut sqlite3_vtab,
    pz_err: *mut *mut c_char,
) -> c_int {
    let result = guard(|| {
        // SAFETY: valid handle and a static NUL-terminated declaration.
        let rc = unsafe {
            api!(declare_vtab)(
                db,
                c"CREATE TABLE x(tbl TEXT, class TEXT, state TEXT, detail TEXT)".as_ptr(),
            )
        };
        if rc != SQLITE_OK {
            return Err(format!("sdsync_schema: declare_vtab failed ({rc})"));
        }
        // SAFETY: valid handle; the option takes no further arguments.
        unsafe { api!(vtab_config)(db, SQLITE_VTAB_INNOCUOUS) };
        Ok(Box::into_raw(Box::new(Table {
            // SAFETY: a zeroed sqlite3_vtab is what SQLite expects before it fills it.
            base: unsafe { std::mem::zeroed() },
            db: Db::from_raw(db),
        })))
    });
    crate::ffi::finish_connect(result, pp_vtab, pz_err)
}

unsafe extern "C" fn x_disconnect(vtab: *mut sqlite3_vtab) -> c_int {
    // SAFETY: made by x_connect with Box::into_raw; freed once.
    let _ = guard(|| {
        drop(unsafe { Box::from_raw(vtab.cast::<Table>()) });
        Ok::<(), String>(())
    });
    SQLITE_OK
}

unsafe extern "C" fn x_best_index(
    _vtab: *mut sqlite3_vtab,
    info: *mut sqlite3_index_info,
) -> c_int {
    // SAFETY: info is valid for the call. A full scan of a handful of rows.
    unsafe { (*info).estimatedCost = 10.0 };
    SQLITE_OK
}

unsafe extern "C" fn x_open(_vtab: *mut sqlite3_vtab, pp: *mut *mut sqlite3_vtab_cursor) -> c_int {
    let cursor = Box::new(Cursor {
        // SAFETY: zeroed base, filled by SQLite.
        base: unsafe { std::mem::zeroed() },
        rows: Vec::new(),
        at: 0,
    });
    // SAFETY: out-parameter from SQLite.
    unsafe { *pp = Box::into_raw(cursor).cast::<sqlite3_vtab_cursor>() };
    SQLITE_OK
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
    _idx_num: c_int,
    _idx_str: *const c_char,
    _argc: c_int,
    _argv: *mut *mut sqlite3_value,
) -> c_int {
    // SAFETY: cursor from x_open; pVtab set by SQLite.
    let cur = unsafe { &mut *cursor.cast::<Cursor>() };
    let vtab = cur.base.pVtab;
    let result = guard(|| rows(unsafe { &*vtab.cast::<Table>() }.db));
    match result {
        Ok(rows) => {
            cur.rows = rows;
            cur.at = 0;
            SQLITE_OK
        }
        Err(message) => {
            crate::ffi::set_vtab_error(vtab, &format!("sdsync_schema: {message}"));
            SQLITE_ERROR
        }
    }
}

unsafe extern "C" fn x_next(cursor: *mut sqlite3_vtab_cursor) -> c_int {
    // SAFETY: cursor from x_open.
    unsafe { (*cursor.cast::<Cursor>()).at += 1 };
    SQLITE_OK
}

unsafe extern "C" fn x_eof(cursor: *mut sqlite3_vtab_cursor) -> c_int {
    // SAFETY: cursor from x_open.
    let cur = unsafe { &*cursor.cast::<Cursor>() };
    c_int::from(cur.at >= cur.rows.len())
}

unsafe extern "C" fn x_column(
    cursor: *mut sqlite3_vtab_cursor,
    ctx: *mut sqlite3_context,
    i: c_int,
) -> c_int {
    // SAFETY: cursor from x_open; ctx valid for the call.
    let cur = unsafe { &*cursor.cast::<Cursor>() };
    let value = cur
        .rows
        .get(cur.at)
        .and_then(|row| row.get(i.max(0) as usize))
        .cloned()
        .unwrap_or(Value::Null);
    let _ = guard(|| {
        result_value(ctx, &value);
        Ok::<(), String>(())
    });
    SQLITE_OK
}

unsafe extern "C" fn x_rowid(cursor: *mut sqlite3_vtab_cursor, rowid: *mut i64) -> c_int {
    // SAFETY: cursor from x_open; out-parameter from SQLite.
    unsafe { *rowid = (*cursor.cast::<Cursor>()).at as i64 };
    SQLITE_OK
}
