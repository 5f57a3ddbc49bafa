//! A whole folder (database and `sync.db`) restored from a copy, whose app
//! then rewrites every row it wrote since: the device's own current changes
//! no longer show that it issued the lost changes' numbers again, and only
//! the record of issued numbers (`sdsync_issued`) and the clock its peers
//! heard last can tell it (simulation seed 9673 of the whole-folder runs,
//! and eight more of the 9,000 run).
//!
//! Both tests pin the wall clock (`sdsync_test_clock`) inside one 1.024 s
//! window of the HLC, so that the record's once-a-second pair never falls
//! between the lost changes and the new ones: only the record of a
//! connection's first change does.

#[path = "common/mesh.rs"]
mod mesh;

use std::time::Duration;

use mesh::{Dev, Mesh};
use rusqlite::backup::Backup;
use sdsync_core::hlc::wall_millis;
use sdsync_syncer::proto::node::{Config, Event, Node};
use sdsync_tests::sim::TAGS_RENAMED_BY_REBUILD;

/// A restored (app-side: first) connection's first change is recorded, so a
/// peer holding a lost change under its number tells the restore, although
/// the app superseded that first change at once. Here A's delete of t1
/// reached B; A's folder goes back to before it; A's app creates n1 under
/// the delete's number, deletes it again, and writes four more. B's Hello
/// names the lost delete: A renumbers, takes the delete back, and both end
/// without t1. Fails without the first-change record: A keeps t1.
#[test]
fn a_restored_folder_rewritten_at_once_is_told_by_its_first_change() {
    let mut m = Mesh::new("lineage-first", 2);
    let (window, db, sync) = delete_lost_by_a(&mut m);
    m.restore_folder(0, &db, &sync);
    rewrite_after_restore(&m, window);
    a_recovers(&mut m);
}

/// The same restore when the peer holds the lost change only below the
/// newest changes of A it holds: A's lost delete reached B in a page pushed
/// at its commit, and no Hello of A's followed it; restored, A's new changes
/// reached B through C, which never held the lost one. B's Hello names the
/// newest changes of A it holds (all new) and the last one it took from A
/// itself (the lost delete), under a number whose first change after the
/// restore A recorded: A recovers. Fails without the first-change record:
/// A keeps t1.
#[test]
fn a_lost_change_below_the_newest_a_peer_holds_is_named_as_the_last_taken() {
    let mut m = Mesh::new("lineage-page-clock", 3);
    let window = pin_clocks(&m);
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'a'), ('t2', 'b')");
    m.link(0, 2);
    m.unlink(0, 2);
    m.link(0, 1);
    let (db, sync) = back_up_folder(&m, 0);
    // B takes A's delete in a page pushed at its commit; no Hello follows.
    m.devs[0].exec("DELETE FROM tags WHERE uuid = 't1'");
    m.committed(0);
    m.unlink(0, 1);
    assert_eq!(m.devs[1].count("tags"), 1, "B took the delete");
    m.restore_folder(0, &db, &sync);
    rewrite_after_restore(&m, window);
    // A's new changes reach B through C.
    m.link(0, 2);
    m.unlink(0, 2);
    m.link(1, 2);
    m.unlink(1, 2);
    assert_eq!(m.count_events(0, is_restored), 0, "nothing told A yet");
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        m.link(a, b);
    }
    for _ in 0..3 {
        m.advance(10_000);
    }
    assert_eq!(m.count_events(0, is_restored), 1, "{:?}", m.events);
    for d in 0..3 {
        assert_eq!(m.devs[d].count("tags"), 5, "device {d}");
    }
    m.assert_identical();
}

