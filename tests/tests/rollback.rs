//! The apply engine's knowledge lives exactly as long as the transaction that
//! taught it: applies rolled back (whole transactions, savepoints, failed
//! statements) leave nothing behind that later applies could trust.

use std::time::{SystemTime, UNIX_EPOCH};

use sdsync_tests::{Lib, temp_dir};

const X: &str = "01890000-0000-7000-8000-00000000000a";
const Y: &str = "01890000-0000-7000-8000-00000000000b";

/// An HLC `ahead_ms` milliseconds from now.
fn hlc(ahead_ms: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    (now + ahead_ms) << 16
}

/// An insert of a whole tag, as a peer sends it.
fn tag(origin: &str, seq: i64, hlc: i64, pk: &str, name: &str) -> String {
    format!(
        "INSERT INTO sdsync_changes(tbl, pk, op, data, origin, seq, hlc, creates) VALUES \
         ('tags', '{pk}', 'upsert', json_object('canonical_name', '{name}', 'display_name', NULL, \
          'namespace', NULL, 'color', NULL, 'icon', NULL, 'description', NULL, 'created_at', NULL, \
          'updated_at', NULL), '{origin}', {seq}, {hlc}, 1)"
    )
}

fn origin_of(lib: &Lib, pk: &str) -> String {
    lib.text(&format!(
        "SELECT origin FROM sdsync_changes WHERE tbl = 'tags' AND pk = '{pk}'"
    ))
}

#[test]
fn a_rolled_back_apply_does_not_lend_its_origin_id_to_another_origin() {
    let a = Lib::create(&temp_dir("rb-origin").join("a.db"));
    for rollback in ["ROLLBACK", "ROLLBACK TO s; RELEASE s"] {
        let begin = if rollback == "ROLLBACK" {
            "BEGIN"
        } else {
            "SAVEPOINT s"
        };
        let suffix = rollback.len();
        a.exec(&format!(
            "{begin}; {}; {rollback};",
            tag(X, 1, hlc(0), &format!("x0-{suffix}"), "x0")
        ));
        assert_eq!(
            a.int(&format!(
                "SELECT count(*) FROM tags WHERE uuid = 'x0-{suffix}'"
            )),
            0
        );
        a.exec(&tag(Y, suffix as i64, hlc(0), &format!("y-{suffix}"), "y"));
        a.exec(&tag(X, suffix as i64, hlc(0), &format!("x-{suffix}"), "x"));
        assert_eq!(origin_of(&a, &format!("y-{suffix}")), Y);
        assert_eq!(origin_of(&a, &format!("x-{suffix}")), X, "{rollback}");
    }
}

#[test]
fn a_failed_apply_in_a_transaction_leaves_no_cached_origin() {
    let a = Lib::create(&temp_dir("rb-failed").join("a.db"));
    a.exec("BEGIN");
    a.exec(&tag(X, 1, hlc(0), "x1", "x1"));
    // The same statement fails as a whole (a NOT NULL violation in a later row
    // would do too); the transaction goes on and is rolled back afterwards.
    a.fails(&format!(
        "{}; SELECT raise_an_error()",
        tag(X, 2, hlc(0), "x2", "x2")
    ));
    a.exec("ROLLBACK");
    a.exec(&tag(Y, 1, hlc(0), "y1", "y1"));
    a.exec(&tag(X, 3, hlc(0), "x3", "x3"));
    assert_eq!(origin_of(&a, "y1"), Y);
    assert_eq!(origin_of(&a, "x3"), X);
}

#[test]
fn a_rolled_back_apply_does_not_keep_the_local_clock_low() {
    let a = Lib::create(&temp_dir("rb-clock").join("a.db"));
    let far = hlc(60_000);
    // The engine learns "the clock is at least `far`", then the write is undone.
    a.exec(&format!(
        "BEGIN; {}; ROLLBACK;",
        tag(X, 1, far, "t-rolled", "r")
    ));
    // A change a little older than `far` but in the future arrives for real...
    let near = hlc(30_000);
    a.exec(&tag(Y, 1, near, "t", "remote"));
    // ...so the next local edit must be newer, or it would lose everywhere.
    a.exec("UPDATE tags SET canonical_name = 'local' WHERE uuid = 't'");
    let local =
        a.int("SELECT max(hlc) FROM sdsync_changes WHERE pk = 't' AND origin = sdsync_device_id()");
    assert!(
        local > near,
        "local edit {local} not above the applied {near}"
    );
}

#[test]
fn a_rolled_back_parent_is_not_reused_for_a_child() {
    let dir = temp_dir("rb-parent");
    let a = Lib::create(&dir.join("a.db"));
    let loc = |seq: i64, pk: &str| {
        format!(
            "INSERT INTO sdsync_changes(tbl, pk, op, data, origin, seq, hlc, creates) VALUES \
             ('locations', '{pk}', 'upsert', json_object('device_id', NULL, 'volume_id', NULL, 'name', '{pk}', \
              'path', NULL, 'total_file_count', 0, 'total_byte_size', 0, 'scan_state', 'pending', \
              'created_at', '2026-01-01'), '{X}', {seq}, {}, 1)",
            hlc(0)
        )
    };
    let entry = |seq: i64, pk: &str| {
        format!(
            "INSERT INTO sdsync_changes(tbl, pk, op, data, origin, seq, hlc, creates) VALUES \
             ('entries', '{pk}', 'upsert', json_object('location_id', 'L', 'parent_id', NULL, 'content_id', NULL, \
              'name', '{pk}', 'kind', 'file', 'extension', NULL, 'size', 0, 'inode', NULL, 'created_at', NULL, \
              'modified_at', NULL), '{X}', {seq}, {}, 1)",
            hlc(0)
        )
    };
    // The parent L and a child are applied, the engine caches L's id, and it is
    // all rolled back; another location M then takes L's old id.
    a.exec(&format!(
        "BEGIN; {}; {}; ROLLBACK;",
        loc(1, "L"),
        entry(2, "e1")
    ));
    a.exec(&loc(3, "M"));
    // A child of L arriving before L must wait for L, not join M.
    a.exec(&entry(2, "e1"));
    assert_eq!(
        a.int("SELECT count(*) FROM entries WHERE uuid = 'e1'"),
        0,
        "attached to the wrong parent"
    );
    a.exec(&loc(1, "L"));
    assert_eq!(
        a.text(
            "SELECT l.uuid FROM entries e JOIN locations l ON l.id = e.location_id WHERE e.uuid = 'e1'"
        ),
        "L"
    );
}

