//! Keeps `recursive_triggers` on for every connection that loaded the extension.
//!
//! ```sql
//! .load target/release/libsdsync
//! PRAGMA recursive_triggers = OFF;   -- Error: not authorized
//! ```
//!
//! `REPLACE` deletes the rows it replaces, and only with recursive triggers do
//! those deletes run the capture triggers (owner check, tombstone). Checking the
//! setting in the triggers themselves cost two index probes on every insert
//! (measured: about ×1.5 on a bulk insert); an authorizer decides once, when a
//! statement is prepared, so turning the setting off is refused instead. The
//! price: SQLite keeps one authorizer per connection, and an app that installs
//! its own afterwards replaces this one (documented in the README).

use std::ffi::{CStr, c_char, c_int, c_void};

use sqlite3ext_sys::sqlite3;

use crate::ffi::api;

const SQLITE_OK: c_int = 0;
const SQLITE_DENY: c_int = 1;
const SQLITE_PRAGMA: c_int = 19;

/// Installs the authorizer on a connection.
pub fn install(db: *mut sqlite3) -> Result<(), String> {
    // SAFETY: valid handle; the callback is a plain function without user data.
    let rc = unsafe { api!(set_authorizer)(db, Some(authorize), std::ptr::null_mut()) };
    if rc == SQLITE_OK {
        Ok(())
    } else {
        Err(format!(
            "sdsync: installing the authorizer failed (code {rc})"
        ))
    }
}

/// Denies `PRAGMA recursive_triggers = <false>`; allows everything else.
unsafe extern "C" fn authorize(
    _data: *mut c_void,
    action: c_int,
    first: *const c_char,
    second: *const c_char,
    _database: *const c_char,
    _trigger: *const c_char,
) -> c_int {
    if action != SQLITE_PRAGMA || first.is_null() || second.is_null() {
        return SQLITE_OK;
    }
    // A panic must not cross into SQLite; refusing nothing is the safe answer.
    std::panic::catch_unwind(|| {
        // SAFETY: SQLite passes NUL-terminated strings valid for this call.
        let (name, value) = unsafe { (CStr::from_ptr(first), CStr::from_ptr(second)) };
        let name = name.to_string_lossy();
        let value = value.to_string_lossy();
        if name.eq_ignore_ascii_case("recursive_triggers") && turns_off(&value) {
            SQLITE_DENY
        } else {
            SQLITE_OK
        }
    })
    .unwrap_or(SQLITE_OK)
}

/// Whether a pragma value means "off" (SQLite's boolean spellings).
fn turns_off(value: &str) -> bool {
    let v = value.trim().trim_matches(|c| c == '\'' || c == '"');
    ["0", "off", "false", "no"]
        .iter()
        .any(|off| v.eq_ignore_ascii_case(off))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_off_is_recognized() {
        for v in ["0", "OFF", "off", "false", "'no'", " No "] {
            assert!(turns_off(v), "{v}");
        }
        for v in ["1", "on", "yes", "true"] {
            assert!(!turns_off(v), "{v}");
        }
    }
}