/// The same restore done into the open connection (the shell's `.restore`,
/// as the simulation does it), which then writes again: the clock below a
/// number the connection issued is recorded like a first change. Fails
/// without it: A keeps t1.
#[test]
fn a_restore_into_an_open_connection_is_told_by_its_next_change() {
    let mut m = Mesh::new("lineage-open", 2);
    let (window, db, sync) = delete_lost_by_a(&mut m);
    let a = m.devs.remove(0);
    let mut store = a.store;
    for (from, to) in [(&db, &mut store.lib.conn), (&sync, &mut store.sync)] {
        let from = rusqlite::Connection::open(from).expect("open the copy");
        Backup::new(&from, to)
            .and_then(|b| b.run_to_completion(1000, Duration::ZERO, None))
            .expect("restore into the open connection");
    }
    let store = store.reopened().expect("the syncer starts again");
    let mut node = Node::new(&a.id, "lib", Config::default());
    node.add_peer(&m.devs[0].id);
    m.devs.insert(0, Dev { store, node, ..a });
    rewrite_after_restore(&m, window);
    a_recovers(&mut m);
}

/// A change a restored device took back for a column it lacked reaches a
/// peer that took its first copy, once the device writes that column
/// (simulation seed 9714 of the whole-folder runs). A writes t1's
/// `description`; B, which renamed it to `summary`, takes it. A is restored
/// to before the write and reuses its number for t9, which C takes. A meets
/// B and takes t1 back: B serves `summary`, so A keeps the change for that
/// column (under its old number, which C's watermark covers), creates t1
/// with the default and issues the change again; C takes that copy. Both
/// upgrade (A by a rebuild that adds a column); A writes the kept value and
/// issues the change a third time, same HLC. C holds that change already
/// (by HLC) but must take the column it carries: it used to keep the
/// default, under the same version as A's value. And B, which holds the
/// value, keeps it when A's second copy names the column by its former name
/// with A's default.
#[test]
fn a_change_written_again_after_an_upgrade_reaches_peers_holding_its_first_copy() {
    let mut m = Mesh::new("renumbered-kept", 3);
    let upgrade = "ALTER TABLE tags ADD COLUMN emoji TEXT;
                   ALTER TABLE tags RENAME COLUMN description TO summary";
    a_takes_t1_back_from_b(&mut m, T1, upgrade);
    assert_eq!(m.devs[0].kept(), 1, "A keeps t1's summary for later");
    assert_eq!(
        summary(&m.devs[1]).as_deref(),
        Some("v"),
        "B holds the copy A issued again, whose description (its former name) A has only as the default"
    );
    m.link(0, 2);
    m.advance(10_000);
    m.unlink(0, 2);
    m.devs[2].exec(upgrade);
    m.devs[0].exec("ALTER TABLE tags ADD COLUMN emoji TEXT");
    m.devs[0].exec(TAGS_RENAMED_BY_REBUILD);
    m.advance(10_000);
    assert_eq!(m.devs[0].kept(), 0, "A wrote the kept summary");
    m.link(0, 2);
    m.link(1, 2);
    m.link(0, 1);
    m.advance(10_000);
    m.assert_identical();
    assert_eq!(summary(&m.devs[2]).as_deref(), Some("v"));
}

/// The other side of the test above: C, on A's schema, held t1's
/// `description` from A's first copy. A, restored, took t1 back from B
/// (renamed), kept `summary` for later and gave `description` the default:
/// the copy it issues again names `description` as C does, with that
/// default, and C keeps its value (found by review: a renumbered copy took
/// every column it named again).
#[test]
fn a_peer_on_the_origins_schema_keeps_the_value_a_renumbered_copy_defaults() {
    let mut m = Mesh::new("renumbered-default", 3);
    let snapshot = backed_up_then_written(&m, T1);
    m.devs[1].exec("ALTER TABLE tags RENAME COLUMN description TO summary");
    m.link(0, 1);
    m.unlink(0, 1);
    m.link(0, 2);
    m.unlink(0, 2);
    m.restore(0, &snapshot);
    m.link(0, 1);
    m.advance(10_000);
    m.unlink(0, 1);
    assert_eq!(column(&m.devs[0], "description"), None, "A's default");
    m.link(0, 2);
    m.advance(10_000);
    assert_eq!(column(&m.devs[2], "description").as_deref(), Some("v"));
}

