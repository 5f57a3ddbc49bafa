//! A small safe layer over the SQLite C API the host hands to the extension.
//!
//! ```ignore
//! let db = Db::from_raw(handle);
//! let mut stmt = db.prepare("SELECT seq FROM sdsync_clock")?;
//! let seq = if stmt.step()? { stmt.int(0) } else { 0 };
//! ```
//!
//! Why our own layer: sqlite-loadable wraps values and results but not statements,
//! and a loadable extension must call SQLite only through the `sqlite3_api_routines`
//! table it receives at load time (it must not link its own SQLite). Every call here
//! goes through that table.

use std::cell::Cell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use sqlite3ext_sys::{sqlite3, sqlite3_api_routines, sqlite3_stmt, sqlite3_value};

mod callback;

pub use callback::{
    finish_connect, guard, guard_coded, result_value, set_vtab_error, sqlite_string,
};

/// The host's API table, set once by the entry point before anything else runs.
static API: AtomicPtr<sqlite3_api_routines> = AtomicPtr::new(ptr::null_mut());

/// Records the host's API table (from `sqlite3_sdsync_init`).
pub fn set_api(api: *mut sqlite3_api_routines) {
    if !api.is_null() {
        API.store(api, Ordering::Release);
    }
}

/// Looks up one routine of the host's API table. Invariant: the entry point stored
/// the table before any other code of the extension runs, and the routines used
/// here all exist since SQLite 3.7, far below the 3.40 minimum we support.
macro_rules! api {
    ($name:ident) => {
        $crate::ffi::routines()
            .$name
            .expect(concat!("sqlite3 API routine missing: ", stringify!($name)))
    };
}
pub(crate) use api;

/// The host's API table. Invariant: set by the entry point before any other code
/// of the extension runs (SQLite calls nothing of ours before it returns).
pub fn routines() -> &'static sqlite3_api_routines {
    let table = API.load(Ordering::Acquire);
    assert!(
        !table.is_null(),
        "sdsync: SQLite API used before sqlite3_sdsync_init"
    );
    // SAFETY: non-null, from SQLite, valid for the life of the process.
    unsafe { &*table }
}

/// Result codes used by the extension.
pub const SQLITE_OK: c_int = 0;
/// Generic error.
pub const SQLITE_ERROR: c_int = 1;
/// SQLite's "database is busy": what a caller retries later.
pub const SQLITE_BUSY: c_int = 5;
/// `sqlite3_step` has a row.
pub const SQLITE_ROW: c_int = 100;
/// `sqlite3_step` finished.
pub const SQLITE_DONE: c_int = 101;

/// Whether a result code is about the environment (busy, locked, out of memory,
/// interrupted, I/O, disk full, cannot open, lock protocol) rather than the data.
/// Callers retry those, so they must reach them as SQLite gave them: reported
/// as a plain SQLITE_ERROR, an interrupted apply was quarantined as if the
/// change itself were bad.
pub fn is_transient(code: c_int) -> bool {
    matches!(code & 0xff, 5 | 6 | 7 | 9 | 10 | 13 | 14 | 15)
}

thread_local! {
    /// The last transient result code a statement of the extension met on this
    /// thread: SQL functions report errors as text, so `functions::invoke` takes
    /// this to give the caller the real code (see [`take_transient`]).
    static TRANSIENT: Cell<c_int> = const { Cell::new(0) };
}

/// Forgets any transient failure noted so far (a callback starts).
pub fn clear_transient() {
    TRANSIENT.with(|t| t.set(0));
}

/// The transient result code met since [`clear_transient`], if any.
pub fn take_transient() -> Option<c_int> {
    TRANSIENT.with(|t| Some(t.replace(0)).filter(|c| *c != 0))
}

/// The result code a callback returns for an error: a transient one keeps its
/// code, anything else is SQLITE_ERROR (the message says what).
pub trait ResultCode: std::fmt::Display {
    /// The code to return to SQLite.
    fn result_code(&self) -> c_int {
        SQLITE_ERROR
    }
}

impl ResultCode for String {}

impl ResultCode for SqlError {
    fn result_code(&self) -> c_int {
        if is_transient(self.code) {
            self.code
        } else {
            SQLITE_ERROR
        }
    }
}

/// An SQLite call that failed, with the statement it ran.
#[derive(Debug, thiserror::Error)]
#[error("{message} (while running: {sql})")]
pub struct SqlError {
    /// SQLite's result code.
    pub code: c_int,
    /// SQLite's error message.
    pub message: String,
    /// The SQL being run, for context.
    pub sql: String,
}

/// A borrowed database handle.
#[derive(Clone, Copy, Debug)]
pub struct Db(*mut sqlite3);

