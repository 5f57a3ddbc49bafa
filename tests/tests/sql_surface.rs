//! The extension's SQL contract: functions, flags, clock, validation, identity.

use rusqlite::Connection;
use sdsync_tests::{Lib, apply, apply_each, open, temp_dir};

fn lib(name: &str) -> Lib {
    Lib::create(&temp_dir(name).join("database.db"))
}

#[test]
fn refused_change_in_an_open_transaction_changes_nothing() {
    let a = lib("atomic-a");
    let b = lib("atomic-b");
    for l in [&a, &b] {
        l.exec("CREATE TABLE notes(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, title TEXT UNIQUE); SELECT sdsync_track('notes', 'shared');");
    }
    b.exec("INSERT INTO notes(uuid, title) VALUES ('n1', 'same')");
    a.exec("INSERT INTO notes(uuid, title) VALUES ('n2', 'same')");
    let incoming = a.changes();
    let snapshot = |l: &Lib| {
        (
            l.digest(),
            l.changes(),
            l.int("SELECT hlc FROM sdsync_clock"),
            l.int("SELECT count(*) FROM sdsync_origins"),
            l.int("SELECT count(*) FROM sdsync_parked"),
        )
    };
    let before = snapshot(&b);
    b.exec("BEGIN");
    let err = apply_each(&b.conn, &incoming)
        .expect_err("UNIQUE clash")
        .to_string();
    b.exec("COMMIT");
    assert!(
        err.contains("UNIQUE constraint failed: notes.title"),
        "{err}"
    );
    assert_eq!(snapshot(&b), before);
}

#[test]
fn hlc_is_monotonic_across_connections_and_reopen() {
    let dir = temp_dir("hlc");
    let path = dir.join("database.db");
    let a = Lib::create(&path);
    let b = Lib::open(&path);
    let mut last = 0;
    for i in 0..200 {
        let writer = if i % 2 == 0 { &a } else { &b };
        writer.exec(&format!(
            "INSERT INTO tags(uuid, canonical_name) VALUES ('t{i}', 'n{i}')"
        ));
        let hlc = a.int("SELECT max(hlc) FROM sdsync_versions");
        assert!(hlc > last, "write {i}: {hlc} <= {last}");
        last = hlc;
    }
    let now = a.int("SELECT sdsync_hlc_now()");
    assert!(now > last);
    drop((a, b));
    let again = Lib::open(&path);
    assert!(
        again.int("SELECT sdsync_hlc_now()") > now,
        "persists across reopen"
    );
    let seqs: Vec<i64> = again.changes().iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
}

#[test]
fn clock_never_goes_back_when_the_wall_clock_does() {
    let a = lib("backwards");
    // A connection's first change on a clock ahead of the wall clock takes a
    // step of its own (`sdsync_next_hlc`): this one has issued before.
    a.exec("INSERT INTO tags(uuid) VALUES ('s')");
    // The last issued HLC is an hour ahead of the wall clock (a clock that was fast).
    let ahead = a.int("SELECT sdsync_wall() + ((3600 * 1000) << 16)");
    a.exec(&format!("UPDATE sdsync_clock SET hlc = {ahead}"));
    a.exec("INSERT INTO tags(uuid) VALUES ('t')");
    assert_eq!(a.int("SELECT max(hlc) FROM sdsync_versions"), ahead + 1);
    assert_eq!(a.int("SELECT sdsync_hlc_now()"), ahead + 2);
    let text = a.text(&format!("SELECT sdsync_hlc_text({})", ahead + 2));
    assert!(text.ends_with("Z#2"), "{text}");
}

