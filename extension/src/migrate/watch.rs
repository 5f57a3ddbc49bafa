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
//! - DDL also turns the trace callback on until a transaction later
//!   (`super::trace`): it keeps the statements that move tables and columns
//!   (a rebuild's copy step), and the repair reads the columns a rebuild
//!   renamed from them (`super::copies`).
//! - A capture trigger compiled into a `DROP TABLE` (its foreign key
//!   actions) marks the table: capture refuses to run inside that `DROP`
//!   ([`Watch::dropping`]).
//!
//! SQLite keeps one authorizer and one WAL hook per connection: an app that
//! installs its own afterwards replaces these (documented in the README), and
//! then the syncer's next sweep repairs instead. The WAL hook also does what it
//! replaces, SQLite's automatic checkpoint at 1,000 pages.

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, c_char, c_int, c_void};
use std::rc::Rc;

use sqlite3ext_sys::sqlite3;

use super::copies;
use super::sqltext::{self, Statement};
use super::trace;
use crate::ffi::{Db, api};
use crate::functions::Conn;

const SQLITE_OK: c_int = 0;
const SQLITE_DENY: c_int = 1;
const SQLITE_CREATE_TABLE: c_int = 2;
const SQLITE_CREATE_TRIGGER: c_int = 7;
const SQLITE_SAVEPOINT: c_int = 32;
const SQLITE_ATTACH: c_int = 24;
const SQLITE_DELETE: c_int = 9;
const SQLITE_DROP_TABLE: c_int = 11;
const SQLITE_DROP_TRIGGER: c_int = 16;
const SQLITE_INSERT: c_int = 18;
const SQLITE_PRAGMA: c_int = 19;
const SQLITE_READ: c_int = 20;
const SQLITE_SELECT: c_int = 21;
const SQLITE_UPDATE: c_int = 23;
const SQLITE_ALTER_TABLE: c_int = 26;
const SQLITE_FUNCTION: c_int = 31;
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
    /// This connection's handle and the pointer its callbacks get (the
    /// `Conn` holding this), for switching the trace callback.
    handle: Cell<Option<(Db, *mut c_void)>>,
    /// The table whose `DROP TABLE` the authorizer is seeing compiled.
    compiling_drop: RefCell<Option<String>>,
    /// A `DROP TABLE` that runs capture through foreign key actions was
    /// compiled: the table it drops (see [`Watch::dropping`]).
    dropped: RefCell<Option<String>>,
    /// The statements that moved tables or columns, kept by the trace
    /// callback while the connection changes its schema (`super::trace`).
    recorder: trace::Recorder,
}

thread_local! {
    /// Depth of sdsync's own DDL (track, untrack, repair) on this thread: the
    /// triggers it drops and creates are not the app's doing.
    static OWN_DDL: Cell<u32> = const { Cell::new(0) };
}