impl Db {
    /// Wraps a handle SQLite passed to a callback.
    pub fn from_raw(raw: *mut sqlite3) -> Self {
        Self(raw)
    }

    /// The connection's last error message.
    pub fn errmsg(self) -> String {
        // SAFETY: errmsg returns a NUL-terminated string owned by the connection.
        unsafe { text_of(api!(errmsg)(self.0)) }
    }

    fn error(self, code: c_int, sql: &str) -> SqlError {
        if is_transient(code) {
            TRANSIENT.with(|t| t.set(code));
        }
        SqlError {
            code,
            message: self.errmsg(),
            sql: sql.to_string(),
        }
    }

    /// This connection holds a write transaction on `main`: what it reads may
    /// still be rolled back.
    pub fn writing(self) -> bool {
        const SQLITE_TXN_WRITE: c_int = 2;
        // SAFETY: valid handle and a NUL-terminated schema name.
        unsafe { api!(txn_state)(self.0, c"main".as_ptr()) == SQLITE_TXN_WRITE }
    }

    /// Prepares one statement.
    pub fn prepare(self, sql: &str) -> Result<Stmt, SqlError> {
        let c_sql = CString::new(sql).map_err(|_| SqlError {
            code: SQLITE_ERROR,
            message: "SQL contains a NUL byte".into(),
            sql: sql.to_string(),
        })?;
        let mut raw = ptr::null_mut();
        // SAFETY: valid handle and NUL-terminated SQL; SQLite fills `raw`.
        let rc = unsafe { api!(prepare_v2)(self.0, c_sql.as_ptr(), -1, &mut raw, ptr::null_mut()) };
        if rc != SQLITE_OK {
            return Err(self.error(rc, sql));
        }
        Ok(Stmt {
            raw,
            db: self,
            sql: sql.to_string(),
        })
    }

    /// Runs one or more statements that return no rows we need.
    pub fn exec(self, sql: &str) -> Result<(), SqlError> {
        let c_sql = CString::new(sql).map_err(|_| SqlError {
            code: SQLITE_ERROR,
            message: "SQL contains a NUL byte".into(),
            sql: sql.to_string(),
        })?;
        let mut err: *mut c_char = ptr::null_mut();
        // SAFETY: valid handle; SQLite allocates `err` with sqlite3_malloc.
        let rc = unsafe { api!(exec)(self.0, c_sql.as_ptr(), None, ptr::null_mut(), &mut err) };
        if rc == SQLITE_OK {
            return Ok(());
        }
        if is_transient(rc) {
            TRANSIENT.with(|t| t.set(rc));
        }
        let message = if err.is_null() {
            self.errmsg()
        } else {
            // SAFETY: err is a NUL-terminated string from sqlite3_malloc, freed once.
            let m = unsafe { text_of(err) };
            unsafe { api!(free)(err.cast::<c_void>()) };
            m
        };
        Err(SqlError {
            code: rc,
            message,
            sql: sql.to_string(),
        })
    }

    /// Whether no transaction is open: after a statement failed, whether
    /// SQLite rolled the whole transaction back (an `ON CONFLICT ROLLBACK`
    /// clause, a trigger's `RAISE(ROLLBACK)`), so nothing more may be written.
    pub fn autocommit(self) -> bool {
        // SAFETY: valid handle.
        unsafe { api!(get_autocommit)(self.0) != 0 }
    }

    /// The raw handle, for the few calls this module does not wrap.
    pub fn raw(self) -> *mut sqlite3 {
        self.0
    }

    /// Rows the last finished INSERT, UPDATE or DELETE changed.
    pub fn changes(self) -> i64 {
        // SAFETY: valid handle.
        i64::from(unsafe { api!(changes)(self.0) })
    }

    /// `main`'s data version (`SQLITE_FCNTL_DATA_VERSION`): it moves with
    /// every commit to the file, this connection's or any other's, and stays
    /// put within a transaction and across a rollback. A file-control call,
    /// not a statement: cheap enough to ask once per captured row.
    pub fn data_version(self) -> Option<u32> {
        const SQLITE_FCNTL_DATA_VERSION: c_int = 35;
        let mut version: u32 = 0;
        // SAFETY: valid handle, NUL-terminated schema name, and a u32 out-parameter
        // as this opcode requires.
        let rc = unsafe {
            api!(file_control)(
                self.0,
                c"main".as_ptr(),
                SQLITE_FCNTL_DATA_VERSION,
                (&raw mut version).cast::<c_void>(),
            )
        };
        (rc == SQLITE_OK).then_some(version)
    }

    /// The rowid of the last row this connection inserted.
    pub fn last_insert_rowid(self) -> i64 {
        // SAFETY: valid handle.
        unsafe { api!(last_insert_rowid)(self.0) }
    }

