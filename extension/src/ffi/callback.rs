//! What every `extern "C"` callback needs: a guard that turns a panic or an
//! error into a message SQLite can carry, and the ways to hand SQLite a
//! result, an error string or a new virtual table.
//!
//! ```ignore
//! match guard(|| run(ctx, args)) {
//!     Ok(value) => result_value(ctx, &value),
//!     Err(message) => unsafe { api!(result_error)(ctx, message.as_ptr().cast(), len) },
//! }
//! ```

use std::any::Any;
use std::ffi::{c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use super::{ResultCode, SQLITE_ERROR, SQLITE_OK, Value, api, transient};

/// Copies a message into memory from `sqlite3_malloc`, as SQLite expects for
/// `zErrMsg` fields and `pzErrMsg` out-parameters.
pub fn sqlite_string(message: &str) -> *mut c_char {
    let bytes = message.replace('\0', " ");
    // SAFETY: we allocate len+1 bytes and write exactly that many.
    unsafe {
        let p = api!(malloc)((bytes.len() + 1) as c_int).cast::<u8>();
        if p.is_null() {
            return ptr::null_mut();
        }
        ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        *p.add(bytes.len()) = 0;
        p.cast::<c_char>()
    }
}

/// Runs a callback body, turning a panic into an error message, so that no panic
/// ever unwinds into SQLite's C frames.
pub fn guard<T, E: std::fmt::Display>(f: impl FnOnce() -> Result<T, E>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(panicked(&panic)),
    }
}

/// [`guard`] keeping the error's result code (see [`ResultCode`]).
pub fn guard_coded<T, E: ResultCode>(
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, (c_int, String)> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((e.result_code(), e.to_string())),
        Err(panic) => Err((SQLITE_ERROR, panicked(&panic))),
    }
}

fn panicked(panic: &Box<dyn Any + Send>) -> String {
    format!("sdsync: internal error (panic: {})", panic_text(panic))
}

fn panic_text(panic: &Box<dyn Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown".into())
}

/// Sets a function or column result from an owned value.
pub fn result_value(ctx: *mut sqlite3ext_sys::sqlite3_context, value: &Value) {
    use sqlite_loadable::api;
    match value {
        Value::Null => api::result_null(ctx),
        Value::Integer(v) => api::result_int64(ctx, *v),
        Value::Real(v) => api::result_double(ctx, *v),
        Value::Text(s) => {
            if api::result_text(ctx, s).is_err() {
                api::result_error_code(ctx, SQLITE_ERROR);
            }
        }
        Value::RawText(b) => {
            // SAFETY: ctx is the live context of this call; SQLite copies the bytes
            // (SQLITE_TRANSIENT) before returning.
            unsafe {
                api!(result_text)(
                    ctx,
                    b.as_ptr().cast::<c_char>(),
                    b.len() as c_int,
                    transient(),
                )
            }
        }
        Value::Blob(b) => api::result_blob(ctx, b),
    }
}

/// Ends an `xConnect`: hands SQLite the new table, or the error message.
pub fn finish_connect<T>(
    result: Result<*mut T, String>,
    pp_vtab: *mut *mut sqlite3ext_sys::sqlite3_vtab,
    pz_err: *mut *mut c_char,
) -> c_int {
    match result {
        Ok(table) => {
            // SAFETY: out-parameter from SQLite; `T` starts with its sqlite3_vtab.
            unsafe { *pp_vtab = table.cast::<sqlite3ext_sys::sqlite3_vtab>() };
            SQLITE_OK
        }
        Err(message) => {
            // SAFETY: out-parameter from SQLite, to be freed by it.
            unsafe { *pz_err = sqlite_string(&message) };
            SQLITE_ERROR
        }
    }
}

/// Sets a virtual table's error message (`zErrMsg`), as SQLite expects.
pub fn set_vtab_error(vtab: *mut sqlite3ext_sys::sqlite3_vtab, message: &str) {
    // SAFETY: vtab is live; the old message (from sqlite3_malloc) is freed once.
    unsafe {
        if !(*vtab).zErrMsg.is_null() {
            api!(free)((*vtab).zErrMsg.cast::<std::ffi::c_void>());
        }
        (*vtab).zErrMsg = sqlite_string(message);
    }
}
