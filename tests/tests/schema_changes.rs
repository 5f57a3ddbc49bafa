//! Schema changes of tracked tables, as apps and tools make them: capture
//! follows the table (or refuses its writes until it can), devices on different
//! schema versions keep syncing, and nothing is lost in between. Real files in
//! WAL mode; changes copied through `sdsync_changes` as the syncer does.

#[path = "common/schema.rs"]
mod schema;

use rusqlite::Connection;

use schema::{devices, kept, state, sweep};
use sdsync_tests::{Lib, copy_all, sync_pair};

#[test]
fn an_added_column_and_table_sync_while_each_device_catches_up_in_its_own_time() {
    let [a, b, c] = <[Lib; 3]>::try_from(devices("add-column", 3))
        .ok()
        .expect("three");
    a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t0', 'Zero')");
    sync_pair(&a, &b);
    let upgrade = "ALTER TABLE tags ADD COLUMN emoji TEXT;
        ALTER TABLE audit_log ADD COLUMN severity INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE notes(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, body TEXT);
        SELECT sdsync_track('notes', 'shared');";
    // A (the newer app) upgrades and writes the new columns and table; C is on
    // the new schema too but hears of A only through B.
    a.exec(upgrade);
    c.exec(upgrade);
    a.exec(
        "INSERT INTO tags(uuid, canonical_name, emoji) VALUES ('t1', 'One', '🎉');
         UPDATE tags SET emoji = '0️⃣' WHERE uuid = 't0';
         INSERT INTO audit_log(uuid, action, severity) VALUES ('l1', 'scan', 3);
         INSERT INTO notes(uuid, body) VALUES ('n1', 'hello')",
    );
    // B (older) applies what it knows, keeps the rest, and its stream goes on.
    copy_all(&a, &b);
    assert_eq!(kept(&b), 4);
    assert_eq!(b.int("SELECT count(*) FROM tags WHERE uuid = 't1'"), 1);
    assert_eq!(b.int("SELECT count(*) FROM audit_log WHERE uuid = 'l1'"), 1);
    b.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t2', 'Two')");
    copy_all(&b, &a);
    assert_eq!(a.int("SELECT count(*) FROM tags WHERE uuid = 't2'"), 1);
    // C gets A's new columns from B, which does not have them.
    copy_all(&b, &c);
    assert_eq!(
        c.text("SELECT group_concat(uuid || emoji, ' ') FROM (SELECT * FROM tags WHERE emoji IS NOT NULL ORDER BY uuid)"),
        "t00️⃣ t1🎉"
    );
    assert_eq!(c.int("SELECT severity FROM audit_log WHERE uuid = 'l1'"), 3);
    assert_eq!(c.text("SELECT body FROM notes"), "hello");
    // A's owned row changes again: B keeps both versions, and the older one
    // must not win when they are applied.
    a.exec("UPDATE audit_log SET severity = 5 WHERE uuid = 'l1'");
    copy_all(&a, &b);
    // Kept now: the four above, the newer l1, and B's own t2 as A serves it
    // (A's schema gave it an emoji: NULL, the default, as of B's creation).
    assert_eq!(kept(&b), 6);
    // B upgrades later: what it kept applies, and all three hold the same.
    b.exec(upgrade);
    sweep(&b);
    assert_eq!(kept(&b), 0);
    for (x, y) in [(&a, &b), (&b, &c), (&a, &c)] {
        sync_pair(x, y);
    }
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.digest(), c.digest());
    assert_eq!(b.int("SELECT severity FROM audit_log WHERE uuid = 'l1'"), 5);
}

