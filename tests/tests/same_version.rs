//! Copies of one change (same origin, number and HLC) that carry different
//! columns settle every device on the same values: a column a partial copy
//! left out, which the row then holds at the change's version as the
//! default, takes the value a whole copy carries (`apply/fill.rs`); a value
//! held is never replaced by a copy's default.

use sdsync_tests::{Change, Lib, apply, temp_dir, without};

/// A creates tag `t` with a color; its creating change, whole and as a peer
/// serves it while a newer group of the row holds the color there (the
/// color left out).
fn creation(dir: &std::path::Path) -> (Lib, Change, Change) {
    let a = Lib::create(&dir.join("a.db"));
    a.exec("INSERT INTO tags(uuid, canonical_name, color) VALUES ('t', 'tag', 'red')");
    let whole = a
        .changes()
        .into_iter()
        .find(|c| c.tbl == "tags")
        .expect("A's creation");
    let partial = without(&whole, &["color"]);
    (a, whole, partial)
}

fn color(lib: &Lib) -> Option<String> {
    lib.conn
        .query_row("SELECT color FROM tags WHERE uuid = 't'", [], |r| r.get(0))
        .expect("the row")
}

/// The newer change that held the color was lost on every device (each
/// restored from a backup older than it: simulation seed 23628): B holds
/// the default, A the value, under one version, until a whole copy reaches
/// B.
#[test]
fn a_whole_copy_fills_the_column_a_partial_copy_left_at_the_default() {
    let dir = temp_dir("same-version-fill");
    let (a, whole, partial) = creation(&dir);
    let b = Lib::create(&dir.join("b.db"));
    apply(&b.conn, std::slice::from_ref(&partial)).expect("the partial copy");
    assert_eq!(
        color(&b),
        None,
        "the creation defines the color: the default"
    );

    apply(&b.conn, std::slice::from_ref(&whole)).expect("the whole copy");

    assert_eq!(color(&b).as_deref(), Some("red"));
    assert_eq!(a.digest(), b.digest());
    assert_eq!(
        b.int("SELECT count(*) FROM sdsync_versions"),
        1,
        "still one version: the change's"
    );
}

/// The other order: a device holding the value keeps it when the partial
/// copy comes second.
#[test]
fn a_partial_copy_leaves_the_value_a_whole_one_gave() {
    let dir = temp_dir("same-version-keep");
    let (a, whole, partial) = creation(&dir);
    let c = Lib::create(&dir.join("c.db"));
    apply(&c.conn, std::slice::from_ref(&whole)).expect("the whole copy");

    apply(&c.conn, std::slice::from_ref(&partial)).expect("the partial copy");

    assert_eq!(color(&c).as_deref(), Some("red"));
    assert_eq!(a.digest(), c.digest());
}

/// A `REAL DEFAULT 0` column holds its default as 0.0 where the catalog
/// reads it as the integer 0: compared as SQLite compares a column with a
/// value, it is the default all the same, and the whole copy fills it
/// (found by review: compared by type, it never did).
#[test]
fn a_default_held_under_the_columns_affinity_is_filled_too() {
    let dir = temp_dir("same-version-real");
    let schema = "CREATE TABLE m(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, name TEXT,
                    score REAL NOT NULL DEFAULT 0, weight REAL DEFAULT 1.0);
                  SELECT sdsync_track('m', 'shared');";
    let (a, b) = (
        Lib::create(&dir.join("a.db")),
        Lib::create(&dir.join("b.db")),
    );
    a.exec(schema);
    b.exec(schema);
    a.exec("INSERT INTO m(uuid, name, score, weight) VALUES ('r', 'x', 2.5, 1)");
    let whole = a
        .changes()
        .into_iter()
        .find(|c| c.tbl == "m")
        .expect("A's creation");
    apply(&b.conn, &[without(&whole, &["score", "weight"])]).expect("the partial copy");

    apply(&b.conn, std::slice::from_ref(&whole)).expect("the whole copy");

    assert_eq!(a.digest(), b.digest());
    assert_eq!(
        b.text("SELECT score || ' ' || weight FROM m"),
        "2.5 1.0",
        "the score filled; the weight holds the default the copy carries too"
    );
}
