//! Local updates go to `sdsync_log` and are folded into `sdsync_versions`
//! later (extension `fold.rs`): every reader sees them as if the trigger had
//! written the versions itself.

use sdsync_tests::{Lib, apply, copy_all, open, pairs, temp_dir};

fn pair(name: &str) -> (Lib, Lib) {
    let dir = temp_dir(name);
    (
        Lib::create(&dir.join("a.db")),
        Lib::create(&dir.join("b.db")),
    )
}

fn logged(lib: &Lib) -> i64 {
    lib.int("SELECT count(*) FROM sdsync_log")
}

#[test]
fn updates_not_folded_yet_are_served_and_counted_in_the_watermark() {
    let (a, b) = pair("log-serve");
    a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'x'), ('t2', 'y')");
    a.exec("UPDATE tags SET color = 'red'");
    assert_eq!(logged(&a), 2, "the updates wait in the log");
    assert_eq!(
        a.int("SELECT seq FROM sdsync_clock"),
        2,
        "the clock row lags"
    );
    let me = a.device();
    let mark = a.int(&format!(
        "SELECT seq FROM sdsync_watermarks WHERE origin = '{me}'"
    ));
    assert_eq!(mark, 4, "the watermark counts the log");
    // Another connection reading the changes folds them first.
    let other = open(&a.path);
    let n: i64 = other
        .query_row(
            "SELECT count(*) FROM sdsync_changes WHERE origin = ?1 AND seq > 2",
            [&me],
            |r| r.get(0),
        )
        .expect("read");
    assert_eq!(n, 2);
    assert_eq!(logged(&a), 0);
    assert_eq!(a.int("SELECT seq FROM sdsync_clock"), 4);
    copy_all(&a, &b);
    assert_eq!(a.digest(), b.digest());
}

#[test]
fn an_update_then_a_delete_folds_to_the_tombstone_alone() {
    let (a, b) = pair("log-delete");
    a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'x')");
    a.exec("UPDATE tags SET color = 'red'; DELETE FROM tags WHERE uuid = 't1'");
    assert_eq!(a.int("SELECT sdsync_fold()"), 1);
    assert_eq!(
        a.int("SELECT count(*) FROM sdsync_versions"),
        0,
        "no version of a row that is gone"
    );
    let ops: Vec<(String, i64)> = a.changes().iter().map(|c| (c.op.clone(), c.seq)).collect();
    assert_eq!(ops, vec![("delete".to_string(), 3)]);
    copy_all(&a, &b);
    assert_eq!(b.count("tags"), 0);
}

#[test]
fn a_rowid_reused_after_a_delete_keeps_the_new_rows_version() {
    let (a, b) = pair("log-reuse");
    a.exec("INSERT INTO tags(id, uuid, canonical_name) VALUES (7, 't1', 'x')");
    a.exec(
        "UPDATE tags SET color = 'red'; DELETE FROM tags WHERE id = 7; \
         INSERT INTO tags(id, uuid, canonical_name) VALUES (7, 't2', 'fresh')",
    );
    assert_eq!(logged(&a), 1);
    a.exec("SELECT sdsync_fold()");
    let versions: Vec<(i64, i64)> = pairs(
        &a.conn,
        "SELECT mask, seq FROM sdsync_versions WHERE rid = 7",
    );
    assert_eq!(
        versions.len(),
        1,
        "only the new row's version: {versions:?}"
    );
    assert_eq!(versions[0].1, 4);
    copy_all(&a, &b);
    assert_eq!(a.digest(), b.digest());
    assert_eq!(
        b.text("SELECT coalesce(color, 'none') FROM tags WHERE uuid = 't2'"),
        "none"
    );
}

#[test]
fn connections_taking_turns_issue_rising_numbers_and_clocks() {
    let (a, _b) = pair("log-turns");
    let second = Lib::open(&a.path);
    a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'x')");
    a.exec("INSERT INTO locations(uuid, name) VALUES ('l1', 'x')");
    for i in 0..20 {
        let (one, other) = if i % 2 == 0 {
            (&a, &second)
        } else {
            (&second, &a)
        };
        one.exec(&format!("UPDATE tags SET color = 'c{i}' WHERE uuid = 't1'"));
        other.exec(&format!("UPDATE locations SET name = 'n{i}'"));
        // A rollback on one leaves the other's numbers alone.
        one.exec(&format!(
            "BEGIN; UPDATE tags SET icon = 'i{i}' WHERE uuid = 't1'; ROLLBACK"
        ));
        other.exec(&format!(
            "INSERT INTO tags(uuid, canonical_name) VALUES ('x{i}', 'x')"
        ));
    }
    let log: Vec<(i64, i64)> = pairs(&a.conn, "SELECT seq, hlc FROM sdsync_log ORDER BY seq");
    assert_eq!(log.len(), 40);
    assert!(
        log.windows(2).all(|w| w[0].1 < w[1].1),
        "HLCs rise with the numbers: {log:?}"
    );
    a.exec("SELECT sdsync_fold()");
    let changes = a.changes();
    let mut seqs: Vec<i64> = changes.iter().map(|c| c.seq).collect();
    let mut hlcs: Vec<i64> = changes.iter().map(|c| c.hlc).collect();
    let n = seqs.len();
    seqs.dedup();
    hlcs.sort();
    hlcs.dedup();
    assert_eq!((seqs.len(), hlcs.len()), (n, n), "no number or clock twice");
    let mut by_seq: Vec<(i64, i64)> = changes.iter().map(|c| (c.seq, c.hlc)).collect();
    by_seq.sort();
    assert!(by_seq.windows(2).all(|w| w[0].1 < w[1].1), "{by_seq:?}");
}

