//! Table rebuilds of tracked tables (SQLite's 12 steps, as sqlite-utils,
//! Django and Alembic make them) and `DROP TABLE`: capture follows the
//! rebuilt table (or refuses its writes until it can), a rename made by the
//! rebuild's copy step keeps the column's versions, and a `DROP` that
//! would cascade into tracked rows is refused. Real files in WAL mode;
//! changes copied through `sdsync_changes` as the syncer does.

#[path = "common/schema.rs"]
mod schema;

use rusqlite::Connection;

use schema::{REBUILD, collections, devices, kept, state, sweep};
use sdsync_tests::{Lib, copy_all, sync_pair, temp_dir};

#[test]
fn a_rebuild_keeps_capture_in_place_and_refuses_writes_until_capture_is_back() {
    let [a, b] = <[Lib; 2]>::try_from(devices("rebuild", 2))
        .ok()
        .expect("two");
    a.exec(
        "INSERT INTO collections(uuid, name) VALUES ('c1', 'One'), ('c2', 'Two');
         INSERT INTO collections(uuid, name, description) VALUES ('c4', 'Four', 'd')",
    );
    sync_pair(&a, &b);
    let before = a.changes();
    a.exec(REBUILD);
    // Inside the rebuild's transaction the new table has no capture yet.
    let refused = a.fails("INSERT INTO collections(uuid, name) VALUES ('c3', 'Three')");
    assert!(refused.contains("not authorized"), "{refused}");
    a.exec("COMMIT; PRAGMA foreign_keys = ON");
    assert_eq!(state(&a, "collections"), "ok");
    // Re-tracked in place: the same versions, nothing re-sent.
    assert_eq!(a.changes(), before);
    a.exec(
        "INSERT INTO collections(uuid, name) VALUES ('c3', 'Three');
         UPDATE collections SET name = 'Uno' WHERE uuid = 'c1';
         UPDATE collections SET description = NULL WHERE uuid = 'c4';
         DELETE FROM collections WHERE uuid = 'c2'",
    );
    sync_pair(&a, &b);
    assert_eq!(collections(&a), collections(&b));
    assert_eq!(
        b.text("SELECT group_concat(uuid || '=' || name || '/' || ifnull(description, '-'), ' ') FROM (SELECT * FROM collections ORDER BY uuid)"),
        "c1=Uno/- c3=Three/- c4=Four/-"
    );
}

#[test]
fn without_the_extension_renames_and_rebuilds_fail_and_change_nothing() {
    let [a] = <[Lib; 1]>::try_from(devices("no-extension", 1))
        .ok()
        .expect("one");
    a.exec("INSERT INTO collections(uuid, name) VALUES ('c1', 'One')");
    let plain = Connection::open(&a.path).expect("open without the extension");
    for sql in [
        format!("{REBUILD} COMMIT;"),
        "ALTER TABLE collections RENAME COLUMN description TO notes".into(),
        "ALTER TABLE collections DROP COLUMN description".into(),
        "ALTER TABLE audit_log RENAME TO activity".into(),
    ] {
        let err = plain.execute_batch(&sql).expect_err(&sql).to_string();
        assert!(
            err.contains("sdsync_schema_changes_need_the_extension"),
            "{sql}: {err}"
        );
        let _ = plain.execute_batch("ROLLBACK");
    }
    assert_eq!(state(&a, "collections"), "ok");
    assert_eq!(state(&a, "audit_log"), "ok");
    assert_eq!(
        a.int("SELECT count(*) FROM pragma_table_info('collections') WHERE name = 'description'"),
        1
    );
}

