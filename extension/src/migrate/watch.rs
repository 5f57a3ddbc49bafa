//! Watching the DDL a connection runs: the authorizer and the WAL hook.
//!
//! ```sql
//! .load target/release/libsdsync
//! BEGIN;
//! CREATE TABLE new_tags(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, name TEXT, color TEXT);
//! INSERT INTO new_tags(id, uuid, name) SELECT id, uuid, name FROM tags;
//! DROP TABLE tags;                                -- capture triggers go with it
//! ALTER TABLE new_tags RENAME TO tags;
//! INSERT INTO tags(uuid, name) VALUES ('…', 'x'); -- Error: not authorized (no capture yet)
//! COMMIT;                                         -- the WAL hook re-tracks tags
//! ```
//!
//! One authorizer per connection decides when a statement is prepared:
//! - `PRAGMA recursive_triggers` may not be turned off: `REPLACE` deletes rows,
//!   and only with recursive triggers do those deletes run capture. Checking it
//!   in the triggers cost two index probes per insert (about ×1.5 on a bulk
//!   insert); an authorizer decides once per statement instead.
//! - DDL that drops capture triggers (`DROP TABLE` of a tracked table, or
//!   dropping them by hand) marks the table uncaptured for this connection: a
//!   write to it is refused until capture is back, so nothing is written
//!   uncaptured in the rebuild's own transaction.
//! - Any DDL marks the connection: after its commit, the WAL hook (SQLite lets it
//!   write) runs [`super::repair`], which re-tracks the table in place.
//! - Statements that copy rows between tables (a rebuild's copy step) are
//!   kept by the trace callback until their transaction ends: the repair
//!   reads the columns a rebuild renamed from them (`super::copies`).
//!
//! SQLite keeps one authorizer and one WAL hook per connection: an app that
//! installs its own afterwards replaces these (documented in the README), and
//! then the syncer's next sweep repairs instead. The WAL hook also does what it
//! replaces, SQLite's automatic checkpoint at 1,000 pages.

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, c_char, c_int, c_void};
use std::rc::Rc;
use std::time::{Duration, Instant};

use sqlite3ext_sys::sqlite3;

use super::copies::{self, TableCopy};
use crate::catalog::CatalogError;
use crate::ffi::{Db, api};
use crate::functions::Conn;
use crate::track::TrackError;

const SQLITE_OK: c_int = 0;
const SQLITE_DENY: c_int = 1;
const SQLITE_CREATE_TABLE: c_int = 2;
const SQLITE_CREATE_TRIGGER: c_int = 7;
const SQLITE_DELETE: c_int = 9;
const SQLITE_DROP_TABLE: c_int = 11;
const SQLITE_DROP_TRIGGER: c_int = 16;
const SQLITE_INSERT: c_int = 18;
const SQLITE_PRAGMA: c_int = 19;
const SQLITE_UPDATE: c_int = 23;
const SQLITE_ALTER_TABLE: c_int = 26;
const SQLITE_TRACE_STMT: std::ffi::c_uint = 0x01;
const SQLITE_CHECKPOINT_PASSIVE: c_int = 0;
/// SQLite's default `wal_autocheckpoint`, which the WAL hook takes over.
const AUTOCHECKPOINT_PAGES: c_int = 1000;

/// What the authorizer saw on one connection (see the module docs).
#[derive(Default)]
pub struct Watch {
    /// DDL ran since the last repair: repair after the next commit.
    ddl: Cell<bool>,
    /// Tracked tables whose capture triggers DDL dropped, lowercase.
    uncaptured: RefCell<Vec<String>>,
    /// WAL pages at which a commit on this connection checkpoints
    /// (`sdsync_autocheckpoint`; `None`: SQLite's default of 1,000).
    checkpoint_at: Cell<Option<c_int>>,
    /// The table the last `DROP TABLE` prepared on this connection names: a
    /// hint only, checked against the statements running (see
    /// [`Watch::dropping`]).
    dropped: RefCell<Option<String>>,
    /// The `INSERT … SELECT` copies run since DDL (a rebuild's copy step),
    /// for the repair after the commit to read renames from
    /// (`super::copies`); emptied at commit and rollback.
    copies: RefCell<Vec<TableCopy>>,
}

