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

/// Denies setting `recursive_triggers` to anything SQLite reads as off; allows
/// everything else.
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
        if name.eq_ignore_ascii_case("recursive_triggers") && !turns_on(&value) {
            SQLITE_DENY
        } else {
            SQLITE_OK
        }
    })
    .unwrap_or(SQLITE_OK)
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
}
