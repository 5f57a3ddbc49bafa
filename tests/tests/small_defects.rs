//! Small defects that were each silent: names that collide, state that outlives
//! its table, numbers at their limits, a folder emptied by mistake.

use std::process::Command;

use sdsync_tests::{Lib, root, temp_dir};

fn plain(name: &str) -> Lib {
    let lib = Lib::open(&temp_dir(name).join("db.db"));
    lib.exec("PRAGMA journal_mode = WAL");
    lib
}

#[test]
fn tables_whose_names_extend_each_other_keep_their_own_triggers() {
    let lib = plain("names");
    lib.exec(
        "CREATE TABLE x_apply(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, v TEXT);
         CREATE TABLE x(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, v TEXT);
         SELECT sdsync_track('x_apply', 'shared');
         SELECT sdsync_track('x', 'shared');
         INSERT INTO x_apply(uuid, v) VALUES ('a', '1');
         INSERT INTO x(uuid, v) VALUES ('b', '1');
         DELETE FROM x_apply;
         DELETE FROM x;",
    );
    for t in ["x_apply", "x"] {
        assert_eq!(
            lib.int(&format!(
                "SELECT count(*) FROM sdsync_changes WHERE tbl = '{t}' AND op = 'delete'"
            )),
            1,
            "the delete of {t} was not captured"
        );
    }
    let triggers = lib.int(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND tbl_name IN ('x', 'x_apply')",
    );
    assert_eq!(triggers, 10);
}

#[test]
fn untracking_forgets_the_tables_tombstones() {
    let lib = plain("untrack");
    lib.exec(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, v TEXT);
         SELECT sdsync_track('t', 'shared');
         INSERT INTO t(uuid, v) VALUES ('u', '1');
         DELETE FROM t;
         SELECT sdsync_untrack('t');
         DROP TABLE t;
         CREATE TABLE t2(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, v TEXT);
         SELECT sdsync_track('t2', 'shared');",
    );
    assert_eq!(lib.int("SELECT count(*) FROM sdsync_tombstones"), 0);
    assert_eq!(
        lib.int("SELECT count(*) FROM sdsync_changes WHERE tbl = 't2'"),
        0,
        "t2 inherited t's tombstone"
    );
}

#[test]
fn sequence_numbers_beyond_2_pow_53_are_refused() {
    let lib = Lib::create(&temp_dir("maxseq").join("a.db"));
    let me = lib.device();
    let change = |seq: &str| {
        format!(
            "INSERT INTO sdsync_changes(tbl, pk, op, data, origin, seq, hlc, creates) VALUES \
             ('tags', 't', 'upsert', json_object('canonical_name', 'x'), '{me}', {seq}, 1 << 40, NULL)"
        )
    };
    for seq in ["9223372036854775807", "9007199254740993"] {
        let err = lib.fails(&change(seq));
        assert!(
            err.contains("seq must be a positive integer at most 2^53"),
            "{err}"
        );
        let err = lib.fails(&format!("SELECT sdsync_mark_complete('{me}', {seq})"));
        assert!(err.contains("outside 0..=2^53"), "{err}");
    }
    // Local writes go on numbering normally.
    lib.exec("INSERT INTO tags(uuid) VALUES ('a'); INSERT INTO tags(uuid) VALUES ('b');");
    assert_eq!(
        lib.int("SELECT count(DISTINCT seq) FROM sdsync_changes WHERE origin = sdsync_device_id()"),
        2
    );
}

/// The triggers take the clock bump's numbers from the connection, not the
/// clock row: without that row no bump runs, and the write is refused rather
/// than stamped with the previous change's numbers.
#[test]
fn a_write_without_a_clock_row_is_refused_not_stamped_with_old_numbers() {
    let lib = Lib::create(&temp_dir("noclock").join("a.db"));
    lib.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('a', 'one')");
    lib.exec("DELETE FROM sdsync_clock");
    for write in [
        "INSERT INTO tags(uuid, canonical_name) VALUES ('b', 'two')",
        "UPDATE tags SET canonical_name = 'uno' WHERE uuid = 'a'",
        "DELETE FROM tags WHERE uuid = 'a'",
    ] {
        let err = lib.fails(write);
        assert!(
            err.contains("no clock bump for the row being captured"),
            "{write}: {err}"
        );
    }
    assert_eq!(lib.int("SELECT count(*) FROM tags"), 1);
    assert_eq!(lib.int("SELECT count(DISTINCT seq) FROM sdsync_changes"), 1);
}