thread_local! {
    /// Depth of sdsync's own DDL (track, untrack, repair) on this thread: the
    /// triggers it drops and creates are not the app's doing.
    static OWN_DDL: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f` as sdsync's own DDL.
pub fn own<T>(f: impl FnOnce() -> T) -> T {
    with_depth(OWN_DDL.with(Cell::get) + 1, f)
}

/// Runs `f` as the app's SQL again, inside sdsync's own work (`sdsync_alter`).
pub fn app<T>(f: impl FnOnce() -> T) -> T {
    with_depth(0, f)
}

/// Runs `f` with the own-DDL depth at `depth`, restoring it afterwards even if
/// `f` panics (a panic is caught at the FFI boundary and the thread goes on).
fn with_depth<T>(depth: u32, f: impl FnOnce() -> T) -> T {
    struct Restore(u32);
    impl Drop for Restore {
        fn drop(&mut self) {
            OWN_DDL.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(OWN_DDL.with(|d| d.replace(depth)));
    f()
}

impl Watch {
    /// Checkpoints after a commit once the WAL holds `pages` (0 or less:
    /// never, as `PRAGMA wal_autocheckpoint`, which would replace this
    /// connection's WAL hook and with it DDL repair). Returns the previous.
    pub fn set_checkpoint_at(&self, pages: c_int) -> c_int {
        self.checkpoint_at
            .replace(Some(pages))
            .unwrap_or(AUTOCHECKPOINT_PAGES)
    }

    /// The table a `DROP TABLE` running on this connection drops, if one
    /// runs. With `foreign_keys` on (loading the extension turns it on),
    /// SQLite's `DROP TABLE` first deletes every row, which runs the `ON
    /// DELETE` actions of the tables referencing it: a table rebuild (the 12
    /// steps, Alembic's batch mode) would delete or change the referencing
    /// rows, and every peer with them. Capture refuses such a write
    /// (`sdsync_capturing`), so the `DROP` fails and changes nothing. The
    /// authorizer cannot look at the statement it sees prepared, so it
    /// leaves the name here, and this asks SQLite which statements run.
    pub fn dropping(&self, db: Db) -> Option<String> {
        let table = self.dropped.borrow().clone()?;
        if db.runs(is_drop_table) {
            Some(table)
        } else {
            self.dropped.take();
            None
        }
    }

    /// The copies recorded so far, which the caller now owns.
    pub fn take_copies(&self) -> Vec<TableCopy> {
        self.copies.take()
    }

    /// Refuses writes to `tables` on this connection (their capture is lifted).
    pub fn deny(&self, tables: &[String]) {
        let mut set = self.uncaptured.borrow_mut();
        for t in tables {
            let t = t.to_lowercase();
            if !set.contains(&t) {
                set.push(t);
            }
        }
    }

    /// Allows writes to `tables` again.
    pub fn allow(&self, tables: &[String]) {
        let lower: Vec<String> = tables.iter().map(|t| t.to_lowercase()).collect();
        self.uncaptured.borrow_mut().retain(|t| !lower.contains(t));
    }
}