    /// Runs a query expected to give one integer (or none).
    pub fn query_i64(self, sql: &str, params: &[Value]) -> Result<Option<i64>, SqlError> {
        let mut stmt = self.prepare(sql)?;
        stmt.bind_all(params)?;
        Ok(if stmt.step()? {
            Some(stmt.int(0))
        } else {
            None
        })
    }

    /// Runs a query expected to give one text value (or none).
    pub fn query_text(self, sql: &str, params: &[Value]) -> Result<Option<String>, SqlError> {
        let mut stmt = self.prepare(sql)?;
        stmt.bind_all(params)?;
        Ok(if stmt.step()? { stmt.text(0) } else { None })
    }
}

/// A prepared statement, finalized on drop.
pub struct Stmt {
    raw: *mut sqlite3_stmt,
    db: Db,
    sql: String,
}

/// An SQLite value, owned.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// NULL.
    Null,
    /// INTEGER.
    Integer(i64),
    /// REAL.
    Real(f64),
    /// TEXT.
    Text(String),
    /// TEXT whose bytes are not valid UTF-8: SQLite stores whatever bytes a client
    /// binds as text (e.g. `CAST(x'ff00fe' AS TEXT)`), and a sync engine must hand
    /// them on unaltered, so they are kept as bytes rather than made lossy.
    RawText(Vec<u8>),
    /// BLOB.
    Blob(Vec<u8>),
}

/// Values in messages: text as is, other values as SQL literals would show them.
impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Integer(v) => write!(f, "{v}"),
            Value::Real(v) => write!(f, "{v}"),
            Value::Text(s) => f.write_str(s),
            Value::RawText(b) => write!(
                f,
                "CAST(x'{}' AS TEXT)",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            ),
            Value::Blob(b) => write!(
                f,
                "x'{}'",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            ),
        }
    }
}

impl Stmt {
    fn check(&self, rc: c_int) -> Result<(), SqlError> {
        if rc == SQLITE_OK {
            Ok(())
        } else {
            Err(self.db.error(rc, &self.sql))
        }
    }

    /// Binds one parameter (1-based) with the given destructor.
    ///
    /// # Safety
    /// With `None` (SQLITE_STATIC), `value` must stay alive and unmoved until
    /// the binding is replaced or cleared.
    unsafe fn bind_with(
        &mut self,
        i: usize,
        value: &Value,
        destructor: Option<unsafe extern "C" fn(*mut c_void)>,
    ) -> Result<(), SqlError> {
        let i = i as c_int;
        // SAFETY: raw is a live statement; the caller vouches for the buffers.
        let rc = unsafe {
            match value {
                Value::Null => api!(bind_null)(self.raw, i),
                Value::Integer(v) => api!(bind_int64)(self.raw, i, *v),
                Value::Real(v) => api!(bind_double)(self.raw, i, *v),
                Value::Text(s) => api!(bind_text)(
                    self.raw,
                    i,
                    s.as_ptr().cast::<c_char>(),
                    s.len() as c_int,
                    destructor,
                ),
                Value::RawText(b) => api!(bind_text)(
                    self.raw,
                    i,
                    b.as_ptr().cast::<c_char>(),
                    b.len() as c_int,
                    destructor,
                ),
                Value::Blob(b) => api!(bind_blob)(
                    self.raw,
                    i,
                    b.as_ptr().cast::<c_void>(),
                    b.len() as c_int,
                    destructor,
                ),
            }
        };
        self.check(rc)
    }

    /// Binds parameters 1..=n, after resetting the statement.
    pub fn bind_all(&mut self, values: &[Value]) -> Result<(), SqlError> {
        // SAFETY: SQLite copies text and blobs (SQLITE_TRANSIENT).
        unsafe { self.reset_and_bind(values, transient()) }
    }

    /// Resets the statement and binds parameters 1..=n with `destructor`.
    ///
    /// # Safety
    /// As [`Self::bind_with`].
    unsafe fn reset_and_bind(
        &mut self,
        values: &[Value],
        destructor: Option<unsafe extern "C" fn(*mut c_void)>,
    ) -> Result<(), SqlError> {
        self.reset();
        for (i, v) in values.iter().enumerate() {
            // SAFETY: the caller vouches for the buffers.
            unsafe { self.bind_with(i + 1, v, destructor)? };
        }
        Ok(())
    }

    /// Steps once: `true` when a row is available.
    pub fn step(&mut self) -> Result<bool, SqlError> {
        // SAFETY: raw is a live statement.
        match unsafe { api!(step)(self.raw) } {
            SQLITE_ROW => Ok(true),
            SQLITE_DONE => Ok(false),
            rc => {
                let err = self.db.error(rc, &self.sql);
                self.reset();
                Err(err)
            }
        }
    }

