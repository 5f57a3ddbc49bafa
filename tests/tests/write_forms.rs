//! Every form of write SQLite accepts is captured exactly or refused with a clear
//! error: INSERT and UPDATE with each conflict clause, upserts, REPLACE,
//! RETURNING, multi-row statements, savepoints and transactions rolled back, on
//! shared and device-owned tables.
//!
//! The oracle: after each statement the writer's changes are copied to two peers
//! (one of them the owner of a row the writer holds), and all three databases must
//! hold identical tables. A write that was not captured, or captured wrongly,
//! shows as a difference; a refused write must leave the writer unchanged.

use sdsync_tests::{CONFLICT_CLAUSES, Lib, copy_all, temp_dir};

/// Writer `a`, plain peer `b`, and `f`, which owns a location `a` holds.
struct World {
    a: Lib,
    b: Lib,
    f: Lib,
}

impl World {
    fn new(name: &str) -> Self {
        let dir = temp_dir(name);
        let w = Self {
            a: Lib::create(&dir.join("a.db")),
            b: Lib::create(&dir.join("b.db")),
            f: Lib::create(&dir.join("f.db")),
        };
        for lib in [&w.a, &w.b, &w.f] {
            // An app UNIQUE index: REPLACE may delete a *different* row through it.
            lib.exec("CREATE UNIQUE INDEX tags_name ON tags(canonical_name)");
        }
        w.f.exec(
            "INSERT INTO locations(uuid, name, path) VALUES ('fr', 'F photos', '/f'), ('fr2', 'F docs', '/d');
             INSERT INTO entries(uuid, name, location_id) VALUES ('fe', 'f.jpg', (SELECT id FROM locations WHERE uuid = 'fr'));",
        );
        w.a.exec(
            "INSERT INTO locations(uuid, name, path) VALUES ('r1', 'one', '/1'), ('r2', 'two', '/2');
             INSERT INTO tags(uuid, canonical_name, color) VALUES ('r1', 'one', 'red'), ('r2', 'two', 'blue');",
        );
        w.sync();
        w
    }

    /// Copies everyone's changes to everyone; every apply must succeed.
    fn sync(&self) {
        for (from, to) in [
            (&self.a, &self.b),
            (&self.a, &self.f),
            (&self.f, &self.a),
            (&self.f, &self.b),
            (&self.b, &self.a),
        ] {
            copy_all(from, to);
        }
    }

    fn assert_converged(&self, sql: &str) {
        let a = self.a.digest();
        assert_eq!(a, self.b.digest(), "b differs from a after: {sql}");
        assert_eq!(a, self.f.digest(), "f differs from a after: {sql}");
        for lib in [&self.a, &self.b, &self.f] {
            assert_eq!(
                lib.int("SELECT count(*) FROM sdsync_parked"),
                0,
                "parked after: {sql}"
            );
        }
    }

    /// Runs `sql` on the writer; it must succeed (`ok`) or fail leaving the
    /// writer unchanged, with an error containing `refusal`. Then everyone syncs
    /// and must agree.
    fn write(&self, sql: &str, expect: Expect) {
        eprintln!("write: {sql}");
        let before = self.a.digest();
        let result = self.a.conn.execute_batch(sql);
        match (&result, &expect) {
            (Ok(()), Expect::Ok) => {}
            (Err(e), Expect::Refused(needle)) => {
                let message = e.to_string();
                assert!(message.contains(needle), "{sql}: {message}");
                if !self.a.conn.is_autocommit() {
                    self.a.exec("ROLLBACK");
                }
                assert_eq!(self.a.digest(), before, "refused yet changed: {sql}");
            }
            _ => panic!("{sql}: expected {expect:?}, got {result:?}"),
        }
        self.sync();
        self.assert_converged(sql);
    }
}