/// Installs the authorizer, the WAL hook and the rollback hook on a connection.
pub fn install(db: *mut sqlite3, conn: &Rc<Conn>) -> Result<(), String> {
    // Invariant: the functions registered on this connection hold `conn` until
    // the connection closes, and SQLite calls these hooks only while it is open.
    let data = Rc::as_ptr(conn) as *mut c_void;
    // SAFETY: valid handle; callbacks are plain functions; `data` outlives them.
    let rc = unsafe { api!(set_authorizer)(db, Some(authorize), data) };
    if rc != SQLITE_OK {
        return Err(format!(
            "sdsync: installing the authorizer failed (code {rc})"
        ));
    }
    // SAFETY: as above; both return the previous hook's argument, ignored.
    unsafe {
        api!(wal_hook)(db, Some(after_commit), data);
        api!(rollback_hook)(db, Some(rolled_back), data);
    }
    // SAFETY: as above.
    let rc = unsafe { api!(trace_v2)(db, SQLITE_TRACE_STMT, Some(traced), data) };
    if rc != SQLITE_OK {
        return Err(format!(
            "sdsync: installing the trace callback failed (code {rc})"
        ));
    }
    Ok(())
}

/// The trace callback: keeps the statements that copy rows from table to
/// table (a rebuild's copy step, `super::copies`) until the transaction
/// ends. Not only after DDL: Python's `sqlite3` runs a `CREATE TABLE` in a
/// transaction of its own (its default transaction handling opens one only
/// before a data change), so a rebuild's copy often comes in the
/// transaction after that DDL's. SQLite calls this as each statement
/// starts, and as each trigger program starts (with a comment for text,
/// which [`copies::parse`] turns down at its first token).
unsafe extern "C" fn traced(
    _event: std::ffi::c_uint,
    data: *mut c_void,
    _stmt: *mut c_void,
    text: *mut c_void,
) -> c_int {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: see `authorize`.
        let conn = unsafe { &*(data as *const Conn) };
        if text.is_null() || OWN_DDL.with(Cell::get) > 0 {
            return;
        }
        // SAFETY: for SQLITE_TRACE_STMT, SQLite passes the statement's
        // NUL-terminated text.
        let sql = unsafe { CStr::from_ptr(text as *const c_char) }.to_string_lossy();
        if let Some(copy) = copies::parse(&sql) {
            conn.watch.copies.borrow_mut().push(copy);
        }
    });
    SQLITE_OK
}

/// The authorizer (see the module docs); allows everything else.
unsafe extern "C" fn authorize(
    data: *mut c_void,
    action: c_int,
    first: *const c_char,
    second: *const c_char,
    _database: *const c_char,
    _trigger: *const c_char,
) -> c_int {
    // A panic must not cross into SQLite; refusing nothing is the fallback.
    std::panic::catch_unwind(|| {
        // SAFETY: `data` is the connection's Conn (see `install`); SQLite passes
        // NUL-terminated strings valid for this call, or NULL.
        let conn = unsafe { &*(data as *const Conn) };
        let text = |p: *const c_char| {
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        };
        let (first, second) = (text(first), text(second));
        decide(&conn.watch, action, first.as_deref(), second.as_deref())
    })
    .unwrap_or(SQLITE_OK)
}

/// The authorizer's decision, apart from FFI.
fn decide(watch: &Watch, action: c_int, first: Option<&str>, second: Option<&str>) -> c_int {
    let own = OWN_DDL.with(Cell::get) > 0;
    match (action, first, second) {
        (SQLITE_PRAGMA, Some(name), Some(value))
            if name.eq_ignore_ascii_case("recursive_triggers") && !turns_on(value) =>
        {
            SQLITE_DENY
        }
        (SQLITE_DROP_TRIGGER, Some(trigger), Some(table)) if !own && is_capture(trigger) => {
            watch.ddl.set(true);
            let mut set = watch.uncaptured.borrow_mut();
            let table = table.to_lowercase();
            if !set.contains(&table) {
                set.push(table);
            }
            SQLITE_OK
        }
        (SQLITE_CREATE_TRIGGER, Some(trigger), Some(table)) if own && is_capture(trigger) => {
            let table = table.to_lowercase();
            watch.uncaptured.borrow_mut().retain(|t| *t != table);
            SQLITE_OK
        }
        (SQLITE_DROP_TABLE, Some(table), _) if !own => {
            watch.ddl.set(true);
            watch.dropped.replace(Some(table.to_string()));
            SQLITE_OK
        }
        (SQLITE_CREATE_TABLE | SQLITE_DROP_TABLE | SQLITE_ALTER_TABLE, _, _) if !own => {
            watch.ddl.set(true);
            SQLITE_OK
        }
        (SQLITE_INSERT | SQLITE_UPDATE | SQLITE_DELETE, Some(table), _)
            if watch
                .uncaptured
                .borrow()
                .iter()
                .any(|t| t.eq_ignore_ascii_case(table)) =>
        {
            SQLITE_DENY
        }
        _ => SQLITE_OK,
    }
}