/// A kept own change retried after each schema change is issued again only
/// when it writes a value new to the row: here once, when A renames the
/// column it carries; not at the later schema changes, while it stays kept
/// for `emoji`, which A still lacks (found by review: it was issued again at
/// every retry).
#[test]
fn a_kept_own_change_retried_again_keeps_its_number() {
    let mut m = Mesh::new("kept-retried", 2);
    let snapshot = backed_up_then_written(&m, T1);
    m.devs[1].exec(
        "ALTER TABLE tags ADD COLUMN emoji TEXT;
         ALTER TABLE tags RENAME COLUMN description TO summary",
    );
    m.link(0, 1);
    m.unlink(0, 1);
    m.restore(0, &snapshot);
    m.link(0, 1);
    m.advance(10_000);
    m.unlink(0, 1);
    let issued = |d: &Dev| -> i64 {
        d.store
            .lib
            .conn
            .query_row("SELECT seq FROM sdsync_clock", [], |r| r.get(0))
            .expect("clock")
    };
    let before = issued(&m.devs[0]);
    m.devs[0].exec("ALTER TABLE tags RENAME COLUMN description TO summary");
    m.advance(10_000);
    assert_eq!(column(&m.devs[0], "summary").as_deref(), Some("v"));
    assert_eq!(issued(&m.devs[0]), before + 1, "issued again once");
    for i in 0..3 {
        m.devs[0].exec(&format!(
            "CREATE INDEX tags_by_name_{i} ON tags(canonical_name)"
        ));
        m.advance(10_000);
        assert_eq!(m.devs[0].kept(), 1, "still kept for emoji");
        assert_eq!(
            issued(&m.devs[0]),
            before + 1,
            "not issued again at retry {i}"
        );
    }
    m.devs[0].exec("ALTER TABLE tags ADD COLUMN emoji TEXT");
    m.link(0, 1);
    m.advance(10_000);
    assert_eq!(m.devs[0].kept(), 0);
    m.assert_identical();
}

/// A kept value that differs from the default only in case, in a `NOCASE`
/// column: written after the rename, it is new to the row (compared byte for
/// byte), so A issues the change again and C, which holds the default under
/// the same version, learns it (found by review: `IS` under the column's
/// collation took it for the same value).
#[test]
fn a_kept_value_differing_only_in_case_is_issued_again() {
    let mut m = Mesh::new("kept-nocase", 3);
    for d in &m.devs {
        d.exec("ALTER TABLE tags ADD COLUMN note TEXT DEFAULT 'none' COLLATE NOCASE");
    }
    m.advance(10_000);
    a_takes_t1_back_from_b(
        &mut m,
        "INSERT INTO tags(uuid, canonical_name, note) VALUES ('t1', 'a', 'None')",
        "ALTER TABLE tags RENAME COLUMN note TO memo",
    );
    assert_eq!(m.devs[0].kept(), 1);
    m.link(0, 2);
    m.advance(10_000);
    m.unlink(0, 2);
    assert_eq!(column(&m.devs[2], "note").as_deref(), Some("none"));
    m.devs[2].exec("ALTER TABLE tags RENAME COLUMN note TO memo");
    m.devs[0].exec("ALTER TABLE tags RENAME COLUMN note TO memo");
    m.advance(10_000);
    assert_eq!(column(&m.devs[0], "memo").as_deref(), Some("None"));
    m.link(0, 2);
    m.link(1, 2);
    m.link(0, 1);
    m.advance(10_000);
    assert_eq!(column(&m.devs[2], "memo").as_deref(), Some("None"));
    m.assert_identical();
}

/// t1 with `description` 'v'.
const T1: &str = "INSERT INTO tags(uuid, canonical_name, description) VALUES ('t1', 'a', 'v')";

/// Backs device 0's database up (returns the copy), then runs `write` there.
fn backed_up_then_written(m: &Mesh, write: &str) -> std::path::PathBuf {
    let snapshot = m.devs[0].dir.join("backup.db");
    m.devs[0].exec(&format!("VACUUM INTO '{}'", snapshot.display()));
    m.devs[0].exec(write);
    snapshot
}

