//! A device takes one of its own changes back from a peer (and issues it
//! again under a new number) only when it lost it, as after a restore: a
//! device that holds the change, or something newer in its place, leaves it.

use sdsync_tests::{Change, Lib, apply, copy_all, now_ms, temp_dir, without};

/// The tag every step writes.
const TAG: &str = "tag-t";

fn lib(dir: &std::path::Path, name: &str, clock_ms: i64) -> Lib {
    let lib = Lib::create(&dir.join(format!("{name}.db")));
    lib.exec(&format!("SELECT sdsync_test_clock({clock_ms})"));
    lib
}

fn of(lib: &Lib, origin: &str, op: &str) -> Vec<Change> {
    of_table(lib, "tags", origin, op)
}

fn of_table(lib: &Lib, table: &str, origin: &str, op: &str) -> Vec<Change> {
    lib.changes()
        .into_iter()
        .filter(|c| c.origin == origin && c.op == op && c.tbl == table)
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
    converge(&[&a, &b, &c]);
}

/// A deletes its membership `m`; B, newer, re-creates it and moves it to
/// A's entry `e1`, which A deletes meanwhile. On A the move meets the deleted
/// entry and evicts `m`: no tombstone, B's pieces parked. C, lacking the
/// entries, holds A's delete with B's pieces parked beside it, and hands the
/// delete back: A holds something newer in its place (the re-creation,
/// parked), so it must not take it back (it did, issuing it again under a
/// number the peers that had copied from A already never saw:
/// `convergence_prop`'s `references_moved_and_deleted_converge`).
#[test]
fn a_delete_superseded_by_a_parked_re_creation_is_not_taken_back() {
    let dir = temp_dir("own-changes");
    let now = now_ms() as i64;
    let (a, b, c) = re_created_after_own_delete(&dir, now, |_| {});
    hand_back_own_delete(&a, &c);
    converge(&[&a, &b, &c]);
}

/// The scenario of the two delete tests: A creates membership `m` (of its
/// entry `e2`), `between` runs, A deletes `m`; B, newer, re-creates `m` and
/// moves it to A's entry `e1`, which A deletes meanwhile; C takes A's
/// delete, then B's re-creation, which parks there (C lacks the entries);
/// A takes B's changes, the move meets `e1` deleted and evicts `m` (no
/// tombstone, B's pieces parked). Returns A, B and C.
fn re_created_after_own_delete(
    dir: &std::path::Path,
    now: i64,
    between: impl FnOnce(&Lib),
) -> (Lib, Lib, Lib) {
    let (a, b, c) = (
        lib(dir, "a", now),
        lib(dir, "b", now + 3_000),
        lib(dir, "c", now),
    );
    a.exec(
        "INSERT INTO entries(uuid, name) VALUES ('e1', 'one'), ('e2', 'two');
         INSERT INTO collections(uuid, name) VALUES ('c1', 'album');
         INSERT INTO collection_entries(uuid, collection_id, entry_id)
           SELECT 'm', c.id, e.id FROM collections c, entries e WHERE c.uuid = 'c1' AND e.uuid = 'e2';",
    );
    between(&a);
    a.exec(&format!("SELECT sdsync_test_clock({})", now + 1_000));
    a.exec("DELETE FROM collection_entries WHERE uuid = 'm'");
    copy_all(&a, &b);
    b.exec(
        "INSERT INTO collection_entries(uuid, collection_id, entry_id)
           SELECT 'm', c.id, e.id FROM collections c, entries e WHERE c.uuid = 'c1' AND e.uuid = 'e2';
         UPDATE collection_entries SET entry_id = (SELECT id FROM entries WHERE uuid = 'e1') WHERE uuid = 'm';",
    );
    a.exec("DELETE FROM entries WHERE uuid = 'e1'");
    apply(&c.conn, &of_table(&a, MEMBERS, &a.device(), "delete")).expect("A's delete");
    apply(&c.conn, &of_table(&b, MEMBERS, &b.device(), "upsert")).expect("B's re-creation");
    assert_eq!(
        c.int("SELECT count(*) FROM sdsync_tombstones WHERE pk = 'm'"),
        1,
        "C holds A's delete"
    );
    copy_all(&b, &a);
    assert!(
        a.int("SELECT count(*) FROM sdsync_parked") > 0 && a.count(MEMBERS) == 0,
        "A evicted m, B's pieces parked"
    );
    (a, b, c)
}