/// A connection's first change on a clock at or ahead of the wall clock
/// takes a step of 1 to 2,048 HLC units drawn from the clock and the wall
/// clock, recorded in `sdsync_issued`; later ones + 1; on a clock behind the
/// wall clock it takes the wall clock. So an app writing to a whole folder
/// restored from a copy younger than its clock's lead does not issue the
/// lost history's very pairs again (README, "A restore within the clock
/// skew"). The wall clock is pinned, so the step is known.
#[test]
fn a_connections_first_change_ahead_of_the_wall_clock_steps_the_clock() {
    let dir = temp_dir("first-step");
    let path = dir.join("database.db");
    let wall_ms: i64 = 1_800_000_000_000;
    let wall = wall_ms << 16;
    let ahead = wall + ((60 * 1000) << 16);
    let a = Lib::create(&path);
    a.exec(&format!("UPDATE sdsync_clock SET hlc = {ahead}"));
    let seq = a.int("SELECT seq FROM sdsync_clock");
    drop(a);
    let b = Lib::open(&path);
    b.exec(&format!("SELECT sdsync_test_clock({wall_ms})"));
    b.exec("INSERT INTO tags(uuid) VALUES ('t1')");
    b.exec("INSERT INTO tags(uuid) VALUES ('t2')");
    let step = sdsync_core::hlc::step(seq, ahead, wall, 2048);
    assert!(step > 1, "pick another wall clock: this one draws 1");
    let first = b.int("SELECT hlc FROM sdsync_changes WHERE pk = 't1'");
    assert_eq!(first, ahead + step);
    assert_eq!(
        b.int(&format!(
            "SELECT hlc FROM sdsync_issued WHERE seq = {}",
            seq + 1
        )),
        first
    );
    assert_eq!(
        b.int("SELECT hlc FROM sdsync_changes WHERE pk = 't2'"),
        first + 1
    );
    // Behind the wall clock: the wall clock, as ever.
    drop(b);
    let c = Lib::open(&path);
    c.exec(&format!("SELECT sdsync_test_clock({})", wall_ms + 120_000));
    c.exec("INSERT INTO tags(uuid) VALUES ('t3')");
    assert_eq!(
        c.int("SELECT hlc FROM sdsync_changes WHERE pk = 't3'"),
        (wall_ms + 120_000) << 16
    );
}

#[test]
fn applying_raises_the_local_clock() {
    let a = lib("raise-a");
    let b = lib("raise-b");
    let ahead = a.int("SELECT sdsync_wall() + ((60 * 1000) << 16)");
    a.exec(&format!(
        "UPDATE sdsync_clock SET hlc = {ahead}; INSERT INTO tags(uuid) VALUES ('t');"
    ));
    apply(&b.conn, &a.changes()).expect("within drift");
    b.exec("INSERT INTO tags(uuid) VALUES ('u')");
    let theirs = a.int("SELECT hlc FROM sdsync_changes WHERE pk = 't'");
    let ours = b.int("SELECT hlc FROM sdsync_changes WHERE pk = 'u'");
    assert!(ours > theirs, "receive rule: {ours} > {theirs}");
}

#[test]
fn trusted_schema_off_keeps_capture_and_blocks_side_effects_from_the_schema() {
    let a = lib("trusted");
    a.exec("PRAGMA trusted_schema = OFF");
    a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t', 'x'); UPDATE tags SET color = 'red'; DELETE FROM tags;");
    assert_eq!(a.changes().len(), 1, "tombstone captured");
    // A schema object planted in the file cannot call functions with side effects.
    a.exec("CREATE VIEW planted AS SELECT sdsync_hlc_now() AS h");
    let err = a.fails("SELECT * FROM planted");
    assert!(err.contains("unsafe use of sdsync_hlc_now()"), "{err}");
    a.exec("CREATE TABLE t2(x); CREATE TRIGGER planted_t AFTER INSERT ON t2 BEGIN SELECT sdsync_track('t2', 'shared'); END;");
    let err = a.fails("INSERT INTO t2 VALUES (1)");
    assert!(err.contains("unsafe use of sdsync_track()"), "{err}");
    let err = a.fails("CREATE VIEW v2 AS SELECT * FROM sdsync_changes; SELECT * FROM v2;");
    assert!(err.contains("unsafe use of virtual table"), "{err}");
    // Pure helpers stay usable anywhere.
    a.exec("CREATE VIEW ok AS SELECT sdsync_uuid_v5('tag', 'x') AS u");
    assert_eq!(
        a.text("SELECT u FROM ok"),
        a.text("SELECT sdsync_uuid_v5('tag', 'x')")
    );
}