#[test]
fn a_rebuild_into_a_shape_that_cannot_sync_refuses_writes_until_fixed() {
    let [a, b] = <[Lib; 2]>::try_from(devices("unsyncable", 2))
        .ok()
        .expect("two");
    a.exec("INSERT INTO collections(uuid, name) VALUES ('c1', 'One')");
    a.exec(
        "PRAGMA foreign_keys = OFF; BEGIN;
         CREATE TABLE new__collections(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',
           description TEXT, created_at TEXT, updated_at TEXT);
         INSERT INTO new__collections SELECT * FROM collections;
         DROP TABLE collections;
         ALTER TABLE new__collections RENAME TO collections;
         COMMIT; PRAGMA foreign_keys = ON;",
    );
    assert_eq!(state(&a, "collections"), "unsyncable");
    let err = a.fails("INSERT INTO collections(uuid, name) VALUES ('c2', 'Two')");
    assert!(err.contains("cannot be synced as it is now"), "{err}");
    let err = a.fails("UPDATE collections SET name = 'x'");
    assert!(err.contains("cannot be synced as it is now"), "{err}");
    // Fixed by the app, re-tracked: capture is back, with the rows it had.
    a.exec(
        "CREATE UNIQUE INDEX collections_uuid ON collections(uuid);
         SELECT sdsync_track('collections', 'shared');
         INSERT INTO collections(uuid, name) VALUES ('c2', 'Two')",
    );
    assert_eq!(state(&a, "collections"), "ok");
    sync_pair(&a, &b);
    assert_eq!(collections(&a), collections(&b));
    assert_eq!(b.count("collections"), 2);
}

/// With `foreign_keys` on (loading the extension turns it on), SQLite's
/// `DROP TABLE` deletes every row first and runs the `ON DELETE` actions of
/// the tables referencing it: a rebuild of `collections` emptied
/// `collection_entries`, and every peer received the deletes. Such a `DROP`
/// is refused, naming the fix, and changes nothing; the same rebuild with
/// `foreign_keys` off (as SQLite documents it) keeps every membership, and
/// an ordinary delete of a collection still cascades and syncs afterwards.
#[test]
fn a_drop_table_that_would_cascade_into_tracked_rows_is_refused() {
    let [a, b] = <[Lib; 2]>::try_from(devices("drop-cascade", 2))
        .ok()
        .expect("two");
    a.exec(
        "INSERT INTO collections(uuid, name) VALUES ('c1', 'One'), ('c2', 'Two');
         INSERT INTO entries(uuid, name) VALUES ('e1', 'e1');
         INSERT INTO collection_entries(uuid, collection_id, entry_id)
           SELECT 'm-' || c.uuid, c.id, e.id FROM collections c, entries e",
    );
    sync_pair(&a, &b);
    let with_keys_on = REBUILD.replace("PRAGMA foreign_keys = OFF;", "");
    let err = a.fails(&with_keys_on);
    assert!(
        err.contains("sdsync: DROP TABLE collections would delete or change rows")
            && err.contains("PRAGMA foreign_keys = OFF"),
        "{err}"
    );
    a.exec("ROLLBACK");
    assert_eq!(a.int("PRAGMA foreign_keys"), 1);
    assert_eq!(a.count("collection_entries"), 2);
    let deletes = "SELECT count(*) FROM sdsync_changes WHERE op = 'delete'";
    assert_eq!(a.int(deletes), 0);

    a.exec(&format!("{REBUILD} COMMIT; PRAGMA foreign_keys = ON;"));
    assert_eq!(a.count("collection_entries"), 2);
    assert_eq!(a.int(deletes), 0);
    a.exec("DELETE FROM collections WHERE uuid = 'c1'");
    assert_eq!(a.count("collection_entries"), 1);
    sync_pair(&a, &b);
    assert_eq!(b.count("collection_entries"), 1);
    assert_eq!(a.digest(), b.digest());
}

