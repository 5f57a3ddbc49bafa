//! What the schema-change tests share (`schema_changes.rs`,
//! `schema_rebuilds.rs`): libraries with the default schema, their capture
//! state, and SQLite's 12-step rebuild of `collections`.

#![allow(dead_code)] // each test file uses a part

use sdsync_tests::{Lib, temp_dir};

/// Devices `n` libraries with the default schema.
pub fn devices(name: &str, n: usize) -> Vec<Lib> {
    let dir = temp_dir(name);
    (0..n)
        .map(|i| Lib::create(&dir.join(format!("{i}.db"))))
        .collect()
}

pub fn state(lib: &Lib, table: &str) -> String {
    lib.text(&format!(
        "SELECT state FROM sdsync_schema WHERE tbl = '{table}'"
    ))
}

/// `collections` by column name (a rebuild may have moved its columns).
pub fn collections(lib: &Lib) -> String {
    lib.text(
        "SELECT group_concat(json_array(uuid, name, description, created_at, updated_at), ' ') \
         FROM (SELECT * FROM collections ORDER BY uuid)",
    )
}

pub fn kept(lib: &Lib) -> i64 {
    lib.int("SELECT count(*) FROM sdsync_kept")
}

/// What the syncer does every anti-entropy round after a schema change.
pub fn sweep(lib: &Lib) {
    lib.exec("SELECT sdsync_repair(); INSERT INTO sdsync_changes(op) VALUES ('sweep')");
}

/// SQLite's 12-step rebuild of `collections`, as Django's `AlterField` does it:
/// the altered column (`name`) moves to the end. Leaves the transaction open.
pub const REBUILD: &str = "PRAGMA foreign_keys = OFF; BEGIN;
CREATE TABLE new__collections(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, description TEXT,
  created_at TEXT, updated_at TEXT, name VARCHAR(200) NOT NULL DEFAULT '');
INSERT INTO new__collections(id, uuid, description, created_at, updated_at, name)
  SELECT id, uuid, description, created_at, updated_at, name FROM collections;
DROP TABLE collections;
ALTER TABLE new__collections RENAME TO collections;";
