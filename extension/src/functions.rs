//! The SQL functions of the extension.
//!
//! ```sql
//! SELECT sdsync_version();
//! SELECT sdsync_uuid_v5('tag', 'Vacation');      -- same id on every device
//! SELECT sdsync_hlc_text(sdsync_hlc_now());      -- '2026-11-22T03:00:00.123Z#0'
//! ```
//!
//! Flags (tested under `PRAGMA trusted_schema=OFF`): functions with side effects
//! (`sdsync_track`, `sdsync_hlc_now`, `sdsync_device_id`, …) are DIRECTONLY, so no
//! schema object (view, trigger, default) planted in a database can call them; the
//! functions the capture triggers call are side-effect free and INNOCUOUS, which is
//! what lets persistent triggers call them with `trusted_schema=OFF`.

use std::cell::Cell;
use std::ffi::{CStr, CString, c_int, c_void};
use std::rc::Rc;

use sqlite_loadable::FunctionFlags;
use sqlite3ext_sys::{sqlite3, sqlite3_context, sqlite3_value};

use sdsync_core::hlc::{Hlc, wall_millis};
use sdsync_core::ids::{uuid_v5, uuid_v7};

use crate::ffi::{Db, SQLITE_OK, Value, api, guard, result_value, value_of};
use crate::{store, track};

/// Per-connection state shared by the functions and the `sdsync_changes` table.
#[derive(Default)]
pub struct Conn {
    /// True while `sdsync_changes` applies a peer's change: the triggers then do not
    /// capture (no echo, DESIGN.md §2.6).
    pub applying: Cell<bool>,
    /// A fixed wall clock for deterministic simulation (`sdsync_test_clock`).
    pub wall_override: Cell<Option<u64>>,
    /// The DDL this connection ran (see `migrate::watch`).
    pub watch: crate::migrate::watch::Watch,
    /// Rows of tracked tables this connection wrote outside apply (each
    /// capture trigger that fired): apply looks for parked changes such a
    /// write let go only when it moved (see `apply::Engine::refresh`).
    pub local_writes: Cell<u64>,
    /// The last sequence number capture on this connection issued, if any
    /// (see `next_hlc`): set by its first call whatever the clock, so a
    /// first change rolled back, or one made while the clock was behind the
    /// wall clock, leaves later ones on this connection without a step.
    pub issued: Cell<Option<i64>>,
    /// What the clock bump of the change being captured issued: its
    /// sequence number and HLC, and the `local_writes` count of its row.
    /// The trigger reads them with `sdsync_bumped` in its next statement,
    /// where a subquery on the clock row cost about 3 % of a bulk update's
    /// capture (README "Performance"); the count ties them to this row, so
    /// a bump that did not run (no clock row) fails the write instead of
    /// repeating the previous change's number.
    pub bumped: Cell<Option<(i64, i64, u64)>>,
    /// Backpressure after its commits (see `pace`).
    pub pace: crate::pace::Pace,
    /// The last change this connection issued, and `main`'s data version
    /// then (see [`issue`]): while that version holds, no other connection
    /// has committed, so the next change follows it without reading the
    /// clock row or the log. Forgotten by anything in the extension that
    /// moves the clock itself (apply, repairs, restores).
    pub stamp: Cell<Option<Stamp>>,
    /// An ATTACH was seen on this connection: [`Conn::stamp`] is keyed to
    /// `main`'s data version, which says nothing of an attached library's
    /// commits, so it is not kept (every change reads the clock).
    pub attached: Cell<bool>,
    /// Set by `sdsync_capturing()` for the row a capture trigger is about
    /// to record, taken by its clock bump: a call of the bump functions
    /// from other SQL computes a value but moves nothing (no stamp, no
    /// record of issued numbers).
    pub bump_due: Cell<bool>,
}

/// See [`Conn::stamp`].
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    version: u32,
    seq: i64,
    hlc: i64,
}

impl Conn {
    /// The wall clock in milliseconds (the test clock when one is set).
    pub fn wall_ms(&self) -> u64 {
        self.wall_override.get().unwrap_or_else(wall_millis)
    }