#[test]
fn values_written_between_add_column_and_re_tracking_are_captured() {
    let [a, b] = <[Lib; 2]>::try_from(devices("between", 2))
        .ok()
        .expect("two");
    a.exec(
        "INSERT INTO tags(uuid, canonical_name) VALUES ('t0', 'Zero');
         INSERT INTO audit_log(uuid, action) VALUES ('l0', 'scan')",
    );
    sync_pair(&a, &b);
    // A connection without the extension adds the columns; capture learns of
    // them only later (here: the next sweep), after the app wrote them.
    let plain = Connection::open(&a.path).expect("open without the extension");
    plain
        .execute_batch(
            "ALTER TABLE tags ADD COLUMN emoji TEXT; ALTER TABLE audit_log ADD COLUMN severity INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE collections ADD COLUMN mood TEXT DEFAULT calm",
        )
        .expect("add columns");
    drop(plain);
    assert_eq!(state(&a, "tags"), "changed");
    a.exec(
        "UPDATE tags SET emoji = '0️⃣' WHERE uuid = 't0'; UPDATE audit_log SET severity = 2 WHERE uuid = 'l0'",
    );
    sweep(&a);
    assert_eq!(state(&a, "tags"), "ok");
    b.exec(
        "ALTER TABLE tags ADD COLUMN emoji TEXT; ALTER TABLE audit_log ADD COLUMN severity INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE collections ADD COLUMN mood TEXT DEFAULT calm",
    );
    sync_pair(&a, &b);
    assert_eq!(b.text("SELECT emoji FROM tags WHERE uuid = 't0'"), "0️⃣");
    assert_eq!(b.int("SELECT severity FROM audit_log WHERE uuid = 'l0'"), 2);
    assert_eq!(a.digest(), b.digest());
}

#[test]
fn dropping_or_renaming_one_tracked_table_leaves_the_others_syncing() {
    let [a, b] = <[Lib; 2]>::try_from(devices("drop-rename", 2))
        .ok()
        .expect("two");
    a.exec("INSERT INTO audit_log(uuid, action) VALUES ('l0', 'scan')");
    sync_pair(&a, &b);
    a.exec("DROP TABLE audit_log");
    assert_eq!(state(&a, "audit_log"), "missing");
    a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'One')");
    b.exec(
        "INSERT INTO audit_log(uuid, action) VALUES ('l1', 'scan');
         INSERT INTO tags(uuid, canonical_name) VALUES ('t2', 'Two')",
    );
    let served = a.changes();
    assert!(
        served
            .iter()
            .any(|c| c.tbl == "tags" && c.data.as_deref().is_some_and(|d| d.contains("One"))),
        "A still serves tags"
    );
    copy_all(&a, &b);
    copy_all(&b, &a);
    assert_eq!(b.int("SELECT count(*) FROM tags WHERE uuid = 't1'"), 1);
    assert_eq!(a.int("SELECT count(*) FROM tags WHERE uuid = 't2'"), 1);
    // audit_log rows from B (B's own, and A's own first row, which B serves
    // back) wait on A for the table to come back.
    assert_eq!(kept(&a), 2);

    // A renames a table; B, not yet, keeps A's rows under the new name and
    // A applies B's under the old one.
    a.exec("ALTER TABLE collections RENAME TO albums");
    assert_eq!(state(&a, "albums"), "ok");
    a.exec("INSERT INTO albums(uuid, name) VALUES ('c1', 'One')");
    b.exec("INSERT INTO collections(uuid, name) VALUES ('c2', 'Two')");
    copy_all(&a, &b);
    copy_all(&b, &a);
    assert_eq!(a.int("SELECT count(*) FROM albums WHERE uuid = 'c2'"), 1);
    assert_eq!(kept(&b), 1);
    b.exec("ALTER TABLE collections RENAME TO albums");
    sweep(&b);
    assert_eq!(kept(&b), 0);
    assert_eq!(
        b.text("SELECT group_concat(uuid, ' ') FROM (SELECT uuid FROM albums ORDER BY uuid)"),
        "c1 c2"
    );
}