/// The guard holds for a `DROP TABLE` prepared once and run again (a
/// statement cache: its reuse is not compiled again, so the authorizer does
/// not see it), after a captured write in between, and for `ON DELETE SET
/// NULL`, which changes the referencing rows instead of deleting them.
#[test]
fn a_cached_drop_and_a_set_null_cascade_are_refused_too() {
    let a = Lib::create(&temp_dir("drop-cached").join("a.db"));
    a.exec(
        "CREATE TABLE folders(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE);
         CREATE TABLE notes(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE,
           folder_id INTEGER REFERENCES folders(id) ON DELETE SET NULL);
         SELECT sdsync_track('folders', 'shared'); SELECT sdsync_track('notes', 'shared');
         INSERT INTO folders(uuid) VALUES ('f1');
         INSERT INTO notes(uuid, folder_id) SELECT 'n1', id FROM folders;",
    );
    let drop = || {
        a.conn
            .prepare_cached("DROP TABLE folders")
            .expect("prepare")
            .execute([])
            .expect_err("refused")
            .to_string()
    };
    assert!(drop().contains("sdsync: DROP TABLE folders would delete or change rows"));
    a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'One')");
    assert!(drop().contains("sdsync: DROP TABLE folders would delete or change rows"));
    assert_eq!(a.int("SELECT count(folder_id) FROM notes"), 1);
    let changes = "SELECT count(*) FROM sdsync_changes WHERE tbl = 'notes'";
    assert_eq!(a.int(changes), 1);
}

/// Two rebuilds of one table in one transaction (Django's schema editor
/// remakes the table once per `AddField` with a default): the second
/// `DROP TABLE` deletes from a table whose capture the first lifted, which
/// was refused as an uncaptured write ("not authorized").
#[test]
fn two_rebuilds_of_a_table_in_one_transaction_keep_capture() {
    let [a, b] = <[Lib; 2]>::try_from(devices("rebuild-twice", 2))
        .ok()
        .expect("two");
    a.exec("INSERT INTO collections(uuid, name) VALUES ('c1', 'One')");
    sync_pair(&a, &b);
    let second = "CREATE TABLE new2(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, description TEXT,
          created_at TEXT, updated_at TEXT, name VARCHAR(200) NOT NULL DEFAULT '', x TEXT DEFAULT 'd');
        INSERT INTO new2(id, uuid, description, created_at, updated_at, name)
          SELECT id, uuid, description, created_at, updated_at, name FROM collections;
        DROP TABLE collections;
        ALTER TABLE new2 RENAME TO collections;";
    a.exec(&format!(
        "{REBUILD} {second} COMMIT; PRAGMA foreign_keys = ON;"
    ));
    assert_eq!(state(&a, "collections"), "ok");
    a.exec("UPDATE collections SET name = 'Uno' WHERE uuid = 'c1'");
    sync_pair(&a, &b);
    assert_eq!(
        b.text("SELECT name FROM collections WHERE uuid = 'c1'"),
        "Uno"
    );
}