#[test]
fn demo_and_bench_refuse_to_empty_a_folder_they_did_not_make() {
    let dir = temp_dir("not-scratch");
    std::fs::write(dir.join("precious.txt"), b"keep me").expect("write");
    let sdsync = root().join("target/release/sdsync");
    for args in [
        vec!["demo", "--dir"],
        vec!["bench", "--rows", "10", "--runs", "1", "--dir"],
    ] {
        let out = Command::new(&sdsync)
            .args(&args)
            .arg(&dir)
            .output()
            .expect("run sdsync");
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("refusing to empty it"), "{args:?}: {err}");
        assert!(dir.join("precious.txt").exists(), "{args:?} deleted it");
    }
}

#[test]
fn loading_upgrades_triggers_of_an_older_version() {
    let path = temp_dir("upgrade").join("a.db");
    {
        let lib = Lib::create(&path);
        // What a format-1 library looked like: triggers named table-first,
        // and no record of issued numbers (format 7).
        lib.exec(
            "UPDATE sdsync_meta SET value = 1 WHERE key = 'format';
             CREATE TRIGGER sdsync_tags_ins AFTER INSERT ON tags BEGIN SELECT 1; END;
             DROP TABLE sdsync_issued;",
        );
    }
    let lib = Lib::open(&path);
    assert_eq!(
        lib.int("SELECT value FROM sdsync_meta WHERE key = 'format'"),
        10
    );
    lib.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one')");
    assert_eq!(
        lib.int("SELECT count(*) FROM sdsync_issued WHERE seq = (SELECT seq FROM sdsync_clock)"),
        1
    );
    assert_eq!(
        lib.int("SELECT count(*) FROM sqlite_schema WHERE name = 'sdsync_tags_ins'"),
        0
    );
    lib.exec(
        "INSERT INTO tags(uuid, color) VALUES ('t', 'a');
         INSERT INTO tags(uuid, color) VALUES ('t', 'b') ON CONFLICT(uuid) DO UPDATE SET color = excluded.color;
         INSERT INTO tags(uuid, color) VALUES ('t', 'c') ON CONFLICT(uuid) DO UPDATE SET color = excluded.color;",
    );
}