#[test]
fn drop_column_goes_through_sdsync_alter() {
    let [a, b] = <[Lib; 2]>::try_from(devices("drop-column", 2))
        .ok()
        .expect("two");
    a.exec("INSERT INTO tags(uuid, canonical_name, icon) VALUES ('t1', 'One', 'i')");
    sync_pair(&a, &b);
    // SQLite refuses to drop a column a trigger names, capture's included.
    let err = a.fails("ALTER TABLE tags DROP COLUMN icon");
    assert!(err.contains("sdsync_"), "{err}");
    // Data changes inside it would not be captured: refused.
    let err = a.fails("SELECT sdsync_alter('UPDATE tags SET color = 1')");
    assert!(err.contains("not authorized"), "{err}");
    let done = a.text("SELECT sdsync_alter('ALTER TABLE tags DROP COLUMN icon')");
    assert!(done.contains("tracked tags"), "{done}");
    assert_eq!(state(&a, "tags"), "ok");
    a.exec("UPDATE tags SET canonical_name = 'Uno' WHERE uuid = 't1'");
    copy_all(&a, &b);
    assert_eq!(b.text("SELECT canonical_name || icon FROM tags"), "Unoi");
}

/// A copied database writing next to the original: both issue the same
/// sequence numbers for different changes. The peer that hears from both
/// refuses the second (the syncer quarantines it, shown on every side), naming
/// `sdsync reidentify`, instead of letting one hide the other.
#[test]
fn a_copy_writing_as_the_original_is_refused_where_the_two_meet() {
    let [a, b] = <[Lib; 2]>::try_from(devices("copy-fork", 2))
        .ok()
        .expect("two");
    a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t0', 'zero')");
    let copy_path = a.path.with_file_name("copy.db");
    a.exec(&format!("VACUUM INTO '{}'", copy_path.display()));
    let copy = Lib::open(&copy_path);
    assert_eq!(copy.device(), a.device());
    a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'original')");
    copy.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t2', 'copy')");
    copy_all(&a, &b);
    let err = sdsync_tests::apply(&b.conn, &copy.changes())
        .expect_err("the copy's change")
        .to_string();
    assert!(
        err.contains("issued sequence 2 twice") && err.contains("sdsync reidentify"),
        "{err}"
    );
    // Once re-identified, the copy's new changes are its own and apply.
    copy.exec("SELECT sdsync_reidentify()");
    copy.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t3', 'copy, reidentified')");
    let mine: Vec<_> = copy
        .changes()
        .into_iter()
        .filter(|c| c.origin == copy.device())
        .collect();
    sdsync_tests::apply(&b.conn, &mine).expect("the re-identified copy's changes");
    assert_eq!(b.int("SELECT count(*) FROM tags WHERE uuid = 't3'"), 1);
}

/// `RENAME COLUMN` with the extension loaded: SQLite rewrites the capture
/// triggers, the WAL hook re-tracks the table, and the renamed column keeps
/// its versions (no value is stamped anew) and its former name as an alias.
/// A applies B's values for the former name; B, not renamed yet, keeps A's
/// values for the new name until it renames too, and then A's later edit
/// wins over the value B held (before: B's rename stamped every value anew,
/// and t1 ended with B's older `i`). A's other columns and B's own writes
/// keep flowing meanwhile.
#[test]
fn a_renamed_column_keeps_its_versions_and_its_former_name() {
    let [a, b] = <[Lib; 2]>::try_from(devices("rename-column", 2))
        .ok()
        .expect("two");
    a.exec("INSERT INTO tags(uuid, canonical_name, icon) VALUES ('t1', 'One', 'i')");
    sync_pair(&a, &b);
    a.exec("ALTER TABLE tags RENAME COLUMN icon TO glyph");
    assert_eq!(state(&a, "tags"), "ok");
    a.exec(
        "UPDATE tags SET glyph = 'g', canonical_name = 'Uno' WHERE uuid = 't1';
         INSERT INTO tags(uuid, canonical_name, glyph) VALUES ('t2', 'Two', 'h')",
    );
    b.exec("INSERT INTO tags(uuid, canonical_name, icon) VALUES ('t3', 'Three', 'j')");
    copy_all(&a, &b);
    copy_all(&b, &a);
    assert_eq!(
        b.text("SELECT group_concat(uuid || canonical_name, ' ') FROM (SELECT * FROM tags ORDER BY uuid)"),
        "t1Uno t2Two t3Three",
        "the columns B has apply"
    );
    assert!(kept(&b) >= 1, "A's glyph values wait on B");
    assert_eq!(
        a.text("SELECT glyph FROM tags WHERE uuid = 't3'"),
        "j",
        "B's icon is A's glyph"
    );
    b.exec("ALTER TABLE tags RENAME COLUMN icon TO glyph");
    sweep(&b);
    assert_eq!(kept(&b), 0);
    copy_all(&a, &b);
    copy_all(&b, &a);
    assert_eq!(
        b.text("SELECT group_concat(uuid || ifnull(glyph, '-'), ' ') FROM (SELECT * FROM tags ORDER BY uuid)"),
        "t1g t2h t3j"
    );
    assert_eq!(a.digest(), b.digest());
}