#[test]
fn a_peer_change_applied_after_an_unfolded_update_merges_against_it() {
    let (a, b) = pair("log-apply");
    a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'x')");
    copy_all(&a, &b);
    // b's edit is older than a's, which waits in a's log.
    b.exec("UPDATE tags SET color = 'blue'");
    let older = b.changes();
    a.exec("UPDATE tags SET color = 'red'");
    assert_eq!(logged(&a), 1);
    a.exec("BEGIN");
    a.exec("UPDATE tags SET icon = 'star'");
    apply(&a.conn, &older).expect("apply");
    a.exec("COMMIT");
    assert_eq!(
        a.text("SELECT color FROM tags"),
        "red",
        "the newer local edit wins"
    );
    copy_all(&a, &b);
    copy_all(&b, &a);
    assert_eq!(a.digest(), b.digest());
    assert_eq!(b.text("SELECT color || icon FROM tags"), "redstar");
}

#[test]
fn a_column_dropped_after_unfolded_updates_keeps_their_columns() {
    let (a, b) = pair("log-drop");
    a.exec("INSERT INTO tags(uuid, canonical_name, color) VALUES ('t1', 'x', 'c')");
    copy_all(&a, &b);
    a.exec("UPDATE tags SET description = 'kept'");
    assert_eq!(logged(&a), 1);
    // `display_name` sits before `description`: dropping it moves the bits.
    let drop = "SELECT sdsync_alter('ALTER TABLE tags DROP COLUMN display_name')";
    a.exec(drop);
    assert_eq!(logged(&a), 0, "the repair folded the log first");
    b.exec(drop);
    copy_all(&a, &b);
    assert_eq!(b.text("SELECT description FROM tags"), "kept");
    assert_eq!(a.digest(), b.digest());
}

#[test]
fn owned_rows_of_another_device_are_refused_before_anything_is_logged() {
    let (a, b) = pair("log-owner");
    a.exec("INSERT INTO locations(uuid, name) VALUES ('l1', 'mine')");
    copy_all(&a, &b);
    let err = b.fails("UPDATE locations SET name = 'theirs'");
    assert!(err.contains("owned by device"), "{err}");
    assert_eq!(logged(&b), 0);
    a.exec("UPDATE locations SET name = 'renamed'");
    copy_all(&a, &b);
    assert_eq!(b.text("SELECT name FROM locations"), "renamed");
}

#[test]
fn a_library_attached_on_two_connections_never_issues_a_number_twice() {
    let (a, _b) = pair("log-attach");
    a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'x'), ('t2', 'y')");
    let attached = || {
        let conn = rusqlite::Connection::open_in_memory().expect("memory");
        sdsync_tests::load(&conn);
        conn.execute("ATTACH ?1 AS lib", [a.path.to_str().expect("utf-8 path")])
            .expect("attach");
        conn
    };
    let (one, two) = (attached(), attached());
    let run = |c: &rusqlite::Connection, sql: &str| c.execute_batch(sql).expect(sql);
    // `main`'s data version moves with neither's commits to `lib`.
    run(&one, "UPDATE lib.tags SET color = 'a' WHERE uuid = 't1'");
    run(&two, "UPDATE lib.tags SET color = 'b' WHERE uuid = 't2'");
    run(
        &one,
        "INSERT INTO lib.tags(uuid, canonical_name) VALUES ('t3', 'z')",
    );
    run(
        &two,
        "UPDATE OR IGNORE lib.tags SET color = 'c' WHERE uuid = 't2'",
    );
    let seqs: Vec<i64> = a.changes().iter().map(|c| c.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 5, 6], "{seqs:?}");
    assert_eq!(a.text("SELECT color FROM tags WHERE uuid = 't2'"), "c");
}

#[test]
fn the_clock_functions_called_from_sql_move_nothing() {
    let (a, _b) = pair("log-madeup");
    a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'x')");
    a.exec("SELECT sdsync_next_hlc(0, 1000000000), sdsync_next_stamp(0, 2000000000)");
    a.exec("UPDATE tags SET color = 'red'");
    let seqs: Vec<i64> = a.changes().iter().map(|c| c.seq).collect();
    assert_eq!(seqs, vec![1, 2], "{seqs:?}");
    let err = a.fails("SELECT sdsync_refuse_seq(2)");
    assert!(err.contains("sequence number 2 issued twice"), "{err}");
}