    /// Forgets [`Conn::stamp`]: the clock moved other than by capture.
    pub fn forget_stamp(&self) {
        self.stamp.set(None);
    }
}

/// One call: the connection and the arguments.
struct Call<'a> {
    db: Db,
    args: Vec<Value>,
    conn: &'a Conn,
}

impl Call<'_> {
    fn text(&self, i: usize, what: &str) -> Result<String, String> {
        match self.args.get(i) {
            Some(Value::Text(s)) => Ok(s.clone()),
            _ => Err(format!("{what} must be text")),
        }
    }

    fn int(&self, i: usize, what: &str) -> Result<i64, String> {
        match self.args.get(i) {
            Some(Value::Integer(v)) => Ok(*v),
            _ => Err(format!("{what} must be an integer")),
        }
    }
}

type Body = fn(&Call) -> Result<Value, String>;

const PURE: i32 = 0;
const INNOCUOUS: i32 = 1;
const DIRECT: i32 = 2;

/// Name, argument count, safety class, body.
const FUNCTIONS: &[(&str, i32, i32, Body)] = &[
    ("sdsync_version", 0, PURE, |_| {
        Ok(Value::Text(env!("CARGO_PKG_VERSION").into()))
    }),
    ("sdsync_capturing", 0, INNOCUOUS, |c| {
        let capturing = !c.conn.applying.get();
        if capturing {
            if let Some(table) = c.conn.watch.dropping(c.db) {
                return Err(refuse_cascading_drop(&table));
            }
            let n = &c.conn.local_writes;
            n.set(n.get().wrapping_add(1));
            c.conn.bump_due.set(true);
        }
        Ok(Value::Integer(i64::from(capturing)))
    }),
    ("sdsync_wall", 0, INNOCUOUS, |c| {
        Ok(Value::Integer(Hlc::from_wall(c.conn.wall_ms()).as_i64()))
    }),
    ("sdsync_next_hlc", 2, INNOCUOUS, next_hlc),
    // Format 10's name for it: an older extension lacks it, so its writes to
    // a format-10 library fail closed instead of numbering past the log.
    ("sdsync_next_stamp", 2, INNOCUOUS, next_hlc),
    ("sdsync_stamp", 0, INNOCUOUS, stamp),
    // Read by the watermark view (see `fold::FORMAT_10`).
    ("sdsync_logging", 0, PURE, |_| Ok(Value::Integer(1))),
    ("sdsync_refuse_seq", 1, INNOCUOUS, |c| {
        Err(format!(
            "sdsync: internal error: sequence number {} issued twice; the write is refused",
            c.int(0, "seq")?
        ))
    }),
    ("sdsync_fold", 0, DIRECT, |c| fold(c, None)),
    ("sdsync_fold", 1, DIRECT, |c| {
        let limit = c.int(0, "sdsync_fold: how many log entries at most")?;
        fold(c, Some(limit))
    }),
    ("sdsync_uuid", 0, INNOCUOUS, |_| Ok(Value::Text(uuid_v7()))),
    ("sdsync_uuid_v5", 2, PURE, uuid_v5_fn),
    ("sdsync_hlc_text", 1, PURE, hlc_text),
    ("sdsync_refuse", 3, INNOCUOUS, refuse_foreign_write),
    ("sdsync_refuse_rekey", 3, INNOCUOUS, refuse_rekey),
    ("sdsync_foreign_keys", 0, INNOCUOUS, |c| {
        Ok(Value::Integer(
            c.db.query_i64("PRAGMA foreign_keys", &[])
                .map_err(|e| e.to_string())?
                .unwrap_or(0),
        ))
    }),
    ("sdsync_refuse_dangling", 4, INNOCUOUS, refuse_dangling),
    ("sdsync_refuse_row", 2, INNOCUOUS, |c| {
        let table = c.text(0, "table")?;
        Err(crate::values::unsyncable_row(
            c.db,
            &table,
            c.int(1, "rid")?,
        ))
    }),
    ("sdsync_hlc_now", 0, DIRECT, |c| {
        Ok(Value::Integer(
            store::hlc_now(c.db, c.conn.wall_ms())
                .map_err(|e| e.to_string())?
                .as_i64(),
        ))
    }),
    ("sdsync_device_id", 0, DIRECT, |c| {
        Ok(Value::Text(
            store::device_id(c.db).map_err(|e| e.to_string())?,
        ))
    }),
    ("sdsync_reidentify", 0, DIRECT, reidentify),
    ("sdsync_reidentify", 1, DIRECT, reidentify),
    ("sdsync_test_clock", 1, DIRECT, test_clock),
    ("sdsync_pace", 1, DIRECT, |c| {
        let on = c.int(0, "on")? != 0;
        c.conn.pace.off.set(!on);
        Ok(Value::Integer(i64::from(on)))
    }),
    ("sdsync_paced", 0, DIRECT, |c| {
        let us = c.conn.pace.waited_us.get();
        Ok(Value::Integer(i64::try_from(us).unwrap_or(i64::MAX)))
    }),
    ("sdsync_track", 2, DIRECT, track_fn),
    ("sdsync_track", 3, DIRECT, track_fn),
    ("sdsync_untrack", 1, DIRECT, |c| {
        Ok(Value::Text(
            track::untrack(c.db, &c.text(0, "table")?).map_err(|e| e.to_string())?,
        ))
    }),
    ("sdsync_mark_complete", 2, DIRECT, mark_complete),
    ("sdsync_alter", 1, DIRECT, |c| {
        crate::migrate::alter(
            c.db,
            &c.text(0, "sdsync_alter: sql")?,
            c.conn.wall_ms(),
            &c.conn.watch,
        )
        .map(Value::Text)
        .map_err(|e| e.to_string())
    }),
    ("sdsync_restamp", 1, DIRECT, |c| restamp(c, 0)),
    ("sdsync_restamp", 2, DIRECT, |c| {
        restamp(c, c.int(1, "sdsync_restamp: clock floor (an HLC)")?)
    }),
    ("sdsync_autocheckpoint", 1, DIRECT, |c| {
        let pages = c.int(0, "sdsync_autocheckpoint: WAL pages")?;
        let pages = i32::try_from(pages.max(0)).unwrap_or(i32::MAX);
        Ok(Value::Integer(i64::from(
            c.conn.watch.set_checkpoint_at(pages),
        )))
    }),
    ("sdsync_repair", 0, DIRECT, |c| {
        c.conn
            .watch
            .repair_here(|| crate::migrate::repair_if_needed(c.db, c.conn.wall_ms()))
            .map(|done| Value::Text(done.join("; ")))
            .map_err(|e| e.to_string())
    }),
];