/// Whether sdsync's own DDL runs on this thread.
pub(super) fn in_own_ddl() -> bool {
    OWN_DDL.with(Cell::get) > 0
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
    /// runs while a `DROP` compiled with capture in its foreign key actions
    /// may still be prepared. With `foreign_keys` on (loading the extension
    /// turns it on), SQLite's `DROP TABLE` first deletes every row, which
    /// runs the `ON DELETE` actions of the tables referencing it: a table
    /// rebuild (the 12 steps, Alembic's batch mode) would delete or change
    /// the referencing rows, and every peer with them. Capture refuses such
    /// a write (`sdsync_capturing`), so the `DROP` fails and changes
    /// nothing. The authorizer sees the capture triggers compiled into the
    /// `DROP` (it may not run SQL, nor see the statement) and marks it;
    /// while marked, each captured row walks the connection's running
    /// statements (a few calls per prepared statement), until a
    /// transaction ends with no `DROP TABLE` prepared (one cached for reuse
    /// keeps the mark: its reuse is not compiled again).
    pub fn dropping(&self, db: Db) -> Option<String> {
        let marked = self.dropped.borrow().clone()?;
        let sql = trace::running(db, sqltext::is_drop_table)?;
        Some(match sqltext::statement(&sql) {
            Some(Statement::DropTable { table }) => table,
            _ => marked,
        })
    }

    /// The statements kept, which the caller now owns.
    pub fn take_statements(&self) -> Vec<Statement> {
        self.recorder.take()
    }

    /// What the trace callback keeps (`super::trace`).
    pub(super) fn recorder(&self) -> &trace::Recorder {
        &self.recorder
    }

    /// Whether DDL ran that no repair has followed yet.
    pub(super) fn repair_pending(&self) -> bool {
        self.ddl.get()
    }

    /// Whether no transaction is open on the connection.
    pub(super) fn outside_transaction(&self) -> bool {
        self.handle.get().is_some_and(|(db, _)| db.autocommit())
    }

    /// A transaction ended (committed or `rolled_back`): what it kept goes,
    /// and the mark of a cascading `DROP` with it once no `DROP TABLE` is
    /// prepared any more.
    fn ended(&self, rolled_back: bool) {
        self.compiling_drop.take();
        self.recorder.ended(rolled_back);
        if let Some((db, _)) = self.handle.get()
            && self.dropped.borrow().is_some()
            && !trace::prepared(db, sqltext::is_drop_table)
        {
            self.dropped.take();
        }
        self.switch_trace();
    }

    /// `sdsync_repair()` on this connection: once it succeeded the trace
    /// callback goes off.
    pub fn repair_here<T, E>(&self, repair: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let done = self.repair_with(repair);
        if done.is_ok() {
            self.recorder.close();
            self.switch_trace();
        }
        done
    }

    /// A transaction committed: repairs capture if it ran DDL, with the
    /// statements it kept; a failed repair keeps tracing for the next.
    fn committed(&self, db: Db, wall_ms: u64) {
        if !self.ddl.get() {
            self.take_statements();
        } else if self
            .repair_with(|| super::repair_patiently(db, wall_ms))
            .is_err()
        {
            self.recorder.open();
        }
        self.ended(false);
    }

    /// Runs `repair` knowing the statements kept. Once it succeeded every
    /// tracked table that exists has capture (or refuses writes) again:
    /// nothing is left to repair or uncaptured on this connection. Busy or
    /// failing, the DDL stays pending with its statements, for the next
    /// commit (or the syncer's sweep) to try again.
    fn repair_with<T, E>(&self, repair: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let (done, statements) = copies::during(self.take_statements(), repair);
        match done {
            Ok(_) => {
                self.ddl.set(false);
                self.uncaptured.borrow_mut().clear();
            }
            Err(_) => self.recorder.put_back(statements),
        }
        done
    }

    /// Installs or removes the trace callback as the recorder says.
    fn switch_trace(&self) {
        if let Some((db, data)) = self.handle.get() {
            self.recorder.switch(db, data);
        }
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
    conn.watch.handle.set(Some((Db::from_raw(db), data)));
    Ok(())
}

/// The authorizer (see the module docs); allows everything else.
unsafe extern "C" fn authorize(
    data: *mut c_void,
    action: c_int,
    first: *const c_char,
    second: *const c_char,
    _database: *const c_char,
    trigger: *const c_char,
) -> c_int {
    // A panic must not cross into SQLite; refusing nothing is the fallback.
    std::panic::catch_unwind(|| {
        // SAFETY: `data` is the connection's Conn (see `install`); SQLite passes
        // NUL-terminated strings valid for this call, or NULL.
        let conn = unsafe { &*(data as *const Conn) };
        let text = |p: *const c_char| {
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        };
        let (first, second, trigger) = (text(first), text(second), text(trigger));
        let seen = Seen {
            action,
            first: first.as_deref(),
            second: second.as_deref(),
            trigger: trigger.as_deref(),
        };
        if action == SQLITE_ATTACH {
            conn.attached.set(true);
            conn.forget_stamp();
        }
        if action == SQLITE_SAVEPOINT && seen.first == Some("ROLLBACK") {
            // Numbers issued since the savepoint are taken back: the next
            // change reads the clock again (see `Conn::stamp`).
            conn.forget_stamp();
        }
        let decision = decide(&conn.watch, &seen);
        conn.watch.switch_trace();
        decision
    })
    .unwrap_or(SQLITE_OK)
}

/// What the authorizer is told about one action.
struct Seen<'a> {
    action: c_int,
    first: Option<&'a str>,
    second: Option<&'a str>,
    /// The trigger whose program is being compiled, if any.
    trigger: Option<&'a str>,
}