/// An apply, a read of `sdsync_changes` or an sdsync function interrupted
/// halfway (like busy, locked or an I/O error: the environment, not the data)
/// reaches the caller with SQLite's own code, so the syncer retries the page
/// instead of quarantining its changes as bad. Afterwards the same connection
/// applies and reads as if nothing happened.
#[test]
fn an_interrupted_apply_reports_interrupt_and_the_connection_goes_on() {
    let mut a = Lib::create(&temp_dir("rb-interrupt").join("a.db"));
    for sql in [
        tag(X, 1, hlc(0), "i1", "i1"),
        "SELECT count(*) FROM sdsync_changes".to_string(),
        format!("SELECT sdsync_mark_complete('{Y}', 1)"),
    ] {
        // Interrupt at every point in turn, until the statement gets through.
        for steps in 1.. {
            let mut left = steps;
            a.conn
                .progress_handler(
                    1,
                    Some(move || {
                        left -= 1;
                        left == 0
                    }),
                )
                .expect("progress handler");
            let result = a.conn.execute_batch(&sql);
            a.conn
                .progress_handler(0, None::<fn() -> bool>)
                .expect("no progress handler");
            let Err(err) = result else { break };
            assert_eq!(
                err.sqlite_error_code(),
                Some(rusqlite::ErrorCode::OperationInterrupted),
                "{sql}, interrupted after {steps} steps: {err}"
            );
        }
    }
    assert_eq!(origin_of(&a, "i1"), X);
}

/// Reads of `sdsync_changes` keep the parsed catalog between reads, keyed by
/// `PRAGMA schema_version`. A table tracked in a transaction that rolls back
/// leaves nothing behind: a later schema that reaches the same version number
/// (another table, tracked the same way) is read as itself, and a self-join
/// (two cursors at once) reads the same rows on both sides.
#[test]
fn a_read_inside_a_rolled_back_track_does_not_lend_its_catalog_to_a_later_schema() {
    let a = Lib::create(&temp_dir("rb-catalog").join("a.db"));
    let before = a.int("SELECT count(*) FROM sdsync_changes");
    a.exec(
        "BEGIN;
         CREATE TABLE notes(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, body TEXT);
         SELECT sdsync_track('notes', 'shared');
         INSERT INTO notes(uuid, body) VALUES ('n1', 'in a rolled back transaction');",
    );
    assert_eq!(
        a.int("SELECT count(*) FROM sdsync_changes WHERE tbl = 'notes'"),
        1
    );
    let rolled_back_version = a.int("PRAGMA schema_version");
    a.exec("ROLLBACK");
    a.exec(
        "CREATE TABLE memos(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, text TEXT);
         SELECT sdsync_track('memos', 'shared');
         INSERT INTO memos(uuid, text) VALUES ('m1', 'kept');",
    );
    assert_eq!(
        a.int("PRAGMA schema_version"),
        rolled_back_version,
        "the test needs the two schemas under one version number"
    );
    assert_eq!(
        a.text("SELECT tbl || ' ' || data FROM sdsync_changes WHERE pk = 'm1'"),
        r#"memos {"text":"kept"}"#
    );
    assert_eq!(
        a.int("SELECT count(*) FROM sdsync_changes WHERE tbl = 'notes'"),
        0
    );
    let after = a.int("SELECT count(*) FROM sdsync_changes");
    assert_eq!(after, before + 1);
    assert_eq!(
        a.int("SELECT count(*) FROM sdsync_changes x JOIN sdsync_changes y USING (origin, seq)"),
        after
    );
}

/// A read inside a write transaction that dropped a tracked table skips that
/// table, as a read outside one does: the statement the reader kept for the
/// table is not used against the schema without it.
#[test]
fn a_read_in_the_transaction_that_dropped_a_tracked_table_skips_it() {
    let a = Lib::create(&temp_dir("rb-dropped").join("a.db"));
    a.exec(
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, body TEXT);
         SELECT sdsync_track('notes', 'shared');
         INSERT INTO notes(uuid, body) VALUES ('n1', 'one');
         INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one');",
    );
    let all = a.int("SELECT count(*) FROM sdsync_changes WHERE tbl IN ('notes', 'tags')");
    assert_eq!(all, 2);
    a.exec("BEGIN; DROP TABLE notes;");
    assert_eq!(
        a.int("SELECT count(*) FROM sdsync_changes WHERE tbl IN ('notes', 'tags')"),
        1
    );
    a.exec("ROLLBACK");
    assert_eq!(
        a.int("SELECT count(*) FROM sdsync_changes WHERE tbl IN ('notes', 'tags')"),
        2
    );
}