/// What one registered function holds: the connection's state and its body.
/// Freed by SQLite (through `drop_registered`) when the connection closes; a
/// registration without a destructor leaked this for every connection opened.
struct Registered {
    conn: Rc<Conn>,
    body: Body,
    /// A direct-only function: called by the app or the syncer, never by a
    /// trigger. Those that move the clock (restores, identity, repairs,
    /// tracking) are among them, so each call forgets [`Conn::stamp`].
    direct: bool,
}

/// Registers every function on a connection.
pub fn register(db: *mut sqlite3, conn: &Rc<Conn>) -> Result<(), String> {
    for &(name, nargs, class, body) in FUNCTIONS {
        let flags = FunctionFlags::UTF8
            | match class {
                PURE => FunctionFlags::DETERMINISTIC | FunctionFlags::INNOCUOUS,
                INNOCUOUS => FunctionFlags::INNOCUOUS,
                _ => FunctionFlags::DIRECTONLY,
            };
        let registered = Box::into_raw(Box::new(Registered {
            conn: conn.clone(),
            body,
            direct: class == DIRECT,
        }));
        let cname = CString::new(name).map_err(|e| e.to_string())?;
        let data = registered.cast::<c_void>();
        create_function(
            db,
            &cname,
            nargs,
            flags,
            data,
            invoke,
            Some(drop_registered),
        )?;
    }
    register_row_bytes(db)?;
    register_bumped(db, conn)
}

type XFunc = unsafe extern "C" fn(*mut sqlite3_context, c_int, *mut *mut sqlite3_value);