#[test]
fn a_host_without_a_busy_timeout_gets_one_and_a_chosen_one_is_kept() {
    let db = temp_dir("busy").join("a.db");
    let load = format!(
        ".load {}",
        sdsync_tests::extension_path().with_extension("").display()
    );
    let shell = |pre: &[&str]| {
        let out = Command::new("sqlite3")
            .arg(&db)
            .args(pre)
            .arg(&load)
            .arg("PRAGMA busy_timeout")
            .output()
            .expect("sqlite3 shell");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // The shell sets none: without one, it failed at once while a page applied.
    assert_eq!(shell(&[]), "5000");
    assert_eq!(shell(&[".timeout 1234"]), "1234");
}

#[test]
fn a_delete_that_would_leave_children_behind_is_refused_whatever_foreign_keys_says() {
    let dir = temp_dir("fk-off");
    let a = Lib::create(&dir.join("a.db"));
    let b = Lib::create(&dir.join("b.db"));
    a.exec(
        "INSERT INTO locations(uuid, name) VALUES ('L', 'l'), ('empty', 'e');
         INSERT INTO entries(uuid, location_id) SELECT 'e' || value, (SELECT id FROM locations WHERE uuid = 'L')
           FROM json_each('[1,2,3]');
         CREATE TABLE notes(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, entry INTEGER, body TEXT);
         SELECT sdsync_track('notes', 'shared', '{\"refs\": {\"entry\": \"entries\"}}');
         INSERT INTO notes(uuid, entry, body) SELECT 'n1', id, 'hi' FROM entries WHERE uuid = 'e1';",
    );
    b.exec(
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, entry INTEGER, body TEXT);
         SELECT sdsync_track('notes', 'shared', '{\"refs\": {\"entry\": \"entries\"}}');",
    );
    sdsync_tests::copy_all(&a, &b);
    // A writer that turned foreign keys off would leave the entries dangling
    // here while every peer removes them with the location.
    a.exec("PRAGMA foreign_keys = OFF");
    let err = a.fails("DELETE FROM locations WHERE uuid = 'L'");
    assert!(
        err.contains("would leave rows of entries referencing it through location_id"),
        "{err}"
    );
    a.exec("DELETE FROM locations WHERE uuid = 'empty'");
    // A `refs` reference is never enforced by SQLite: refused with keys on too.
    a.exec("PRAGMA foreign_keys = ON");
    let err = a.fails("DELETE FROM entries WHERE uuid = 'e1'");
    assert!(
        err.contains("rows of notes referencing it through entry"),
        "{err}"
    );
    a.exec("DELETE FROM notes; DELETE FROM locations WHERE uuid = 'L';");
    assert_eq!(a.count("entries"), 0, "cascaded with keys on");
    sdsync_tests::copy_all(&a, &b);
    assert_eq!(a.digest(), b.digest());
}

#[test]
fn a_peer_deleting_a_shared_row_does_not_take_the_owners_own_rows_away() {
    let dir = temp_dir("own-child");
    let f = Lib::create(&dir.join("f.db"));
    let g = Lib::create(&dir.join("g.db"));
    let h = Lib::create(&dir.join("h.db"));
    f.exec(
        "INSERT INTO content_identities(uuid, content_hash) VALUES ('c', 'abc');
         INSERT INTO entries(uuid, name, content_id) SELECT 'e', 'photo.jpg', id FROM content_identities WHERE uuid = 'c';",
    );
    // G and H hold the content identity; H also holds F's entry, G does not yet.
    sdsync_tests::copy_all(&f, &h);
    g.exec("INSERT INTO content_identities(uuid, content_hash) VALUES ('c', 'abc')");
    g.exec("DELETE FROM content_identities WHERE uuid = 'c'");
    for to in [&f, &h] {
        sdsync_tests::copy_all(&g, to);
    }
    // The owner keeps its entry, unlinked, as a change of its own.
    assert_eq!(
        f.int("SELECT count(*) FROM entries WHERE uuid = 'e' AND content_id IS NULL"),
        1
    );
    assert_eq!(f.int("SELECT count(*) FROM sdsync_parked"), 0);
    // H parked it with the deleted row; F's new version brings it back everywhere.
    for to in [&g, &h] {
        sdsync_tests::copy_all(&f, to);
    }
    sdsync_tests::copy_all(&g, &h);
    assert_eq!(f.digest(), g.digest());
    assert_eq!(f.digest(), h.digest());
    assert_eq!(h.int("SELECT count(*) FROM entries WHERE uuid = 'e'"), 1);
}

#[test]
fn opening_and_closing_connections_leaks_nothing() {
    // A fresh process (Debian's python3) so no other test's allocations count.
    // Each connection's function registrations were never freed: ~1.2 KB per
    // connection (5,960 KB over 5,000), a server opening one per request grew
    // without bound.
    let script = r#"
import sqlite3, sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1])
def once():
    c = sqlite3.connect(':memory:')
    c.enable_load_extension(True)
    c.load_extension(sys.argv[1])
    c.execute('SELECT sdsync_version(), sdsync_uuid()')
    c.close()
for _ in range(200):
    once()
before = rss()
for _ in range(5000):
    once()
print(rss() - before)
"#;
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(sdsync_tests::extension_path())
        .output()
        .expect("Debian's python3");
    let grown: i64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert!(grown < 1000, "RSS grew {grown} KB over 5,000 connections");
}