    /// Steps to completion (for writes). Text and blobs are bound without a
    /// copy (apply writes several per change; SQLite's copies were a visible
    /// part of its allocations) and the bindings are cleared before returning,
    /// so the statement never points at `values` after this call.
    pub fn run(&mut self, values: &[Value]) -> Result<(), SqlError> {
        // SAFETY: `values` outlives the steps below, and the bindings are
        // cleared before this function returns, on every path.
        let result = unsafe { self.reset_and_bind(values, None) }.and_then(|()| {
            while self.step()? {}
            Ok(())
        });
        self.reset();
        // SAFETY: raw is a live statement.
        unsafe { api!(clear_bindings)(self.raw) };
        result
    }

    /// The SQL it was prepared from.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Resets the statement so it can run again (bindings stay).
    pub fn reset(&mut self) {
        // SAFETY: raw is a live statement. Errors were reported by step already.
        unsafe { api!(reset)(self.raw) };
    }

    /// Column as integer.
    pub fn int(&self, i: usize) -> i64 {
        // SAFETY: raw is a live statement positioned on a row.
        unsafe { api!(column_int64)(self.raw, i as c_int) }
    }

    /// Column as text (`None` for NULL).
    pub fn text(&self, i: usize) -> Option<String> {
        match self.value(i) {
            Value::Null => None,
            Value::Text(s) => Some(s),
            Value::Integer(v) => Some(v.to_string()),
            Value::Real(v) => Some(v.to_string()),
            Value::RawText(b) | Value::Blob(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        }
    }

    /// Column as an owned value.
    pub fn value(&self, i: usize) -> Value {
        let i = i as c_int;
        // SAFETY: raw is a live statement positioned on a row; pointers returned by
        // column_text/blob stay valid until the next step/reset, and are copied here.
        unsafe {
            match api!(column_type)(self.raw, i) {
                1 => Value::Integer(api!(column_int64)(self.raw, i)),
                2 => Value::Real(api!(column_double)(self.raw, i)),
                3 => {
                    let p = api!(column_text)(self.raw, i);
                    let n = api!(column_bytes)(self.raw, i) as usize;
                    text_value(slice(p, n))
                }
                4 => {
                    let p = api!(column_blob)(self.raw, i).cast::<u8>();
                    let n = api!(column_bytes)(self.raw, i) as usize;
                    Value::Blob(slice(p, n).to_vec())
                }
                _ => Value::Null,
            }
        }
    }
}

impl Drop for Stmt {
    fn drop(&mut self) {
        // SAFETY: raw was prepared by us and is finalized exactly once.
        unsafe { api!(finalize)(self.raw) };
    }
}

/// Reads a raw argument value into an owned value.
pub fn value_of(v: *mut sqlite3_value) -> Value {
    // SAFETY: v comes from SQLite for the duration of the callback; data is copied.
    unsafe {
        match api!(value_type)(v) {
            1 => Value::Integer(api!(value_int64)(v)),
            2 => Value::Real(api!(value_double)(v)),
            3 => {
                let p = api!(value_text)(v);
                let n = api!(value_bytes)(v) as usize;
                text_value(slice(p, n))
            }
            4 => {
                let p = api!(value_blob)(v).cast::<u8>();
                let n = api!(value_bytes)(v) as usize;
                Value::Blob(slice(p, n).to_vec())
            }
            _ => Value::Null,
        }
    }
}

/// TEXT bytes as a value: `Text` when they are UTF-8, `RawText` (unaltered) when not.
fn text_value(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::Text(s.to_string()),
        Err(_) => Value::RawText(bytes.to_vec()),
    }
}

/// A byte slice from an SQLite pointer (empty for NULL).
unsafe fn slice<'a>(p: *const u8, n: usize) -> &'a [u8] {
    if p.is_null() || n == 0 {
        &[]
    } else {
        // SAFETY: caller passes a pointer/length pair from SQLite.
        unsafe { std::slice::from_raw_parts(p, n) }
    }
}

/// A NUL-terminated C string as owned text.
unsafe fn text_of(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: caller passes a NUL-terminated string from SQLite.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// SQLITE_TRANSIENT: SQLite copies the data before the call returns.
pub(crate) fn transient() -> Option<unsafe extern "C" fn(*mut c_void)> {
    // SAFETY: SQLITE_TRANSIENT is defined as ((sqlite3_destructor_type)-1); SQLite
    // compares the pointer and never calls it.
    unsafe { std::mem::transmute::<isize, Option<unsafe extern "C" fn(*mut c_void)>>(-1) }
}