#[test]
fn track_validation_errors_say_what_to_change() {
    let a = lib("validate");
    let cases = [
        (
            "CREATE TABLE n1(id INTEGER PRIMARY KEY, name TEXT)",
            "SELECT sdsync_track('n1', 'shared')",
            "no column 'uuid' to identify rows",
        ),
        (
            "CREATE TABLE n2(uuid TEXT UNIQUE)",
            "SELECT sdsync_track('n2', 'shared')",
            "column 'uuid' must be NOT NULL",
        ),
        (
            "CREATE TABLE n3(uuid TEXT NOT NULL)",
            "SELECT sdsync_track('n3', 'shared')",
            "column 'uuid' must be UNIQUE",
        ),
        (
            "CREATE TABLE n4(uuid TEXT NOT NULL UNIQUE)",
            "SELECT sdsync_track('n4', 'both')",
            "unknown sync class 'both'",
        ),
        (
            "CREATE TABLE n5(uuid TEXT NOT NULL UNIQUE, o INTEGER REFERENCES other(id))",
            "SELECT sdsync_track('n5', 'owned')",
            "references table 'other', which is not tracked",
        ),
        (
            "CREATE TABLE n6(uuid TEXT NOT NULL UNIQUE)",
            "SELECT sdsync_track('n6', 'owned', '{\"uuid_col\":\"x\"}')",
            "unknown field `uuid_col`",
        ),
        (
            "SELECT 1",
            "SELECT sdsync_track('missing', 'owned')",
            "no such table: missing",
        ),
        (
            "SELECT 1",
            "SELECT sdsync_untrack('missing')",
            "table missing is not tracked",
        ),
        (
            "SELECT 1",
            "SELECT sdsync_untrack('entries')",
            "is referenced by tracked table",
        ),
    ];
    for (setup, call, expected) in cases {
        a.exec(setup);
        let err = a.fails(call);
        assert!(
            err.contains(expected),
            "{call}: {expected:?} not in {err:?}"
        );
    }
    // Columns added at the end are picked up by re-tracking.
    a.exec("ALTER TABLE collections ADD COLUMN cover TEXT");
    let msg = a.text("SELECT sdsync_track('collections', 'shared')");
    assert!(msg.contains("5 synced columns"), "{msg}");
}

#[test]
fn tracking_records_existing_rows_and_untracking_forgets_them() {
    let a = lib("existing");
    a.exec("CREATE TABLE old(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, v INTEGER); INSERT INTO old(uuid, v) VALUES ('a', 1), ('b', 2);");
    let msg = a.text("SELECT sdsync_track('old', 'owned')");
    assert!(msg.ends_with("2 existing rows recorded"), "{msg}");
    assert_eq!(a.changes().len(), 2);
    a.text("SELECT sdsync_untrack('old')");
    assert_eq!(a.changes().len(), 0);
    a.exec("INSERT INTO old(uuid, v) VALUES ('c', 3)");
    assert_eq!(a.changes().len(), 0, "no trigger left");
}

#[test]
fn a_copied_file_gets_a_new_identity() {
    let dir = temp_dir("copy");
    let a = Lib::create(&dir.join("a.db"));
    a.exec("INSERT INTO entries(uuid, name) VALUES ('e', 'x')");
    a.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    std::fs::copy(&a.path, dir.join("copy.db")).expect("copy");
    let copy = Lib::open(&dir.join("copy.db"));
    let original = a.device();
    assert_eq!(copy.device(), original);
    let new_id = copy.text("SELECT sdsync_reidentify()");
    assert_ne!(new_id, original);
    assert_eq!(copy.device(), new_id);
    // The copy no longer owns the original's rows, and its own writes start at seq 1.
    let err = copy.fails("UPDATE entries SET name = 'y'");
    assert!(err.contains(&original), "{err}");
    copy.exec("INSERT INTO entries(uuid, name) VALUES ('f', 'z')");
    let mine = copy.int(&format!(
        "SELECT seq FROM sdsync_changes WHERE origin = '{new_id}'"
    ));
    assert_eq!(mine, 1);
}

#[test]
fn uuid_helpers_and_rekey_guard() {
    let a = lib("uuids");
    let v7a = a.text("SELECT sdsync_uuid()");
    let v7b = a.text("SELECT sdsync_uuid()");
    assert!(v7a < v7b && v7a.len() == 36);
    assert_eq!(
        a.text("SELECT sdsync_uuid_v5('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'python.org')"),
        "886313e1-3b8a-5372-9b90-0c9aee199e5d"
    );
    a.exec("INSERT INTO tags(uuid) VALUES ('t')");
    let err = a.fails("UPDATE tags SET uuid = 'u'");
    assert!(err.contains("cannot change"), "{err}");
}

#[test]
fn changes_since_a_watermark_use_the_index() {
    let a = lib("index");
    a.exec("INSERT INTO tags(uuid) VALUES ('t1'), ('t2'), ('t3')");
    let device = a.device();
    let plan: String = a
        .conn
        .query_row(
            &format!("EXPLAIN QUERY PLAN SELECT * FROM sdsync_changes WHERE origin = '{device}' AND seq > 1"),
            [],
            |r| r.get(3),
        )
        .expect("plan");
    assert!(plan.contains("VIRTUAL TABLE INDEX 3"), "{plan}");
    let inner: String = a
        .conn
        .query_row(
            "EXPLAIN QUERY PLAN SELECT * FROM sdsync_versions WHERE origin = 1 AND seq > 1",
            [],
            |r| r.get(3),
        )
        .expect("inner plan");
    assert!(
        inner.contains("USING COVERING INDEX sdsync_versions_by_origin")
            || inner.contains("USING INDEX sdsync_versions_by_origin"),
        "{inner}"
    );
    let since: Vec<i64> = sdsync_tests::read_changes(
        &a.conn,
        &format!("SELECT tbl, pk, op, data, origin, seq, hlc, creates FROM sdsync_changes WHERE origin = '{device}' AND seq > 1"),
    )
    .iter()
    .map(|c| c.seq)
    .collect();
    assert_eq!(since, vec![2, 3]);
    let at_least: i64 = a.int(&format!(
        "SELECT count(*) FROM sdsync_changes WHERE origin = '{device}' AND seq >= 2"
    ));
    assert_eq!(at_least, 2);
}

