//! Schema changes in the simulation: devices upgrade their app one at a time
//! (a column added to a shared and to an owned table, and a shared column
//! renamed, whose former name stays an alias: by `RENAME COLUMN` on even
//! devices, by a rebuild on odd ones), and tables are rebuilt
//! by SQLite's 12-step procedure, while everything else goes on.
//!
//! ```ignore
//! sim.upgrade_next();   // the next device not on the new schema adds the columns
//! sim.rebuild(d);       // device d rebuilds `collections` (create, copy, drop, rename)
//! ```
//!
//! Devices on the old schema keep what they cannot apply yet (`sdsync_kept`);
//! the invariants: after every device upgraded, nothing is kept anywhere,
//! capture is in line on every device, and all digests (by column name) match.

use super::Sim;

/// What upgrading the app does to a device's schema: the columns added,
/// then the rename, by `RENAME COLUMN` (even devices) or by a rebuild (odd).
const ADD_COLUMNS: &str = "ALTER TABLE tags ADD COLUMN emoji TEXT;
    ALTER TABLE entries ADD COLUMN note TEXT DEFAULT 'none';";

const RENAME: &str = "ALTER TABLE tags RENAME COLUMN description TO summary;";

/// The rename made as Alembic's batch mode makes it: a rebuild of `tags`
/// (with `emoji` added already) whose copy step reads `description` into
/// `summary`, which capture must take for a rename as well
/// (`sdsync::migrate::copies`; the devices that renamed either way hold the
/// same versions, or their digests differ).
pub const TAGS_RENAMED_BY_REBUILD: &str = "PRAGMA foreign_keys = OFF; BEGIN;
    CREATE TABLE _alembic_tmp_tags (id INTEGER NOT NULL, uuid TEXT NOT NULL, canonical_name TEXT,
      display_name TEXT, namespace TEXT, color TEXT, icon TEXT, summary TEXT, created_at TEXT,
      updated_at TEXT, emoji TEXT, PRIMARY KEY (id), UNIQUE (uuid));
    INSERT INTO _alembic_tmp_tags (id, uuid, canonical_name, display_name, namespace, color, icon,
      summary, created_at, updated_at, emoji)
      SELECT tags.id, tags.uuid, tags.canonical_name, tags.display_name, tags.namespace, tags.color,
      tags.icon, tags.description, tags.created_at, tags.updated_at, tags.emoji
      FROM tags;
    DROP TABLE tags;
    ALTER TABLE _alembic_tmp_tags RENAME TO tags;
    COMMIT; PRAGMA foreign_keys = ON;";

/// The 12-step rebuild of `collections` (as Django's `AlterField`: the altered
/// column moves to the end), foreign keys off around it as SQLite says.
const REBUILD: &str = "PRAGMA foreign_keys = OFF; BEGIN;
    CREATE TABLE new__collections(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE,
      description TEXT, created_at TEXT, updated_at TEXT, name TEXT NOT NULL DEFAULT '');
    INSERT INTO new__collections(id, uuid, description, created_at, updated_at, name)
      SELECT id, uuid, description, created_at, updated_at, name FROM collections;
    DROP TABLE collections;
    ALTER TABLE new__collections RENAME TO collections;
    CREATE UNIQUE INDEX collections_unique_name ON collections(name) WHERE name LIKE 'u%';
    COMMIT; PRAGMA foreign_keys = ON;";

impl Sim {
    /// The next device still on the old schema upgrades (one at a time).
    pub(super) fn upgrade_next(&mut self) -> Result<(), String> {
        let Some(d) = self.devices.iter().position(|d| !d.upgraded) else {
            return Ok(());
        };
        let rename = if d % 2 == 1 {
            TAGS_RENAMED_BY_REBUILD
        } else {
            RENAME
        };
        self.devices[d]
            .store
            .lib
            .exec(&format!("{ADD_COLUMNS} {rename}"))
            .map_err(|e| format!("device {d} upgrading: {e}"))?;
        self.repaired(d)?;
        self.devices[d].upgraded = true;
        // Restoring a backup of the old schema into the new app is a schema
        // downgrade, not modelled (see `restore.rs`).
        self.devices[d].backup = None;
        self.report.upgrades += 1;
        self.trace.push(format!("t={} d{d}: upgraded", self.now));
        Ok(())
    }

    /// Device `d` rebuilds `collections`.
    pub(super) fn rebuild(&mut self, d: usize) -> Result<(), String> {
        self.devices[d]
            .store
            .lib
            .exec(REBUILD)
            .map_err(|e| format!("device {d} rebuilding collections: {e}"))?;
        self.repaired(d)?;
        self.report.rebuilds += 1;
        self.trace
            .push(format!("t={} d{d}: rebuilt collections", self.now));
        Ok(())
    }

    /// What the WAL hook does after the commit of DDL in a WAL database (the
    /// simulation's in-memory databases have no WAL): re-track in place, on
    /// the connection that made the change (which knows the columns its
    /// rebuild renamed).
    fn repaired(&mut self, d: usize) -> Result<(), String> {
        let conn = &self.devices[d].store.lib.conn;
        conn.query_row("SELECT sdsync_repair()", [], |_| Ok(()))
            .map_err(|e| format!("device {d} repairing capture: {e}"))
    }

    /// Before settling: every device ends on the new schema.
    pub(super) fn upgrade_all(&mut self) -> Result<(), String> {
        while self.devices.iter().any(|d| !d.upgraded) {
            self.upgrade_next()?;
        }
        Ok(())
    }

    /// After settling: nothing kept, capture in line everywhere.
    pub(super) fn check_schema(&self) -> Result<(), String> {
        for (i, d) in self.devices.iter().enumerate() {
            let conn = &d.store.lib.conn;
            let count = |sql: &str| -> Result<i64, String> {
                conn.query_row(sql, [], |r| r.get(0))
                    .map_err(|e| format!("device {i}: {sql}: {e}"))
            };
            let kept = count("SELECT count(*) FROM sdsync_kept")?;
            if kept != 0 {
                return Err(format!("device {i}: {kept} changes still kept"));
            }
            let off = count("SELECT count(*) FROM sdsync_schema WHERE state <> 'ok'")?;
            if off != 0 {
                return Err(format!("device {i}: {off} tables not in line with capture"));
            }
        }
        Ok(())
    }
}