/// Whether a statement's text is a `DROP TABLE` (after any whitespace and
/// comments SQLite keeps at the start of a statement's text).
fn is_drop_table(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    let mut words = rest.split_whitespace();
    let mut next = || words.next().map(str::to_ascii_lowercase);
    next().as_deref() == Some("drop") && next().as_deref() == Some("table")
}

/// Whether a trigger name is one of sdsync's capture triggers.
fn is_capture(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("sdsync_") && lower != "sdsync_schema_changes_need_the_extension"
}

/// After a commit (SQLite lets a WAL hook write): repairs capture if this
/// connection ran DDL, then checkpoints like SQLite's default hook.
unsafe extern "C" fn after_commit(
    data: *mut c_void,
    db: *mut sqlite3,
    database: *const c_char,
    pages: c_int,
) -> c_int {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: see `authorize`.
        let conn = unsafe { &*(data as *const Conn) };
        // The copies of the transaction that just committed.
        let copies = conn.watch.take_copies();
        if conn.watch.ddl.replace(false) {
            let handle = Db::from_raw(db);
            let (repaired, copies) =
                copies::during(copies, || repair_patiently(handle, conn.wall_ms()));
            match repaired {
                // Every tracked table that exists has capture (or refuses
                // writes) again: nothing is uncaptured on this connection.
                Ok(_) => conn.watch.uncaptured.borrow_mut().clear(),
                // Busy or failing: the next commit (or the syncer's sweep) tries again.
                Err(_) => {
                    conn.watch.ddl.set(true);
                    conn.watch.copies.replace(copies);
                }
            }
        }
        let at = conn
            .watch
            .checkpoint_at
            .get()
            .unwrap_or(AUTOCHECKPOINT_PAGES);
        if at > 0 && pages >= at {
            // SAFETY: valid handle and the database name SQLite passed.
            unsafe {
                api!(wal_checkpoint_v2)(
                    db,
                    database,
                    SQLITE_CHECKPOINT_PASSIVE,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
        }
        // Last: the write lock is released, and the wait delays only this
        // connection's next statement (`crate::pace`).
        let wait = conn
            .pace
            .after_commit(db, database, conn.local_writes.get());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    });
    SQLITE_OK
}

/// How long the repair after a DDL commit keeps trying while other
/// connections hold the write lock.
const REPAIR_PATIENCE: Duration = Duration::from_secs(2);

/// [`super::repair_if_needed`], tried again while it fails for a transient
/// reason. Until it succeeds this connection refuses writes to the rebuilt
/// table ("not authorized"), and nothing but its next commit tries again: a
/// repair that read the schema and then found the syncer had committed
/// meanwhile (`SQLITE_BUSY_SNAPSHOT`, which no busy handler waits out) left
/// an app's next write refused (CI, `a_rebuild_while_both_syncers_run_keeps_syncing`).
/// The syncer's transactions last tens of milliseconds.
fn repair_patiently(db: Db, wall_ms: u64) -> Result<Vec<String>, TrackError> {
    let start = Instant::now();
    let mut wait = Duration::from_millis(1);
    loop {
        match super::repair_if_needed(db, wall_ms) {
            Err(e) if transient(&e) && start.elapsed() < REPAIR_PATIENCE => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(50));
            }
            done => return done,
        }
    }
}