/// A column renamed inside a rebuild (Alembic's batch mode renames this
/// way: the copy step fills `summary` from `description`) keeps its
/// versions, as after `RENAME COLUMN`: B's edit of the column, made before
/// A's rebuild and arriving after it, wins over A's older value. Taken for
/// a column dropped and one added, the rebuild stamped A's value anew and
/// it beat B's edit (`migrate::copies`).
#[test]
fn a_column_renamed_by_a_rebuild_keeps_its_versions() {
    let [a, b] = <[Lib; 2]>::try_from(devices("rebuild-rename", 2))
        .ok()
        .expect("two");
    a.exec(
        "INSERT INTO collections(uuid, name, description) VALUES ('c1', 'One', 'd1'), ('c2', 'Two', 'd2')",
    );
    sync_pair(&a, &b);
    b.exec("UPDATE collections SET description = 'edited on B' WHERE uuid = 'c1'");
    let rebuild = "PRAGMA foreign_keys = OFF; BEGIN;
        CREATE TABLE _alembic_tmp_collections (id INTEGER NOT NULL, uuid TEXT NOT NULL,
          name TEXT DEFAULT ('') NOT NULL, summary TEXT, created_at TEXT, updated_at TEXT,
          PRIMARY KEY (id), UNIQUE (uuid));
        INSERT INTO _alembic_tmp_collections (id, uuid, name, summary, created_at, updated_at)
          SELECT collections.id, collections.uuid, collections.name, collections.description,
          collections.created_at, collections.updated_at FROM collections;
        DROP TABLE collections;
        ALTER TABLE _alembic_tmp_collections RENAME TO collections;
        COMMIT; PRAGMA foreign_keys = ON;";
    a.exec(rebuild);
    assert_eq!(state(&a, "collections"), "ok");
    let changes = "SELECT count(*) FROM sdsync_changes WHERE tbl = 'collections'";
    assert_eq!(a.int(changes), 2, "nothing stamped anew");
    a.exec("UPDATE collections SET summary = 's2' WHERE uuid = 'c2'");
    copy_all(&b, &a);
    copy_all(&a, &b);
    assert_eq!(
        a.text("SELECT summary FROM collections WHERE uuid = 'c1'"),
        "edited on B"
    );
    b.exec(rebuild);
    sweep(&b);
    copy_all(&a, &b);
    copy_all(&b, &a);
    for lib in [&a, &b] {
        assert_eq!(
            lib.text("SELECT group_concat(uuid || ':' || summary, ' ') FROM (SELECT * FROM collections ORDER BY uuid)"),
            "c1:edited on B c2:s2"
        );
        assert_eq!(kept(lib), 0);
    }
    assert_eq!(a.digest(), b.digest());
}

/// With foreign keys on (the extension turns them on), SQLite's `DROP
/// TABLE` runs its implicit `DELETE` with the referencing tables' foreign
/// key actions, and calls the trace callback back with the `DROP`'s own text
/// for each row: 700 tags, referenced by three columns, filled the list of
/// statements kept for the repair, the rename after the `DROP` went unread,
/// and every renamed value was stamped anew, beating a peer's edit (a
/// user's trial with Alembic's batch mode, whose `PRAGMA foreign_keys =
/// OFF` ran inside its transaction, where SQLite ignores it).
#[test]
fn a_rebuild_of_a_large_referenced_table_with_foreign_keys_on_keeps_its_renames() {
    let [a, b] = <[Lib; 2]>::try_from(devices("rebuild-fk-on", 2))
        .ok()
        .expect("two");
    a.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 700)
         INSERT INTO tags(uuid, canonical_name, description) SELECT 't' || i, 'n' || i, 'd' || i FROM n",
    );
    sync_pair(&a, &b);
    b.exec("UPDATE tags SET description = 'edited on B' WHERE uuid = 't7'");
    assert_eq!(a.int("PRAGMA foreign_keys"), 1);
    a.exec(
        "BEGIN IMMEDIATE;
         CREATE TABLE _alembic_tmp_tags (id INTEGER NOT NULL, uuid TEXT NOT NULL, canonical_name TEXT,
           display_name TEXT, namespace TEXT, color TEXT, icon TEXT, summary TEXT, created_at TEXT,
           updated_at TEXT, PRIMARY KEY (id), UNIQUE (uuid));
         INSERT INTO _alembic_tmp_tags (id, uuid, canonical_name, display_name, namespace, color, icon,
           summary, created_at, updated_at)
           SELECT tags.id, tags.uuid, tags.canonical_name, tags.display_name, tags.namespace, tags.color,
           tags.icon, tags.description, tags.created_at, tags.updated_at FROM tags;
         DROP TABLE tags;
         ALTER TABLE _alembic_tmp_tags RENAME TO tags;
         COMMIT;",
    );
    assert_eq!(state(&a, "tags"), "ok");
    assert_eq!(
        a.int("SELECT count(*) FROM sdsync_changes WHERE tbl = 'tags'"),
        700,
        "nothing stamped anew"
    );
    copy_all(&b, &a);
    assert_eq!(
        a.text("SELECT summary FROM tags WHERE uuid = 't7'"),
        "edited on B"
    );
}