/// Registers one function on `db`. SQLite owns `data` (null for none) from
/// here and frees it with `destroy`, also when registration fails.
fn create_function(
    db: *mut sqlite3,
    name: &CStr,
    nargs: c_int,
    flags: FunctionFlags,
    data: *mut c_void,
    func: XFunc,
    destroy: Option<unsafe extern "C" fn(*mut c_void)>,
) -> Result<(), String> {
    // SAFETY: valid handle and NUL-terminated name; `data` and `destroy` as
    // the caller says.
    let rc = unsafe {
        api!(create_function_v2)(
            db,
            name.as_ptr(),
            nargs,
            flags.bits(),
            data,
            Some(func),
            None,
            None,
            destroy,
        )
    };
    if rc == SQLITE_OK {
        Ok(())
    } else {
        Err(format!(
            "registering {} failed (code {rc})",
            name.to_string_lossy()
        ))
    }
}

/// `sdsync_row_bytes(v, ...)`: the size of a row's values as the row size limit
/// counts it (TEXT and BLOB bytes, 8 per number, 0 for NULL), in one call with no
/// copies. The capture triggers call it on every insert and update; summing
/// `length(CAST(v AS BLOB))` per column in SQL cost about 10 % of a bulk update.
fn register_row_bytes(db: *mut sqlite3) -> Result<(), String> {
    let flags = FunctionFlags::UTF8 | FunctionFlags::DETERMINISTIC | FunctionFlags::INNOCUOUS;
    let none = std::ptr::null_mut();
    create_function(db, c"sdsync_row_bytes", -1, flags, none, row_bytes, None)
}

unsafe extern "C" fn row_bytes(
    ctx: *mut sqlite3_context,
    argc: c_int,
    argv: *mut *mut sqlite3_value,
) {
    const TEXT: c_int = 3;
    const BLOB: c_int = 4;
    const NULL: c_int = 5;
    let total = std::panic::catch_unwind(|| {
        (0..argc.max(0) as usize)
            .map(|i| {
                // SAFETY: argv holds argc values valid for this call; reading a
                // TEXT value's byte count converts nothing (stored as UTF-8).
                let v = unsafe { *argv.add(i) };
                match unsafe { api!(value_type)(v) } {
                    TEXT | BLOB => i64::from(unsafe { api!(value_bytes)(v) }),
                    NULL => 0,
                    _ => 8,
                }
            })
            .sum::<i64>()
    })
    // No panic is possible above; were one to happen, refuse the row rather than
    // let an unchecked one through.
    .unwrap_or(i64::MAX);
    // SAFETY: valid context for this call.
    unsafe { api!(result_int64)(ctx, total) };
}

/// `sdsync_bumped(0)` is the sequence number the clock bump just issued for
/// the row being captured, `sdsync_bumped(1)` its HLC (see [`Conn::bumped`]).
/// Called twice per captured row, so registered apart from [`FUNCTIONS`]:
/// no argument copies, no allocation.
fn register_bumped(db: *mut sqlite3, conn: &Rc<Conn>) -> Result<(), String> {
    let flags = FunctionFlags::UTF8 | FunctionFlags::INNOCUOUS;
    let data = Rc::into_raw(conn.clone()).cast_mut().cast::<c_void>();
    create_function(
        db,
        c"sdsync_bumped",
        1,
        flags,
        data,
        bumped,
        Some(drop_conn),
    )
}

unsafe extern "C" fn bumped(ctx: *mut sqlite3_context, argc: c_int, argv: *mut *mut sqlite3_value) {
    let read = std::panic::catch_unwind(|| {
        // SAFETY: the user data is the `Conn` given at registration, alive
        // until SQLite calls `drop_conn`; argv holds argc (1) values.
        let conn = unsafe { &*api!(user_data)(ctx).cast::<Conn>() };
        let hlc = argc == 1 && unsafe { api!(value_int64)(*argv) } == 1;
        match conn.bumped.get() {
            Some((seq, at, row)) if row == conn.local_writes.get() => {
                Some(if hlc { at } else { seq })
            }
            _ => None,
        }
    });
    match read {
        // SAFETY: valid context for this call.
        Ok(Some(v)) => unsafe { api!(result_int64)(ctx, v) },
        _ => {
            let message = NO_BUMP;
            // SAFETY: SQLite copies the message (length given).
            unsafe { api!(result_error)(ctx, message.as_ptr().cast(), message.len() as c_int) };
        }
    }
}