/// The table of the delete tests' memberships.
const MEMBERS: &str = "collection_entries";

/// C hands A's own delete of `m` back to A, which issues nothing new.
fn hand_back_own_delete(a: &Lib, c: &Lib) {
    let issued = a.int("SELECT seq FROM sdsync_clock");
    apply(&a.conn, &of_table(c, MEMBERS, &a.device(), "delete")).expect("A's delete, back from C");
    assert_eq!(
        a.int("SELECT seq FROM sdsync_clock"),
        issued,
        "A issued nothing new"
    );
}

/// Two rounds of copies among all, then identical digests and watermarks.
fn converge(libs: &[&Lib]) {
    for _ in 0..2 {
        for x in libs {
            for y in libs {
                if x.path != y.path {
                    copy_all(x, y);
                }
            }
        }
    }
    let (first, marks) = (libs[0].digest(), sdsync_tests::watermarks(&libs[0].conn));
    for lib in &libs[1..] {
        assert_eq!(lib.digest(), first);
        assert_eq!(sdsync_tests::watermarks(&lib.conn), marks);
    }
}

/// A, restored to before it created tag relationship `r`, takes `r` back
/// first as a partial copy (its parent left at the default), then whole
/// while the parent tag is still missing here: the whole copy fills the
/// parent, parks for it, and is issued again once; each later copy waits
/// parked the same and keeps its number (found by review: every copy was
/// issued again).
#[test]
fn an_own_copy_filling_a_missing_reference_is_issued_again_once() {
    let dir = temp_dir("own-changes");
    let now = now_ms() as i64;
    let a = lib(&dir, "a", now);
    let backup = dir.join("a-backup.db");
    a.exec(&format!("VACUUM INTO '{}'", backup.display()));
    a.exec(
        "INSERT INTO tags(uuid, canonical_name) VALUES ('p', 'p'), ('c', 'c');
         INSERT INTO tag_relationships(uuid, parent_tag_id, child_tag_id)
           SELECT 'r', p.id, c.id FROM tags p, tags c WHERE p.uuid = 'p' AND c.uuid = 'c';",
    );
    let me = a.device();
    let child: Vec<Change> = of_table(&a, "tags", &me, "upsert")
        .into_iter()
        .filter(|c| c.pk == sdsync_syncer::library::Pk::Text("c".into()))
        .collect();
    let whole = of_table(&a, "tag_relationships", &me, "upsert")[0].clone();
    let restored = Lib::open(&backup);
    restored.exec(&format!("SELECT sdsync_test_clock({now})"));
    assert_eq!(restored.device(), me, "the same device, restored");
    apply(&restored.conn, &child).expect("the child tag");
    apply(&restored.conn, &[without(&whole, &["parent_tag_id"])]).expect("the partial copy");
    let before = restored.int("SELECT seq FROM sdsync_clock");

    apply(&restored.conn, std::slice::from_ref(&whole)).expect("the whole copy");
    apply(&restored.conn, std::slice::from_ref(&whole)).expect("the whole copy again");

    assert_eq!(
        restored.int("SELECT seq FROM sdsync_clock"),
        before + 1,
        "issued again once"
    );
    assert_eq!(
        restored.int("SELECT count(*) FROM sdsync_parked"),
        1,
        "waiting for the parent"
    );
}

/// The test before last with a tombstone already beside the parked
/// re-creation (D's delete of `m`, older than A's): A's own delete, handed
/// back, raises that tombstone without being issued again (found by
/// review).
#[test]
fn a_delete_superseded_by_a_parked_re_creation_over_an_older_tombstone_is_not_taken_back() {
    let dir = temp_dir("own-changes");
    let now = now_ms() as i64;
    let d = lib(&dir, "d", now);
    let (a, b, c) = re_created_after_own_delete(&dir, now, |a| {
        copy_all(a, &d);
        d.exec("DELETE FROM collection_entries WHERE uuid = 'm'");
    });
    apply(&a.conn, &of_table(&d, MEMBERS, &d.device(), "delete")).expect("D's older delete");
    assert_eq!(
        a.int("SELECT count(*) FROM sdsync_tombstones WHERE pk = 'm'"),
        1
    );
    hand_back_own_delete(&a, &c);
    converge(&[&a, &b, &c, &d]);
}