/// A rename inside a rebuild is read from the statements the trace
/// callback kept while the connection changed its schema, which it keeps
/// for the transaction of the DDL and the next. A transaction whose DDL
/// the WAL hook repaired (`ADD COLUMN` here) counted twice, once more for
/// the repair's own savepoint that SQLite reports as a commit too, and the
/// rebuild in the next transaction went unread: its rename was taken for a
/// column dropped and one added, every value stamped anew.
#[test]
fn a_rename_in_a_rebuild_after_a_repaired_schema_change_is_read() {
    let [a] = <[Lib; 1]>::try_from(devices("rebuild-after-repair", 1))
        .ok()
        .expect("one");
    a.exec("INSERT INTO collections(uuid, name, description) VALUES ('c1', 'One', 'd1')");
    a.exec(
        "BEGIN; ALTER TABLE collections ADD COLUMN zz TEXT;
         CREATE TABLE tmp (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE,
           name TEXT NOT NULL DEFAULT '', summary TEXT, created_at TEXT, updated_at TEXT, zz TEXT);
         COMMIT;",
    );
    a.exec(
        "PRAGMA foreign_keys = OFF; BEGIN;
         INSERT INTO tmp (id, uuid, name, summary, created_at, updated_at, zz)
           SELECT id, uuid, name, description, created_at, updated_at, zz FROM collections;
         DROP TABLE collections; ALTER TABLE tmp RENAME TO collections;
         COMMIT; PRAGMA foreign_keys = ON;",
    );
    assert_eq!(state(&a, "collections"), "ok");
    assert_eq!(
        a.int("SELECT count(*) FROM sdsync_changes WHERE tbl = 'collections'"),
        1,
        "nothing stamped anew"
    );
}

/// Statements a `ROLLBACK TO` undid are taken back: a `RENAME COLUMN`
/// undone, then a column of that name added with new data and the old
/// column dropped by a rebuild, is no rename (taken for one, the new
/// data was never stamped as this device's change, and peers mapped their
/// old `description` values into `summary`).
#[test]
fn a_rename_undone_by_rollback_to_is_not_taken_for_one() {
    let [a] = <[Lib; 1]>::try_from(devices("rollback-to-rename", 1))
        .ok()
        .expect("one");
    a.exec("INSERT INTO tags(uuid, canonical_name, description) VALUES ('t1', 'One', 'old')");
    a.exec(
        "PRAGMA foreign_keys = OFF; BEGIN;
         SAVEPOINT s; ALTER TABLE tags RENAME COLUMN description TO summary; ROLLBACK TO s; RELEASE s;
         ALTER TABLE tags ADD COLUMN summary TEXT;
         UPDATE tags SET summary = 'new data';
         CREATE TABLE tmp (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, canonical_name TEXT,
           display_name TEXT, namespace TEXT, color TEXT, icon TEXT, created_at TEXT,
           updated_at TEXT, summary TEXT);
         INSERT INTO tmp (id, uuid, canonical_name, display_name, namespace, color, icon,
           created_at, updated_at, summary)
           SELECT id, uuid, canonical_name, display_name, namespace, color, icon, created_at,
           updated_at, summary FROM tags;
         DROP TABLE tags; ALTER TABLE tmp RENAME TO tags;
         COMMIT; PRAGMA foreign_keys = ON;",
    );
    assert_eq!(state(&a, "tags"), "ok");
    assert_eq!(
        a.int(
            "SELECT count(*) FROM sdsync_changes WHERE tbl = 'tags' AND json_extract(data, '$.summary') = 'new data'"
        ),
        1,
        "the new column's data is this device's change"
    );
    assert_eq!(
        a.int(
            "SELECT count(*) FROM sdsync_tables WHERE name = 'tags' AND spec LIKE '%description%'"
        ),
        0,
        "no alias made up"
    );
}
