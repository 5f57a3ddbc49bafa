//! A device takes one of its own changes back from a peer (and issues it
//! again under a new number) only when it lost it, as after a restore: a
//! device that holds the change, or something newer in its place, leaves it.

use sdsync_tests::{Change, Lib, apply, copy_all, now_ms, temp_dir};

/// The tag every step writes.
const TAG: &str = "tag-t";

fn lib(dir: &std::path::Path, name: &str, clock_ms: i64) -> Lib {
    let lib = Lib::create(&dir.join(format!("{name}.db")));
    lib.exec(&format!("SELECT sdsync_test_clock({clock_ms})"));
    lib
}

fn of(lib: &Lib, origin: &str, op: &str) -> Vec<Change> {
    lib.changes()
        .into_iter()
        .filter(|c| c.origin == origin && c.op == op && c.tbl == "tags")
        .collect()
}

/// A updates a column, B's newer update of it replaces A's there, C's older
/// delete then kills the row on A (B's update waits beside the tombstone).
/// C, which parked A's update, hands it back to A: A already holds something
/// newer for every column it carries, so it must not take it back (it did,
/// and re-issued it under a number no one copied any more: `convergence_prop`).
#[test]
fn an_update_superseded_in_a_parked_piece_is_not_taken_back() {
    let dir = temp_dir("own-changes");
    let now = now_ms() as i64;
    let (a, b, c) = (
        lib(&dir, "a", now + 1_000),
        lib(&dir, "b", now + 3_000),
        lib(&dir, "c", now),
    );
    a.exec(&format!(
        "INSERT INTO tags(uuid, canonical_name) VALUES ('{TAG}', 't')"
    ));
    copy_all(&a, &c);
    c.exec(&format!("DELETE FROM tags WHERE uuid = '{TAG}'"));
    a.exec(&format!("SELECT sdsync_test_clock({})", now + 2_000));
    a.exec(&format!("UPDATE tags SET color = 'a' WHERE uuid = '{TAG}'"));
    // C parks A's update (newer than its delete, the row dead there).
    copy_all(&a, &c);
    assert_eq!(
        c.int("SELECT count(*) FROM sdsync_parked"),
        1,
        "C parks A's update"
    );
    copy_all(&a, &b);
    b.exec(&format!("UPDATE tags SET color = 'b' WHERE uuid = '{TAG}'"));
    copy_all(&b, &a);
    let issued = a.int("SELECT seq FROM sdsync_clock");

    apply(&a.conn, &of(&c, &c.device(), "delete")).expect("C's delete");
    apply(&a.conn, &of(&c, &a.device(), "upsert")).expect("A's own update, back from C");

    assert_eq!(
        a.int("SELECT seq FROM sdsync_clock"),
        issued,
        "A issued nothing new"
    );
    assert_eq!(
        a.int("SELECT coalesce((SELECT value FROM sdsync_meta WHERE key = 'monotone_from'), 0)"),
        0,
        "A took nothing back"
    );
    for _ in 0..2 {
        for (x, y) in [(&a, &b), (&a, &c), (&b, &a), (&b, &c), (&c, &a), (&c, &b)] {
            copy_all(x, y);
        }
    }
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.digest(), c.digest());
    let marks = sdsync_tests::watermarks(&a.conn);
    assert_eq!(sdsync_tests::watermarks(&b.conn), marks);
    assert_eq!(sdsync_tests::watermarks(&c.conn), marks);
}