/// The authorizer's decision, apart from FFI.
fn decide(watch: &Watch, seen: &Seen) -> c_int {
    let own = OWN_DDL.with(Cell::get) > 0;
    // Only these actions occur while a `DROP TABLE` compiles (its implicit
    // delete, foreign key actions and the trigger programs they run): any
    // other is another statement's, after a `DROP` that failed to compile.
    if ![
        SQLITE_DELETE,
        SQLITE_INSERT,
        SQLITE_UPDATE,
        SQLITE_READ,
        SQLITE_SELECT,
        SQLITE_FUNCTION,
    ]
    .contains(&seen.action)
    {
        watch.compiling_drop.take();
    }
    let dropping = watch.compiling_drop.borrow().clone();
    if let (Some(table), Some(trigger)) = (&dropping, seen.trigger) {
        // A capture trigger compiled into a `DROP TABLE`: its foreign key
        // actions run capture (see `Watch::dropping`).
        if is_capture(trigger) {
            watch.dropped.replace(Some(table.clone()));
        }
    }
    match (seen.action, seen.first, seen.second) {
        // The `DROP` deletes the schema row last: its compilation ends.
        (SQLITE_DELETE, Some(t), _)
            if dropping.is_some()
                && (t.eq_ignore_ascii_case("sqlite_master")
                    || t.eq_ignore_ascii_case("sqlite_schema")) =>
        {
            watch.compiling_drop.take();
            SQLITE_OK
        }
        // The `DROP`'s own implicit `DELETE FROM` of a table whose capture
        // is lifted (a second rebuild of it in one transaction).
        (SQLITE_DELETE, Some(t), _)
            if seen.trigger.is_none()
                && dropping
                    .as_deref()
                    .is_some_and(|d| d.eq_ignore_ascii_case(t)) =>
        {
            SQLITE_OK
        }
        (SQLITE_PRAGMA, Some(name), Some(value))
            if name.eq_ignore_ascii_case("recursive_triggers") && !sqltext::turns_on(value) =>
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
            watch.recorder.open();
            watch.compiling_drop.replace(Some(table.to_string()));
            SQLITE_OK
        }
        (SQLITE_CREATE_TABLE | SQLITE_DROP_TABLE | SQLITE_ALTER_TABLE, _, _) if !own => {
            watch.ddl.set(true);
            watch.recorder.open();
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
        // Once per transaction: not for sdsync's own savepoint released by
        // the repair below (SQLite calls this again for it), nor again for
        // an attached database.
        let main = !database.is_null() && unsafe { CStr::from_ptr(database) }.to_bytes() == b"main";
        if main && !in_own_ddl() {
            conn.watch.committed(Db::from_raw(db), conn.wall_ms());
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

/// A rollback undid the DDL the authorizer saw.
unsafe extern "C" fn rolled_back(data: *mut c_void) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: see `authorize`.
        let conn = unsafe { &*(data as *const Conn) };
        conn.watch.uncaptured.borrow_mut().clear();
        conn.watch.ended(true);
        conn.forget_stamp();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen<'a>(action: c_int, first: &'a str, second: Option<&'a str>) -> Seen<'a> {
        Seen {
            action,
            first: Some(first),
            second,
            trigger: None,
        }
    }

    #[test]
    fn writes_to_a_table_whose_capture_ddl_dropped_are_refused_until_it_is_back() {
        let watch = Watch::default();
        let write = |w: &Watch| decide(w, &seen(SQLITE_INSERT, "Tags", None));
        assert_eq!(write(&watch), SQLITE_OK);
        decide(&watch, &seen(SQLITE_DROP_TABLE, "tags", None));
        decide(
            &watch,
            &seen(SQLITE_DROP_TRIGGER, "sdsync_ins_tags", Some("tags")),
        );
        assert!(watch.ddl.get());
        assert_eq!(write(&watch), SQLITE_DENY);
        assert_eq!(
            decide(&watch, &seen(SQLITE_UPDATE, "tags", Some("x"))),
            SQLITE_DENY
        );
        assert_eq!(
            decide(&watch, &seen(SQLITE_INSERT, "other", None)),
            SQLITE_OK
        );
        own(|| {
            decide(
                &watch,
                &seen(SQLITE_CREATE_TRIGGER, "sdsync_ins_tags", Some("tags")),
            )
        });
        assert_eq!(write(&watch), SQLITE_OK);
        // The guard trigger is not capture; sdsync's own drops mark nothing.
        own(|| {
            decide(
                &watch,
                &seen(SQLITE_DROP_TRIGGER, "sdsync_upd_x", Some("x")),
            )
        });
        assert_eq!(decide(&watch, &seen(SQLITE_INSERT, "x", None)), SQLITE_OK);
        assert!(!is_capture("sdsync_schema_changes_need_the_extension"));
    }

    /// What SQLite's authorizer is told while it compiles `DROP TABLE p`
    /// with `foreign_keys` on and a tracked child `ch` (`ON DELETE
    /// CASCADE`): the child's capture trigger compiled into the `DROP`
    /// marks it, and the `DROP`'s own delete of a table whose capture is
    /// lifted (a second rebuild in one transaction) is allowed.
    #[test]
    fn a_drop_compiled_with_capture_in_its_cascades_is_marked() {
        let watch = Watch::default();
        watch.deny(&["p".to_string()]);
        decide(&watch, &seen(SQLITE_DELETE, "sqlite_master", None));
        decide(&watch, &seen(SQLITE_DROP_TABLE, "p", None));
        assert_eq!(decide(&watch, &seen(SQLITE_DELETE, "p", None)), SQLITE_OK);
        decide(&watch, &seen(SQLITE_DELETE, "ch", None));
        assert!(watch.dropped.borrow().is_none());
        decide(
            &watch,
            &Seen {
                trigger: Some("sdsync_del_ch"),
                ..seen(SQLITE_INSERT, "sdsync_tombstones", None)
            },
        );
        assert_eq!(watch.dropped.borrow().as_deref(), Some("p"));
        decide(&watch, &seen(SQLITE_DELETE, "sqlite_master", None));
        assert!(watch.compiling_drop.borrow().is_none());
        // Outside a `DROP`'s compilation, a capture trigger marks nothing
        // and a write to a table whose capture is lifted is refused.
        watch.dropped.take();
        decide(
            &watch,
            &Seen {
                trigger: Some("sdsync_ins_q"),
                ..seen(SQLITE_INSERT, "sdsync_versions", None)
            },
        );
        assert!(watch.dropped.borrow().is_none());
        assert_eq!(decide(&watch, &seen(SQLITE_DELETE, "p", None)), SQLITE_DENY);
    }
}