/// A capture trigger's clock bump that did not run: the write is refused.
const NO_BUMP: &str = "sdsync: internal error: no clock bump for the row being captured \
                       (is the sdsync_clock row missing?)";

/// Releases a connection's state handed to SQLite with `Rc::into_raw` (as
/// a function's or a module's user data), once SQLite is done with it.
pub(crate) unsafe extern "C" fn drop_conn(p: *mut c_void) {
    let _ = guard(|| {
        // SAFETY: `p` is a pointer made with Rc::into_raw, released once.
        drop(unsafe { Rc::from_raw(p.cast::<Conn>()) });
        Ok::<(), String>(())
    });
}

unsafe extern "C" fn drop_registered(p: *mut c_void) {
    let _ = guard(|| {
        // SAFETY: `p` is the pointer `register` made with Box::into_raw, freed once.
        drop(unsafe { Box::from_raw(p.cast::<Registered>()) });
        Ok::<(), String>(())
    });
}

/// The callback behind every function: converts arguments, runs the body with
/// panics caught, and reports the result or error to SQLite.
unsafe extern "C" fn invoke(ctx: *mut sqlite3_context, argc: c_int, argv: *mut *mut sqlite3_value) {
    crate::ffi::clear_transient();
    let outcome = guard(|| {
        // SAFETY: the user data is the `Registered` given at registration, alive
        // until SQLite calls its destructor; argv holds argc values.
        let registered = unsafe { &*api!(user_data)(ctx).cast::<Registered>() };
        if registered.direct {
            registered.conn.forget_stamp();
        }
        let args = (0..argc.max(0) as usize)
            .map(|i| value_of(unsafe { *argv.add(i) }))
            .collect();
        let call = Call {
            db: Db::from_raw(unsafe { api!(context_db_handle)(ctx) }),
            args,
            conn: &registered.conn,
        };
        (registered.body)(&call)
    });
    match outcome {
        Ok(value) => result_value(ctx, &value),
        Err(message) => {
            let len = c_int::try_from(message.len()).unwrap_or(c_int::MAX);
            // SAFETY: SQLite copies the message (length given, no NUL needed).
            unsafe { api!(result_error)(ctx, message.as_ptr().cast(), len) };
            // A nested statement found the database busy, locked, interrupted…:
            // the caller must see that code to retry instead of giving up.
            if let Some(code) = crate::ffi::take_transient() {
                // SAFETY: ctx is valid for this call; keeps the message set above.
                unsafe { api!(result_error_code)(ctx, code) };
            }
        }
    }
}

fn uuid_v5_fn(c: &Call) -> Result<Value, String> {
    let ns = c.text(
        0,
        "sdsync_uuid_v5: namespace (a uuid, or a name such as 'tag')",
    )?;
    let name = match c.args.get(1) {
        None | Some(Value::Null) => return Ok(Value::Null),
        Some(Value::Text(s)) => s.clone(),
        Some(Value::Integer(i)) => i.to_string(),
        Some(Value::Real(r)) => r.to_string(),
        Some(Value::RawText(b) | Value::Blob(b)) => String::from_utf8_lossy(b).into_owned(),
    };
    Ok(Value::Text(uuid_v5(&ns, &name)))
}