/// A (device 0) backs up, then writes t1 (`write`); B (1) migrates
/// (`migrate_b`) and takes t1. A is restored and reuses t1's number for
/// t9, which C (2) takes; then A meets B and takes t1 back.
fn a_takes_t1_back_from_b(m: &mut Mesh, write: &str, migrate_b: &str) {
    let snapshot = backed_up_then_written(m, write);
    m.devs[1].exec(migrate_b);
    m.link(0, 1);
    m.unlink(0, 1);
    m.restore(0, &snapshot);
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t9', 'z')");
    m.link(0, 2);
    m.unlink(0, 2);
    m.link(0, 1);
    m.advance(10_000);
    m.unlink(0, 1);
}

/// t1's `summary` on a device that renamed `tags.description`.
fn summary(d: &Dev) -> Option<String> {
    column(d, "summary")
}

/// t1's `name` column on device `d`.
fn column(d: &Dev, name: &str) -> Option<String> {
    d.store
        .lib
        .conn
        .query_row(
            &format!("SELECT {name} FROM tags WHERE uuid = 't1'"),
            [],
            |r| r.get(0),
        )
        .expect("t1")
}

/// A (device 0) writes t1 and t2, syncs with B, backs its folder up, deletes
/// t1 and syncs again: B holds the delete the backup lacks. Returns the
/// pinned clock window and the backup's files.
fn delete_lost_by_a(m: &mut Mesh) -> (u64, std::path::PathBuf, std::path::PathBuf) {
    let window = pin_clocks(m);
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'a'), ('t2', 'b')");
    m.link(0, 1);
    m.unlink(0, 1);
    let (db, sync) = back_up_folder(m, 0);
    m.devs[0].exec("DELETE FROM tags WHERE uuid = 't1'");
    m.link(0, 1);
    m.unlink(0, 1);
    assert_eq!(m.devs[1].count("tags"), 1, "B took the delete");
    (window, db, sync)
}

/// A, restored and rewritten, meets B: it tells its restore, takes the delete
/// back, and both end with t2 and t3..t6.
fn a_recovers(m: &mut Mesh) {
    m.link(0, 1);
    m.advance(10_000);
    assert_eq!(m.count_events(0, is_restored), 1, "{:?}", m.events);
    assert_eq!(m.devs[0].count("tags"), 5, "t2 and t3..t6, t1 deleted");
    m.assert_identical();
}

/// Pins every device's wall clock to the start of a 1.024 s window of the
/// HLC a few seconds back (peers refuse only clocks ahead); returns it.
fn pin_clocks(m: &Mesh) -> u64 {
    let window = (wall_millis() / 1024 - 4) * 1024;
    for d in &m.devs {
        d.exec(&format!("SELECT sdsync_test_clock({})", window + 10));
    }
    window
}

/// Copies device `d`'s database and `sync.db` (the whole folder's state).
fn back_up_folder(m: &Mesh, d: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = &m.devs[d].dir;
    let (db, sync) = (dir.join("backup.db"), dir.join("backup-sync.db"));
    m.devs[d].exec(&format!("VACUUM INTO '{}'", db.display()));
    rusqlite::Connection::open(dir.join("sync.db"))
        .and_then(|c| c.execute_batch(&format!("VACUUM INTO '{}'", sync.display())))
        .expect("copy sync.db");
    (db, sync)
}

/// A's app after the restore, later in the same window: its first change
/// (n1, under the lost delete's number) superseded at once, then four more.
fn rewrite_after_restore(m: &Mesh, window: u64) {
    let a = &m.devs[0];
    a.exec(&format!("SELECT sdsync_test_clock({})", window + 600));
    a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('n1', 'new')");
    a.exec("DELETE FROM tags WHERE uuid = 'n1'");
    for i in 3..=6 {
        a.exec(&format!(
            "INSERT INTO tags(uuid, canonical_name) VALUES ('t{i}', 'n{i}')"
        ));
    }
}

fn is_restored(e: &Event) -> bool {
    matches!(e, Event::Restored { .. })
}