/// Whether the repair failed for the environment (busy, locked, …).
fn transient(e: &TrackError) -> bool {
    match e {
        TrackError::Sql(e) | TrackError::Catalog(CatalogError::Sql(e)) => {
            crate::ffi::is_transient(e.code)
        }
        _ => false,
    }
}

/// A rollback undid the DDL the authorizer saw.
unsafe extern "C" fn rolled_back(data: *mut c_void) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: see `authorize`.
        let conn = unsafe { &*(data as *const Conn) };
        conn.watch.uncaptured.borrow_mut().clear();
        conn.watch.copies.borrow_mut().clear();
    });
}

/// Whether SQLite reads a flag pragma's value as "on" (`getSafetyLevel` with
/// its default off): `on`, `yes` or `true`, or digits whose 32-bit value cut to
/// 8 bits is not zero. Everything else — `0`, `256`, `-1`, `''`, `full`, `00`,
/// eleven digits — turns the flag off, so only "on" values are allowed.
fn turns_on(value: &str) -> bool {
    let v = value.trim().trim_matches(|c| c == '\'' || c == '"');
    if ["on", "yes", "true"]
        .iter()
        .any(|on| v.eq_ignore_ascii_case(on))
    {
        return true;
    }
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() || digits.len() > 10 {
        return false;
    }
    match digits.parse::<i64>() {
        Ok(n) if n <= i64::from(i32::MAX) => (n as u8) != 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_values_sqlite_reads_as_on_are_allowed() {
        for v in [
            "0",
            "OFF",
            "off",
            "false",
            "'no'",
            " No ",
            "256",
            "512",
            "00",
            "0.5",
            "-1",
            "''",
            "full",
            "DEFAULT",
            "12345678901",
        ] {
            assert!(!turns_on(v), "{v}");
        }
        for v in ["1", "on", "ON", "yes", "true", "'true'", "257", "1abc"] {
            assert!(turns_on(v), "{v}");
        }
    }

    #[test]
    fn drop_table_statements_are_told_after_comments_and_whitespace() {
        for sql in [
            "DROP TABLE t",
            "  drop\n table if exists \"t\"",
            "-- rebuild\nDROP TABLE t",
            "/* a */ /* b */\tDrop Table t",
        ] {
            assert!(is_drop_table(sql), "{sql}");
        }
        for sql in [
            "DROP INDEX i",
            "DELETE FROM t",
            "-- DROP TABLE t",
            "droptable t",
            "",
        ] {
            assert!(!is_drop_table(sql), "{sql}");
        }
    }

    #[test]
    fn writes_to_a_table_whose_capture_ddl_dropped_are_refused_until_it_is_back() {
        let watch = Watch::default();
        let write = |w: &Watch| decide(w, SQLITE_INSERT, Some("Tags"), None);
        assert_eq!(write(&watch), SQLITE_OK);
        decide(&watch, SQLITE_DROP_TABLE, Some("tags"), None);
        decide(
            &watch,
            SQLITE_DROP_TRIGGER,
            Some("sdsync_ins_tags"),
            Some("tags"),
        );
        assert!(watch.ddl.get());
        assert_eq!(write(&watch), SQLITE_DENY);
        assert_eq!(
            decide(&watch, SQLITE_UPDATE, Some("tags"), Some("x")),
            SQLITE_DENY
        );
        assert_eq!(
            decide(&watch, SQLITE_INSERT, Some("other"), None),
            SQLITE_OK
        );
        own(|| {
            decide(
                &watch,
                SQLITE_CREATE_TRIGGER,
                Some("sdsync_ins_tags"),
                Some("tags"),
            )
        });
        assert_eq!(write(&watch), SQLITE_OK);
        // The guard trigger is not capture; sdsync's own drops mark nothing.
        own(|| decide(&watch, SQLITE_DROP_TRIGGER, Some("sdsync_upd_x"), Some("x")));
        assert_eq!(decide(&watch, SQLITE_INSERT, Some("x"), None), SQLITE_OK);
        assert!(!is_capture("sdsync_schema_changes_need_the_extension"));
    }
}