/// The capture triggers' clock bump: the HLC a change issued now gets, from
/// the clock `(hlc, seq)` before it (`max(hlc + 1, wall)`, the send rule). When
/// that enters a new second (`hlc >> 26`, milliseconds over 1,024), the pair
/// `(seq + 1, hlc)` goes into `sdsync_issued` too, in the writer's own
/// transaction (a rollback takes it back with the change). Recording it is
/// best effort: a library whose upgrade is pending has no such table yet.
/// Only the clock's own values are recorded (read back, once a second, at a
/// connection's first change, and when the clock is below a number the
/// connection issued before): a call from other SQL with made-up arguments
/// plants nothing. The first change after a restore is so recorded: a
/// restored folder's app starts a new connection, or (`.restore` into an
/// open one) finds the clock gone back; the syncer tells the restore by that
/// record when the app has rewritten every row it wrote since.
///
/// A connection's first change on a clock at or ahead of the wall clock
/// (peers' faster clocks pushed it) takes a step of 1 to [`FIRST_STEP`] HLC
/// units instead of 1: an app writing to a whole folder restored from a copy
/// younger than that lead would otherwise issue the very same `(seq, HLC)`
/// pairs as the lost history, which nothing can tell apart (README, "A
/// restore within the clock skew"; the syncer steps the clock by more each
/// time it starts). That pair is recorded in `sdsync_issued` too: when the
/// app then rewrites one row, only the record keeps the step's evidence.
fn next_hlc(c: &Call) -> Result<Value, String> {
    let last = c.int(0, "sdsync_next_hlc: the clock's HLC")?;
    let seq = c.int(1, "sdsync_next_hlc: the clock's sequence")?;
    // The clock row lags the log's updates until they are folded: the
    // newest of the two is where this change follows.
    let (newest, version) = latest(c)?;
    match newest {
        Some((s, h)) if s > seq => issue(c, h, s, true, version),
        _ => issue(c, last, seq, false, version),
    }
}

/// `sdsync_stamp()`: the update trigger's clock. Returns the sequence number
/// of the change being captured (`sdsync_bumped(1)` gives its HLC), the one
/// after the newest of the clock row and the log, without writing either:
/// the change's log entry is its record.
fn stamp(c: &Call) -> Result<Value, String> {
    let (newest, version) = latest(c)?;
    let (seq, hlc) = newest.ok_or(NO_BUMP)?;
    issue(c, hlc, seq, true, version)?;
    Ok(Value::Integer(seq.saturating_add(1)))
}

/// The last change issued on this device, `(seq, hlc)`: this connection's
/// own while no other has committed since (no statement), else the newest
/// of the clock row and the log's last entry. `None` without a clock row.
/// Also `main`'s data version, which keys the stamp [`issue`] leaves.
fn latest(c: &Call) -> Result<(Option<Issued>, Option<u32>), String> {
    let version = c.db.data_version();
    if let (Some(v), Some(s), false) = (version, c.conn.stamp.get(), c.conn.attached.get())
        && s.version == v
    {
        return Ok((Some((s.seq, s.hlc)), version));
    }
    let read = |sql: &str| -> Result<Option<Issued>, crate::ffi::SqlError> {
        let mut stmt = c.db.prepare(sql)?;
        Ok(if stmt.step()? {
            Some((stmt.int(0), stmt.int(1)))
        } else {
            None
        })
    };
    match read(LATEST) {
        Err(e) if e.to_string().contains("no such table: sdsync_log") => {
            read("SELECT seq, hlc FROM sdsync_clock")
        }
        other => other,
    }
    .map(|newest| (newest, version))
    .map_err(|e| format!("sdsync: reading the clock: {e}"))
}

/// A change issued on this device: `(seq, hlc)`.
type Issued = (i64, i64);

/// The clock row, or the log's last entry when it is ahead (`latest`).
const LATEST: &str = "SELECT max(c.seq, coalesce(l.seq, 0)), max(c.hlc, coalesce(l.hlc, 0)) \
     FROM sdsync_clock c LEFT JOIN (SELECT seq, hlc FROM sdsync_log ORDER BY seq DESC LIMIT 1) l";