#[derive(Debug)]
enum Expect {
    Ok,
    Refused(&'static str),
}

use Expect::{Ok as Fine, Refused};

const OWNED: &str = "owned by device";
const UNIQUE: &str = "UNIQUE constraint failed";

/// Statements on `tab`, whose synced text columns are `c` and `d`; every
/// statement runs twice in a row (the second update of a column once failed).
fn forms(tab: &str, c: &str, d: &str) -> Vec<(String, Expect)> {
    let mut v: Vec<(String, Expect)> = Vec::new();
    let mut twice = |sql: String, e: fn() -> Expect| {
        v.push((sql.clone(), e()));
        v.push((sql, e()));
    };
    for clause in CONFLICT_CLAUSES {
        twice(
            format!("UPDATE {clause}{tab} SET {c} = {c} || '+' WHERE uuid = 'r1'"),
            || Fine,
        );
        twice(
            format!("UPDATE {clause}{tab} SET {d} = 'x' || random() WHERE uuid IN ('r1', 'r2')"),
            || Fine,
        );
        twice(
            format!(
                "UPDATE {clause}{tab} SET {c} = {c} || '!' WHERE uuid NOT IN ('fr', 'fr2') RETURNING id"
            ),
            || Fine,
        );
    }
    for clause in ["", "OR ABORT ", "OR FAIL ", "OR ROLLBACK "] {
        twice(
            format!("INSERT {clause}INTO {tab}(uuid, {c}) VALUES ('r1', 'dup')"),
            || Refused(UNIQUE),
        );
    }
    let upsert = |k: &str, val: &str| {
        format!(
            "INSERT INTO {tab}(uuid, {c}, {d}) VALUES ('{k}', '{val}', 'u') \
             ON CONFLICT(uuid) DO UPDATE SET {c} = excluded.{c}, {d} = {d} || '.'"
        )
    };
    twice(upsert("r1", "up1"), || Fine);
    twice(upsert("n1", "newup"), || Fine);
    twice(
        format!("{} RETURNING id, uuid", upsert("r2", "up2")),
        || Fine,
    );
    twice(
        format!("INSERT INTO {tab}(uuid, {c}) VALUES ('r1', 'nothing') ON CONFLICT DO NOTHING"),
        || Fine,
    );
    twice(
        format!("INSERT OR IGNORE INTO {tab}(uuid, {c}) VALUES ('r1', 'ign'), ('n2', 'ign2')"),
        || Fine,
    );
    twice(
        format!("INSERT OR REPLACE INTO {tab}(uuid, {c}) VALUES ('r2', 'rep-' || random())"),
        || Fine,
    );
    twice(
        format!(
            "REPLACE INTO {tab}(id, uuid, {c}) SELECT id, uuid, 'same-id' FROM {tab} WHERE uuid = 'n1'"
        ),
        || Fine,
    );
    twice(
        format!(
            "INSERT INTO {tab}(uuid, {c}) VALUES (lower(hex(randomblob(8))), 'ret') RETURNING *"
        ),
        || Fine,
    );
    v.push((
        format!(
            "SAVEPOINT s1; UPDATE {tab} SET {c} = 'rolled back' WHERE uuid = 'r1';
             INSERT INTO {tab}(uuid, {c}) VALUES ('gone', 'gone'); ROLLBACK TO s1;
             UPDATE {tab} SET {d} = 'kept' WHERE uuid = 'r1'; RELEASE s1"
        ),
        Fine,
    ));
    v.push((
        format!("BEGIN; DELETE FROM {tab} WHERE uuid = 'r2'; INSERT INTO {tab}(uuid) VALUES ('gone2'); ROLLBACK"),
        Fine,
    ));
    v.push((
        format!("DELETE FROM {tab} WHERE uuid = 'n2' RETURNING uuid"),
        Fine,
    ));
    v.push((
        format!("INSERT INTO {tab}(uuid, {c}) VALUES ('n2', 'back') ON CONFLICT(uuid) DO UPDATE SET {c} = 'back'"),
        Fine,
    ));
    v
}

#[test]
fn every_write_form_on_a_shared_table_is_captured_exactly() {
    let w = World::new("forms-shared");
    for (sql, expect) in forms("tags", "display_name", "color") {
        w.write(&sql, expect);
    }
    // REPLACE through the app's UNIQUE index deletes another row (r1 holds
    // canonical_name 'one'): captured as that row's delete.
    w.write(
        "INSERT OR REPLACE INTO tags(uuid, canonical_name) VALUES ('other', 'one')",
        Fine,
    );
    assert_eq!(w.b.int("SELECT count(*) FROM tags WHERE uuid = 'r1'"), 0);
    w.write(
        "UPDATE tags SET canonical_name = 'two' WHERE uuid = 'r2'",
        Fine,
    );
    w.write(
        "UPDATE OR REPLACE tags SET canonical_name = 'two' WHERE uuid = 'other'",
        Fine,
    );
    assert_eq!(w.b.int("SELECT count(*) FROM tags WHERE uuid = 'r2'"), 0);
}

#[test]
fn every_write_form_on_an_owned_table_is_captured_exactly() {
    let w = World::new("forms-owned");
    for (sql, expect) in forms("locations", "name", "path") {
        w.write(&sql, expect);
    }
}

#[test]
fn no_write_form_takes_over_another_devices_row() {
    let w = World::new("forms-foreign");
    for clause in CONFLICT_CLAUSES {
        w.write(
            &format!("UPDATE {clause}locations SET name = 'mine' WHERE uuid = 'fr'"),
            Refused(OWNED),
        );
    }
    for sql in [
        // fr2 has no children whose cascaded delete would be refused anyway.
        "INSERT OR REPLACE INTO locations(uuid, name) VALUES ('fr2', 'mine')",
        "REPLACE INTO locations(id, uuid, name) SELECT id, uuid, 'mine' FROM locations WHERE uuid = 'fr2'",
        "INSERT OR REPLACE INTO locations(uuid, name) VALUES ('fr', 'mine')",
        "REPLACE INTO locations(uuid, name) VALUES ('fr', 'mine')",
        "REPLACE INTO locations(id, uuid, name) SELECT id, 'mine', 'mine' FROM locations WHERE uuid = 'fr'",
        "INSERT INTO locations(uuid, name) VALUES ('fr', 'mine') ON CONFLICT(uuid) DO UPDATE SET name = excluded.name",
        "DELETE FROM locations WHERE uuid = 'fr'",
        "DELETE FROM entries WHERE uuid = 'fe' RETURNING id",
    ] {
        w.write(sql, Refused(OWNED));
    }
    // A no-op on another device's row is not a write: allowed.
    w.write(
        "INSERT OR IGNORE INTO locations(uuid, name) VALUES ('fr', 'mine')",
        Fine,
    );
    w.write(
        "INSERT INTO locations(uuid, name) VALUES ('fr', 'mine') ON CONFLICT DO NOTHING",
        Fine,
    );
    // The owner's own later change still reaches everyone (nobody took it over).
    w.f.exec("UPDATE locations SET name = 'F renamed' WHERE uuid = 'fr'");
    w.sync();
    w.assert_converged("owner's update");
    assert_eq!(
        w.a.text("SELECT name FROM locations WHERE uuid = 'fr'"),
        "F renamed"
    );
}

#[test]
fn recursive_triggers_cannot_be_turned_off() {
    let w = World::new("forms-recursive-off");
    assert_eq!(w.a.int("PRAGMA recursive_triggers"), 1, "set at load");
    // Without them REPLACE would delete rows uncaptured: turning them off is
    // refused when the statement is prepared, in every spelling.
    for off in ["OFF", "0", "false", "no", "'off'"] {
        let err = w.a.fails(&format!("PRAGMA recursive_triggers = {off}"));
        assert!(err.contains("not authorized"), "{off}: {err}");
    }
    assert_eq!(w.a.int("PRAGMA recursive_triggers"), 1);
    w.a.exec("PRAGMA recursive_triggers = ON");
    w.write(
        "INSERT OR REPLACE INTO tags(uuid, canonical_name) VALUES ('r1', 'x')",
        Fine,
    );
}

/// An app trigger keeping `updated_at` current by updating its own table recurses
/// under `recursive_triggers` (which sdsync needs for REPLACE) unless a WHEN
/// clause stops it: `sdsync_track` names the unguarded ones, and the guarded form
/// works and syncs.
#[test]
fn self_updating_app_triggers_are_named_at_track_time_and_work_when_guarded() {
    let lib = Lib::open(&temp_dir("forms-self-updating").join("a.db"));
    lib.exec(
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, body TEXT, updated_at TEXT);
         CREATE TRIGGER notes_touch AFTER UPDATE ON notes BEGIN
           UPDATE notes SET updated_at = 'now' WHERE id = NEW.id;
         END;
         CREATE TRIGGER notes_touch_or AFTER UPDATE ON notes BEGIN
           UPDATE OR IGNORE \"notes\" SET updated_at = 'now' WHERE id = NEW.id;
         END;",
    );
    let summary = lib.text("SELECT sdsync_track('notes', 'shared')");
    assert!(
        summary.contains("warning: app trigger notes_touch "),
        "{summary}"
    );
    assert!(
        summary.contains("warning: app trigger notes_touch_or "),
        "{summary}"
    );
    lib.exec("INSERT INTO notes(uuid, body) VALUES ('n1', 'a')");
    let err = lib.fails("UPDATE notes SET body = 'b'");
    // SQLite's words vary by version.
    assert!(
        err.contains("too deep") || err.contains("recursion"),
        "{err}"
    );
    lib.exec(
        "DROP TRIGGER notes_touch; DROP TRIGGER notes_touch_or;
         CREATE TRIGGER notes_touch AFTER UPDATE ON notes WHEN NEW.updated_at IS OLD.updated_at BEGIN
           UPDATE notes SET updated_at = 'now' WHERE id = NEW.id;
         END;",
    );
    let summary = lib.text("SELECT sdsync_track('notes', 'shared')");
    assert!(!summary.contains("warning"), "{summary}");
    lib.exec("UPDATE notes SET body = 'b'");
    let peer = Lib::open(&temp_dir("forms-self-updating").join("b.db"));
    peer.exec(
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, body TEXT, updated_at TEXT);
         SELECT sdsync_track('notes', 'shared');",
    );
    sdsync_tests::copy_all(&lib, &peer);
    assert_eq!(
        peer.text("SELECT body || ' ' || updated_at FROM notes WHERE uuid = 'n1'"),
        "b now"
    );
}