/// The same for a device-owned table, whose update trigger names its
/// columns only in its `WHEN` clause (an `OR` of their changes since session
/// 25, cheaper per row than the bit mask the shared tables' triggers keep in
/// their body): the rename is read from the order of those terms. A's
/// rename stamps none of its rows anew, B (not renamed yet) writes under the
/// former name and A applies it to the new one, and A's edit of the renamed
/// column reaches B once B renames too.
#[test]
fn a_renamed_column_of_an_owned_table_keeps_its_versions_and_its_former_name() {
    let [a, b] = <[Lib; 2]>::try_from(devices("rename-owned-column", 2))
        .ok()
        .expect("two");
    a.exec("INSERT INTO locations(uuid, name, path) VALUES ('l1', 'home', '/home')");
    let versions =
        |lib: &Lib| lib.text("SELECT group_concat(seq || ':' || hlc, ' ') FROM sdsync_versions");
    let before = versions(&a);
    a.exec("ALTER TABLE locations RENAME COLUMN path TO root");
    assert_eq!(state(&a, "locations"), "ok");
    assert_eq!(versions(&a), before, "the rename stamps nothing anew");
    b.exec("INSERT INTO locations(uuid, name, path) VALUES ('l2', 'b', '/b')");
    copy_all(&b, &a);
    assert_eq!(a.text("SELECT root FROM locations WHERE uuid = 'l2'"), "/b");
    a.exec("UPDATE locations SET root = '/h2' WHERE uuid = 'l1'");
    copy_all(&a, &b);
    b.exec("ALTER TABLE locations RENAME COLUMN path TO root");
    sweep(&b);
    copy_all(&a, &b);
    assert_eq!(
        b.text("SELECT root FROM locations WHERE uuid = 'l1'"),
        "/h2"
    );
    assert_eq!(kept(&b), 0);
    assert_eq!(a.digest(), b.digest());
}

/// A table and one of its columns renamed in one transaction (Django's
/// RenameModel and RenameField in one migration): the column's rename is read
/// from the capture trigger, which still has the table's former name, so the
/// column keeps its versions. B's edit of the column, made before A's rename
/// and arriving after it, wins over A's older value (a rename taken for a
/// column dropped and one added stamped A's value anew, and it won).
#[test]
fn a_table_and_its_column_renamed_together_keep_the_columns_versions() {
    let [a, b] = <[Lib; 2]>::try_from(devices("rename-both", 2))
        .ok()
        .expect("two");
    a.exec("INSERT INTO tags(uuid, canonical_name, icon) VALUES ('t1', 'One', 'i')");
    sync_pair(&a, &b);
    b.exec("UPDATE tags SET icon = 'x' WHERE uuid = 't1'");
    a.exec(
        "BEGIN; ALTER TABLE tags RENAME TO labels; \
         ALTER TABLE labels RENAME COLUMN icon TO glyph; COMMIT",
    );
    assert_eq!(state(&a, "labels"), "ok");
    copy_all(&b, &a);
    assert_eq!(a.text("SELECT glyph FROM labels WHERE uuid = 't1'"), "x");
    b.exec(
        "BEGIN; ALTER TABLE tags RENAME TO labels; \
         ALTER TABLE labels RENAME COLUMN icon TO glyph; COMMIT",
    );
    sweep(&b);
    copy_all(&a, &b);
    copy_all(&b, &a);
    assert_eq!(b.text("SELECT glyph FROM labels WHERE uuid = 't1'"), "x");
    assert_eq!(a.digest(), b.digest());
}