/// Issues the change after `(seq, last)`: its HLC by the send rule (returned)
/// and `seq + 1`, left for `sdsync_bumped` and [`Conn::stamp`]. `known`:
/// the pair was read from this database or issued here, not passed in.
fn issue(
    c: &Call,
    last: i64,
    seq: i64,
    known: bool,
    version: Option<u32>,
) -> Result<Value, String> {
    let wall = Hlc::from_wall(c.conn.wall_ms()).as_i64();
    if !c.conn.bump_due.replace(false) {
        // Not a capture's bump: the value, and nothing moved.
        return Ok(Value::Integer(last.saturating_add(1).max(wall)));
    }
    let before = c.conn.issued.replace(Some(seq.saturating_add(1)));
    let first = before.is_none();
    // The clock below a number this connection issued: the database was
    // restored underneath it (`.restore` into an open connection), which then
    // re-issues numbers its lost history had (seed 9673 of the whole-folder
    // runs), and after a rollback (the rollback hook forgot the stamp). A
    // statement that failed inside a transaction leaves the stamp past its
    // numbers: they are not issued again.
    let went_back = before.is_some_and(|issued| seq < issued);
    let stepped = first && last >= wall;
    let step = if stepped {
        sdsync_core::hlc::step(seq, last, wall, FIRST_STEP)
    } else {
        1
    };
    let next = last.saturating_add(step).max(wall);
    if (first || went_back || next >> 26 > last >> 26) && (known || is_clock(c, last, seq)) {
        record_issued(c, seq.saturating_add(1), next)?;
    }
    let row = c.conn.local_writes.get();
    c.conn.bumped.set(Some((seq.saturating_add(1), next, row)));
    if let Some(version) = version {
        c.conn.stamp.set(Some(Stamp {
            version,
            seq: seq.saturating_add(1),
            hlc: next,
        }));
    }
    Ok(Value::Integer(next))
}

/// Whether `(seq, hlc)` is the clock row's own pair: only those are
/// recorded as issued (a call with made-up arguments plants nothing).
fn is_clock(c: &Call, hlc: i64, seq: i64) -> bool {
    let clock = c.db.query_i64(
        "SELECT seq FROM sdsync_clock WHERE hlc = ?1",
        &[Value::Integer(hlc)],
    );
    matches!(clock, Ok(Some(s)) if s == seq)
}

/// `sdsync_fold([limit])`: folds this device's update log (see `fold`);
/// returns how many entries it folded.
fn fold(c: &Call, limit: Option<i64>) -> Result<Value, String> {
    let folded = crate::fold::fold_some(c.db, limit).map_err(|e| format!("sdsync_fold: {e}"))?;
    Ok(Value::Integer(folded))
}

/// Records `(seq, hlc)` as issued. A library whose format-7 upgrade an app's
/// lock put off has no `sdsync_issued` yet: then nothing is recorded (the
/// upgrade comes at the next chance); any other failure fails the write.
fn record_issued(c: &Call, seq: i64, hlc: i64) -> Result<(), String> {
    match store::record_issued(c.db, seq, hlc) {
        Err(e) if e.to_string().contains("no such table") => Ok(()),
        other => other.map_err(|e| format!("sdsync: recording issued sequence {seq}: {e}")),
    }
}

/// The largest step of a connection's first change (see [`next_hlc`]): 1/32
/// ms. Small, because connections come and go: a step per new connection
/// must never add up to the wall clock's own pace, or the clock would run
/// away toward the five minutes ahead that peers refuse. Even 30,000 new
/// connections a second, each writing and each drawing the largest step,
/// move it slower (61 M units a second against the wall clock's 65.5 M).
const FIRST_STEP: u64 = 2048;

fn hlc_text(c: &Call) -> Result<Value, String> {
    let raw = c.int(0, "sdsync_hlc_text: the HLC")?;
    let hlc = Hlc::from_i64(raw)
        .ok_or_else(|| format!("sdsync_hlc_text: {raw} is not an HLC (negative)"))?;
    Ok(Value::Text(hlc.to_string()))
}

fn refuse_foreign_write(c: &Call) -> Result<Value, String> {
    let table = c.text(0, "table")?;
    let owner = c
        .text(2, "owner")
        .unwrap_or_else(|_| "another device".into());
    let pk = c.args.get(1).cloned().unwrap_or(Value::Null);
    Err(format!(
        "sdsync: row {pk} of device-owned table {table} is owned by device {owner}; only its owner may change or delete it"
    ))
}

fn refuse_rekey(c: &Call) -> Result<Value, String> {
    let table = c.text(0, "table")?;
    Err(format!(
        "sdsync: the uuid and local id of a synced row identify it and cannot change (table {table}: {} -> {}); delete the row and insert a new one instead",
        c.args.get(1).cloned().unwrap_or(Value::Null),
        c.args.get(2).cloned().unwrap_or(Value::Null)
    ))
}