#[test]
fn extension_loads_into_a_plain_connection_without_tables() {
    let dir = temp_dir("plain");
    let conn: Connection = open(&dir.join("x.db"));
    let n: i64 = conn
        .query_row("SELECT count(*) FROM sdsync_changes", [], |r| r.get(0))
        .expect("empty read");
    assert_eq!(n, 0);
    let v: String = conn
        .query_row("SELECT sdsync_version()", [], |r| r.get(0))
        .expect("version");
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
}

/// `sdsync_autocheckpoint(pages)` sets when this connection's commits
/// checkpoint (the extension's WAL hook replaces SQLite's automatic one).
#[test]
fn autocheckpoint_is_set_per_connection() {
    let dir = temp_dir("autocheckpoint");
    let lib = Lib::create(&dir.join("database.db"));
    let set = |pages: i64| -> i64 {
        lib.conn
            .query_row("SELECT sdsync_autocheckpoint(?1)", [pages], |r| r.get(0))
            .unwrap()
    };
    // The WAL file's size in pages after about 8 MB of 1 MB commits (it is
    // reused from its start after a checkpoint, so it grows only without).
    let wal_pages_after_writes = |round: i64| -> u64 {
        for i in 0..8 {
            lib.exec(&format!(
                "WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 1000)
                 INSERT INTO audit_log(uuid, action, details)
                 SELECT sdsync_uuid(), 'w{round}-{i}', hex(randomblob(500)) FROM s"
            ));
        }
        std::fs::metadata(dir.join("database.db-wal"))
            .unwrap()
            .len()
            / 4096
    };
    assert_eq!(set(1000), 1000, "SQLite's default before");
    let default = wal_pages_after_writes(1);
    assert!(default < 2000, "checkpointed at 1,000 pages: {default}");
    assert_eq!(set(0), 1000);
    let never = wal_pages_after_writes(2);
    assert!(never > 2000, "never checkpointed: {never}");
}

/// The record of issued numbers (`sdsync_issued`, README "Backup and
/// restore"): one `(seq, hlc)` when the HLC enters a new second, written in
/// the writer's own transaction (a rollback takes it back), none for more
/// writes in the same second, emptied when the database takes a new identity.
#[test]
fn issued_numbers_are_recorded_once_a_second_in_the_writers_transaction() {
    let a = lib("issued");
    let base: i64 = 1_800_000_000_000;
    let count = || a.int("SELECT count(*) FROM sdsync_issued");
    let tag = |n: u32| format!("INSERT INTO tags(uuid, canonical_name) VALUES ('t{n}', 'tag {n}')");
    a.exec(&format!("SELECT sdsync_test_clock({base})"));
    let before = count();
    a.exec(&tag(1));
    a.exec(&tag(2));
    assert_eq!(count(), before + 1, "two writes in one second: one record");
    assert_eq!(
        a.int("SELECT hlc FROM sdsync_issued ORDER BY seq DESC LIMIT 1"),
        base << 16
    );
    a.exec(&format!("SELECT sdsync_test_clock({})", base + 2_000));
    a.exec(&format!("BEGIN; {}; ROLLBACK;", tag(3)));
    assert_eq!(count(), before + 1, "a rolled-back write leaves no record");
    a.exec(&tag(4));
    assert_eq!(count(), before + 2);
    assert_eq!(
        a.int("SELECT seq FROM sdsync_issued ORDER BY seq DESC LIMIT 1"),
        a.int("SELECT seq FROM sdsync_clock")
    );
    assert_eq!(
        a.int("SELECT hlc FROM sdsync_issued ORDER BY seq DESC LIMIT 1"),
        (base + 2_000) << 16
    );
    a.exec("SELECT sdsync_next_hlc(0, 1000000000)");
    assert_eq!(count(), before + 2, "made-up arguments plant nothing");
    a.exec("SELECT sdsync_reidentify()");
    assert_eq!(count(), 0, "a new identity starts a new record");
}
