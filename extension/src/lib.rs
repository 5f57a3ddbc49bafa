//! `libsdsync.so`: the sdsync SQLite extension.
//!
//! ```sql
//! .load target/release/libsdsync
//! SELECT sdsync_track('tags', 'shared');
//! INSERT INTO tags(uuid, canonical_name) VALUES (sdsync_uuid_v5('tag', 'Vacation'), 'Vacation');
//! SELECT tbl, op, data, seq FROM sdsync_changes;
//! ```
//!
//! Loading registers the SQL functions (`functions`) and the `sdsync_changes`
//! table (`changes`) on the connection. Capture itself is SQL triggers installed by
//! `sdsync_track` (`track`, with the trigger text from `sdsync_core::triggers`);
//! everything they write lives in the same database file (`store`).

mod catalog;
mod changes;
mod ffi;
mod fold;
mod functions;
mod migrate;
mod pace;
mod store;
mod track;
mod values;

use std::ffi::{c_char, c_int};
use std::rc::Rc;

use sqlite3ext_sys::{sqlite3, sqlite3_api_routines};

use crate::ffi::{SQLITE_ERROR, SQLITE_OK, guard, sqlite_string};
use crate::functions::Conn;

/// How long a writer waits for the lock when its host set no busy timeout.
const BUSY_TIMEOUT_MS: i64 = 5000;

/// The syncer is a second writer of every library: it commits pages at any time.
/// A connection with no busy timeout (the `sqlite3` shell's default; Python,
/// better-sqlite3 and rusqlite set 5 s themselves) would fail at once with
/// "database is locked" whenever a page is being applied, so loading the
/// extension gives it one. A timeout the host chose is kept.
fn set_busy_timeout(db: ffi::Db) -> Result<(), String> {
    let current = db
        .query_i64("PRAGMA busy_timeout", &[])
        .map_err(|e| format!("sdsync: reading busy_timeout failed: {e}"))?
        .unwrap_or(0);
    if current > 0 {
        return Ok(());
    }
    db.exec(&format!("PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}"))
        .map_err(|e| format!("sdsync: setting busy_timeout failed: {e}"))
}

/// The entry point SQLite derives from the file name `libsdsync.so`.
///
/// # Safety
/// Called by SQLite's extension loader with a valid connection and API table.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sqlite3_sdsync_init(
    db: *mut sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *mut sqlite3_api_routines,
) -> c_int {
    // SAFETY: p_api is the host's routine table; both copies are set before use.
    unsafe { sqlite_loadable::ext::faux_sqlite_extension_init2(p_api) };
    ffi::set_api(p_api);
    let result = guard(|| {
        let conn = Rc::new(Conn::default());
        functions::register(db, &conn)
            .map_err(|e| format!("sdsync: registering functions failed: {e}"))?;
        changes::register(db, &conn)?;
        migrate::status::register(db)?;
        // Every writer of a library enforces (and cascades) its references the same
        // way, whatever its host's default: a delete that cascades on one device
        // and leaves dangling children on another would diverge.
        //
        // `INSERT OR REPLACE` deletes the rows it replaces; only with recursive
        // triggers do those deletes run the capture triggers (owner check and
        // tombstone), so a replaced row is captured as a delete and a re-create.
        ffi::Db::from_raw(db)
            .exec("PRAGMA foreign_keys = ON; PRAGMA recursive_triggers = ON")
            .map_err(|e| {
                format!("sdsync: setting foreign_keys and recursive_triggers failed: {e}")
            })?;
        migrate::watch::install(db, &conn)?;
        set_busy_timeout(ffi::Db::from_raw(db))?;
        // Databases attached before the extension loaded (the authorizer
        // sees later ones; see `Conn::attached`). Reading the list can find
        // the database locked: then the connection counts as attached,
        // which only costs it the stamp's shortcut, never a load.
        let attached = ffi::Db::from_raw(db).query_i64(
            "SELECT count(*) FROM pragma_database_list WHERE name NOT IN ('main', 'temp')",
            &[],
        );
        conn.attached
            .set(!matches!(attached, Ok(Some(0)) | Ok(None)));
        // Best effort by design (see `track::upgrade`): a failure leaves working
        // older triggers and is retried by the next load; a failed repair is
        // retried by the next commit of DDL and by every sweep.
        let _ = track::upgrade(ffi::Db::from_raw(db));
        let _ = migrate::repair_if_needed(ffi::Db::from_raw(db), conn.wall_ms());
        Ok::<(), String>(())
    });
    match result {
        Ok(()) => SQLITE_OK,
        Err(message) => {
            if !pz_err_msg.is_null() {
                // SAFETY: out-parameter from SQLite, freed by it.
                unsafe { *pz_err_msg = sqlite_string(&message) };
            }
            SQLITE_ERROR
        }
    }
}