/// Two columns swapping names, and a former name made a column again: each
/// value follows its column, and a peer naming both the new and the former
/// name (it renamed, then added a column under the old name) does not put the
/// new column's value into the renamed one.
#[test]
fn swapped_and_reused_column_names_follow_their_columns() {
    let [a, b] = <[Lib; 2]>::try_from(devices("rename-swap", 2))
        .ok()
        .expect("two");
    a.exec("INSERT INTO tags(uuid, canonical_name, icon, color) VALUES ('t1', 'One', 'i', 'c')");
    sync_pair(&a, &b);
    let swap = "BEGIN; ALTER TABLE tags RENAME COLUMN icon TO tmp; \
                ALTER TABLE tags RENAME COLUMN color TO icon; \
                ALTER TABLE tags RENAME COLUMN tmp TO color; COMMIT";
    a.exec(swap);
    b.exec(swap);
    sweep(&b);
    a.exec("UPDATE tags SET color = 'i2' WHERE uuid = 't1'");
    copy_all(&a, &b);
    assert_eq!(
        b.text("SELECT icon || '/' || color FROM tags WHERE uuid = 't1'"),
        "c/i2"
    );
    // A renames emoji-less `description` to `summary` and adds a new
    // `description`; B only renamed.
    a.exec(
        "ALTER TABLE tags RENAME COLUMN description TO summary; \
         ALTER TABLE tags ADD COLUMN description TEXT",
    );
    b.exec("ALTER TABLE tags RENAME COLUMN description TO summary");
    sweep(&b);
    a.exec("UPDATE tags SET summary = 's', description = 'new' WHERE uuid = 't1'");
    copy_all(&a, &b);
    assert_eq!(b.text("SELECT summary FROM tags WHERE uuid = 't1'"), "s");
    assert_eq!(kept(&b), 1, "the new description waits for B's column");
}

/// Between a column's rename and the repair of capture (the WAL hook's, or
/// the syncer's at its next sweep), reading the table's changes fails as
/// busy, naming the table, and is read whole once repaired: skipped, its
/// rows were lost to peers whose watermark moved past them (CI caught it: a
/// Django RenameField while the syncer served a page).
#[test]
fn a_table_changed_and_not_repaired_yet_is_not_skipped_by_a_page() {
    let [a] = <[Lib; 1]>::try_from(devices("rename-window", 1))
        .ok()
        .expect("one");
    a.exec("INSERT INTO tags(uuid, canonical_name, icon) VALUES ('t1', 'One', 'i')");
    // Inside the rename's transaction capture is not repaired yet (the WAL
    // hook repairs after the commit).
    a.exec("BEGIN; ALTER TABLE tags RENAME COLUMN icon TO glyph");
    let read = |lib: &Lib| -> rusqlite::Result<Vec<String>> {
        let mut stmt = lib.conn.prepare("SELECT tbl, pk FROM sdsync_changes")?;
        let rows = stmt.query_map([], |r| {
            Ok(format!(
                "{}/{}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?
            ))
        })?;
        rows.collect()
    };
    let err = read(&a).expect_err("busy until repaired");
    assert!(
        err.to_string()
            .contains("tags changed and its capture is not repaired yet")
            && err.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy),
        "{err}"
    );
    a.exec("COMMIT");
    assert!(
        read(&a)
            .expect("read after the repair")
            .contains(&"tags/t1".to_string())
    );
}