/// A delete that would leave rows referencing the deleted row (see
/// `Ctx::dangling_checks` in `sdsync_core::triggers`).
fn refuse_dangling(c: &Call) -> Result<Value, String> {
    let table = c.text(0, "table")?;
    let pk = c.args.get(1).cloned().unwrap_or(Value::Null);
    let child = c.text(2, "child table")?;
    let column = c.text(3, "child column")?;
    Err(format!(
        "sdsync: deleting row {pk} of {table} would leave rows of {child} referencing it through {column}, \
         which peers remove with it: delete or re-point those rows first, or keep PRAGMA foreign_keys = ON \
         (loading the extension sets it) so SQLite applies the schema's ON DELETE action"
    ))
}

/// A row change a running `DROP TABLE` causes through a foreign key's `ON
/// DELETE` action (see `migrate::Watch::dropping`).
fn refuse_cascading_drop(table: &str) -> String {
    format!(
        "sdsync: DROP TABLE {table} would delete or change rows of tracked tables that reference it \
         (their foreign keys' ON DELETE actions run, since PRAGMA foreign_keys is on; loading the extension \
         turns it on), and every peer would lose them too: for a table rebuild, set PRAGMA foreign_keys = OFF \
         before it and back ON after it, as SQLite's ALTER TABLE documentation says (Django and sqlite-utils \
         do; Alembic's batch mode documents it), or delete those rows first to drop the table with them"
    )
}

fn track_fn(c: &Call) -> Result<Value, String> {
    let table = c.text(0, "sdsync_track: table")?;
    let class = c.text(1, "sdsync_track: class ('owned' or 'shared')")?;
    let options = match c.args.get(2) {
        None | Some(Value::Null) => None,
        Some(_) => Some(c.text(2, "sdsync_track: options (JSON text)")?),
    };
    track::track(c.db, &table, &class, options.as_deref(), c.conn.wall_ms())
        .map(Value::Text)
        .map_err(|e| e.to_string())
}

/// `sdsync_restamp(floor[, hlc])`, the clock floor `hlc` given or 0.
fn restamp(c: &Call, hlc: i64) -> Result<Value, String> {
    let floor = c.int(0, "sdsync_restamp: floor (a sequence number)")?;
    store::restamp(c.db, floor, hlc)
        .map(Value::Integer)
        .map_err(|e| format!("sdsync_restamp: {e}"))
}

fn mark_complete(c: &Call) -> Result<Value, String> {
    let origin = c.text(0, "sdsync_mark_complete: origin (device uuid)")?;
    let origin = sdsync_core::ids::parse_device(&origin)
        .ok_or_else(|| format!("sdsync_mark_complete: '{origin}' is not a device uuid"))?;
    let seq = c.int(1, "sdsync_mark_complete: seq")?;
    if !(0..=sdsync_core::ids::MAX_SEQ).contains(&seq) {
        return Err(format!(
            "sdsync_mark_complete: seq {seq} of {origin} is outside 0..=2^53"
        ));
    }
    let done = store::mark_complete(c.db, &origin, seq).map_err(|e| e.to_string())?;
    Ok(Value::Integer(done))
}

fn reidentify(c: &Call) -> Result<Value, String> {
    let given = match c.args.first() {
        None | Some(Value::Null) => None,
        Some(_) => {
            let text = c.text(0, "sdsync_reidentify: device id")?;
            Some(
                sdsync_core::ids::parse_device(&text)
                    .ok_or_else(|| format!("sdsync_reidentify: '{text}' is not a uuid"))?,
            )
        }
    };
    track::reidentify(c.db, given)
        .map(Value::Text)
        .map_err(|e| e.to_string())
}

/// Fixes this connection's wall clock (milliseconds since the epoch; NULL returns
/// to the system clock). For deterministic simulations and tests only.
fn test_clock(c: &Call) -> Result<Value, String> {
    let ms = match c.args.first() {
        None | Some(Value::Null) => None,
        Some(_) => Some(
            u64::try_from(c.int(0, "sdsync_test_clock: milliseconds")?)
                .map_err(|_| "sdsync_test_clock: negative time".to_string())?,
        ),
    };
    c.conn.wall_override.set(ms);
    Ok(ms.map_or(Value::Null, |m| Value::Integer(m as i64)))
}
