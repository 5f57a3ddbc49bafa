//! The simulation's local writes: what a device's app does, phrased as real
//! clients phrase it.
//!
//! ```ignore
//! sim.write(d)?; // one random write transaction on device d, committed or rolled back
//! ```

use sdsync_syncer::sqlstore::SqlStore;

use super::{Sim, local_hlc};

/// One app write transaction, drawn before it runs (it may run in the middle of
/// a syncer step, see `faults::Meddler`).
pub(super) struct Txn {
    pub sql: String,
    pub rollback: bool,
    /// Written on a connection with `PRAGMA foreign_keys = OFF` (a client that
    /// never turns them on, or a migration that turned them off).
    pub fk_off: bool,
}

/// What running a [`Txn`] did.
pub(super) enum Outcome {
    /// Committed; the sequence numbers its changes took, `(before, after]`.
    Committed(i64, i64),
    RolledBack,
    /// sdsync refused it with this error (and nothing was written).
    Refused(String),
}

/// Refusals sdsync is expected to make in the simulated world, and only with
/// foreign keys off: a delete that would leave children dangling.
const EXPECTED_REFUSALS: &[&str] = &["would leave rows of"];

/// Values at the edges of SQLite's storage classes: they must arrive exactly.
const EXTREMES: &[&str] = &[
    "9e999",
    "-9e999",
    "4.9e-324",
    "-0.0",
    "1.7976931348623157e308",
    "CAST(x'c328ff00' AS TEXT)",
    "''",
    "x''",
    "x'00ff'",
    "zeroblob(70000)",
    "-9223372036854775808",
    "NULL",
];

/// Runs `t` on the device's library connection.
pub(super) fn run_txn(store: &SqlStore, t: &Txn) -> Result<Outcome, String> {
    let lib = &store.lib;
    if t.fk_off {
        lib.exec("PRAGMA foreign_keys = OFF")
            .map_err(|e| e.to_string())?;
    }
    let before = local_hlc(store);
    let end = if t.rollback { "ROLLBACK" } else { "COMMIT" };
    let result = lib.exec(&format!("BEGIN; {}; {end};", t.sql));
    let outcome = match result {
        Ok(()) if t.rollback => Ok(Outcome::RolledBack),
        Ok(()) => Ok(Outcome::Committed(before, local_hlc(store))),
        Err(e) => {
            let msg = e.to_string();
            if !lib.conn.is_autocommit() {
                lib.exec("ROLLBACK").map_err(|e| e.to_string())?;
            }
            let expected = t.fk_off && EXPECTED_REFUSALS.iter().any(|r| msg.contains(r));
            if expected && local_hlc(store) == before {
                Ok(Outcome::Refused(msg))
            } else {
                Err(format!("write failed: {msg}\n{}", t.sql))
            }
        }
    };
    if t.fk_off {
        lib.exec("PRAGMA foreign_keys = ON")
            .map_err(|e| e.to_string())?;
    }
    outcome
}

impl Sim {
    pub(super) fn write(&mut self, d: usize) -> Result<(), String> {
        if !self.devices[d].up {
            return Ok(());
        }
        self.clock(d);
        let txn = self.next_txn(d);
        let outcome =
            run_txn(&self.devices[d].store, &txn).map_err(|e| format!("device {d}: {e}"))?;
        self.record(d, &txn, outcome);
        let dev = &mut self.devices[d];
        // As the daemon does on every commit it notices.
        dev.store
            .note_clock()
            .map_err(|e| format!("device {d}: {e}"))?;
        let out = dev.node.committed(&dev.store);
        self.handle(d, out);
        Ok(())
    }

    /// Notes what a transaction did, for the invariants and failure reports.
    pub(super) fn record(&mut self, d: usize, txn: &Txn, outcome: Outcome) {
        self.report.writes += 1;
        let what = match outcome {
            Outcome::Committed(before, after) => {
                self.devices[d].written.push((before, after));
                format!("seq->{after}")
            }
            Outcome::RolledBack => {
                self.report.rolled_back += 1;
                "rolled back".into()
            }
            Outcome::Refused(e) => {
                self.report.refused += 1;
                format!("refused ({e})")
            }
        };
        let fk = if txn.fk_off {
            " [foreign_keys off]"
        } else {
            ""
        };
        let sql = txn.sql.split_whitespace().collect::<Vec<_>>().join(" ");
        self.devices[d]
            .log
            .push(format!("t={} {what}{fk}: {sql}", self.now));
    }

    /// What a user does about app UNIQUE conflicts between devices (see the
    /// README): on each device showing one, delete the local row holding the
    /// name; the quarantined change then applies on its retry and the delete
    /// reaches every device. Returns whether anything was done.
    pub(super) fn resolve_conflicts(&mut self) -> Result<bool, String> {
        let mut any = false;
        for d in 0..self.devices.len() {
            let names: Vec<String> = {
                let conn = &self.devices[d].store.lib.conn;
                let mut stmt = conn
                    .prepare(
                        "SELECT DISTINCT json_extract(json_extract(change, '$.data'), '$.name') \
                         FROM sdsync_quarantine WHERE tbl = 'collections' AND instr(reason, ?1)",
                    )
                    .map_err(|e| e.to_string())?;
                stmt.query_map([super::UNIQUE_CONFLICT], |r| r.get::<_, Option<String>>(0))
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .flatten()
                    .collect()
            };
            for name in names {
                self.clock(d);
                let txn = Txn {
                    sql: format!("DELETE FROM collections WHERE name = '{name}'"),
                    rollback: false,
                    fk_off: false,
                };
                let outcome = run_txn(&self.devices[d].store, &txn)
                    .map_err(|e| format!("device {d}, resolving: {e}"))?;
                self.record(d, &txn, outcome);
                self.report.resolved += 1;
                let dev = &mut self.devices[d];
                let out = dev.node.committed(&dev.store);
                self.handle(d, out);
                any = true;
            }
        }
        Ok(any)
    }

    /// Draws device `d`'s next write transaction.
    pub(super) fn next_txn(&mut self, d: usize) -> Txn {
        let key = self.rng.below(6);
        let name = self.rng.below(4);
        let album = self.rng.below(2);
        let owner = self.rng.below(self.devices.len() as u64);
        let val = self.rng.below(5);
        let me = d;
        let sql = match self.rng.below(12) {
            0..=2 => {
                let cols = if self.devices[d].upgraded { 4 } else { 3 };
                let described = self.described(d);
                let col = ["color", "icon", described, "emoji"][self.rng.below(cols) as usize];
                format!(
                    "INSERT OR IGNORE INTO tags(uuid, canonical_name) VALUES (sdsync_uuid_v5('tag', 'tag{name}'), 'tag{name}');
                     UPDATE tags SET {col} = 'v{val}-{me}' WHERE uuid = sdsync_uuid_v5('tag', 'tag{name}');"
                )
            }
            3 => format!("DELETE FROM tags WHERE uuid = sdsync_uuid_v5('tag', 'tag{name}')"),
            4..=5 => {
                let parent = if self.rng.chance(50) {
                    format!(
                        "(SELECT id FROM entries WHERE uuid = 'd{me}-e{}' AND parent_id IS NULL)",
                        self.rng.below(3)
                    )
                } else {
                    "NULL".into()
                };
                format!(
                    "INSERT OR IGNORE INTO entries(uuid, name, parent_id) VALUES ('d{me}-e{key}', 'n{key}', {parent})"
                )
            }
            6 if self.devices[d].upgraded && self.rng.chance(50) => {
                format!("UPDATE entries SET note = 'n{val}-{me}' WHERE uuid = 'd{me}-e{key}'")
            }
            // An entry moved under another top-level entry (no draw of its
            // own, so seeds keep their schedules).
            6 if val == 4 => format!(
                "UPDATE entries SET parent_id = (SELECT id FROM entries WHERE uuid = 'd{me}-e{}' AND parent_id IS NULL) \
                 WHERE uuid = 'd{me}-e{key}' AND uuid <> 'd{me}-e{}'",
                name % 3,
                name % 3
            ),
            6 => format!("UPDATE entries SET size = {val} WHERE uuid = 'd{me}-e{key}'"),
            7 => format!("DELETE FROM entries WHERE uuid = 'd{me}-e{key}'"),
            // An album under a fresh uuid and a name an app UNIQUE index guards:
            // two devices apart may take the same name (a conflict between devices).
            10 => format!(
                "INSERT OR IGNORE INTO collections(uuid, name) VALUES ('u-{me}-{}', 'u{album}')",
                self.now
            ),
            // Values at the edges of every storage class, in owned and shared rows.
            11 => {
                let value = EXTREMES[self.rng.below(EXTREMES.len() as u64) as usize];
                if self.rng.chance(50) {
                    format!(
                        "UPDATE entries SET inode = {value}, extension = {value} WHERE uuid = 'd{me}-e{key}'"
                    )
                } else {
                    format!(
                        "UPDATE tags SET icon = {value} WHERE uuid = sdsync_uuid_v5('tag', 'tag{name}')"
                    )
                }
            }
            _ => {
                let entry = format!("d{owner}-e{key}");
                if self.rng.chance(70) {
                    format!(
                        "INSERT OR IGNORE INTO collections(uuid, name) VALUES (sdsync_uuid_v5('album', 'a{album}'), 'a{album}');
                         INSERT OR IGNORE INTO collection_entries(uuid, collection_id, entry_id)
                           SELECT sdsync_uuid_v5('collection_entry', c.uuid || '/' || e.uuid), c.id, e.id
                           FROM collections c, entries e WHERE c.uuid = sdsync_uuid_v5('album', 'a{album}') AND e.uuid = '{entry}';"
                    )
                } else if val == 4 {
                    // A membership moved to another device's entry, which
                    // that device may be deleting meanwhile.
                    format!(
                        "UPDATE collection_entries SET entry_id = (SELECT id FROM entries WHERE uuid = 'd{}-e{}') \
                         WHERE uuid = sdsync_uuid_v5('collection_entry', sdsync_uuid_v5('album', 'a{album}') || '/' || '{entry}')",
                        (owner + 1) % self.devices.len() as u64,
                        (key + name) % 6
                    )
                } else {
                    format!(
                        "DELETE FROM collection_entries WHERE uuid = sdsync_uuid_v5('collection_entry', sdsync_uuid_v5('album', 'a{album}') || '/' || '{entry}')"
                    )
                }
            }
        };
        let sql = self.in_some_form(sql, me, val);
        Txn {
            sql,
            rollback: self.rng.chance(10),
            fk_off: self.rng.chance(15),
        }
    }

    /// The name of the tags' description column on device `d`: the upgrade
    /// renames it (`schema::UPGRADE`).
    fn described(&self, d: usize) -> &'static str {
        if self.devices[d].upgraded {
            "summary"
        } else {
            "description"
        }
    }

    /// The same write as real clients phrase it: upserts, conflict clauses,
    /// REPLACE, RETURNING, work undone by a savepoint, extreme values. Each form
    /// must be captured exactly (or refused, which none of these is).
    fn in_some_form(&mut self, sql: String, me: usize, val: u64) -> String {
        let extreme = [
            "9223372036854775807",
            "-9223372036854775808",
            "0",
            "-1",
            "4503599627370497",
        ][(val % 5) as usize];
        let clause = crate::CONFLICT_CLAUSES[self.rng.below(6) as usize];
        let form = self.rng.below(8);
        match form {
            // Conflict clauses on every UPDATE.
            0 | 1 => sql.replace("UPDATE ", &format!("UPDATE {clause}")),
            // Tag writes as an upsert (sqlite-utils, SQLAlchemy, Django).
            2 if sql.contains("INSERT OR IGNORE INTO tags") => {
                let (name, col, value) = parse_tag_write(&sql);
                format!(
                    "INSERT INTO tags(uuid, canonical_name, {col}) VALUES (sdsync_uuid_v5('tag', '{name}'), '{name}', '{value}') \
                     ON CONFLICT(uuid) DO UPDATE SET {col} = excluded.{col} RETURNING id"
                )
            }
            // Or as a REPLACE, which deletes and re-creates the row.
            3 if sql.contains("INSERT OR IGNORE INTO tags") => {
                let (name, col, value) = parse_tag_write(&sql);
                format!(
                    "INSERT OR REPLACE INTO tags(uuid, canonical_name, {col}) VALUES (sdsync_uuid_v5('tag', '{name}'), '{name}', '{value}')"
                )
            }
            // Extreme integers.
            4 if sql.starts_with("UPDATE entries SET size") => sql.replace(
                &format!("SET size = {val} "),
                &format!("SET size = {extreme}, inode = {extreme} "),
            ),
            // Work undone by a savepoint before the real write.
            5 => format!(
                "SAVEPOINT sp; UPDATE tags SET {} = 'undone'; DELETE FROM entries WHERE uuid LIKE 'd{me}-%'; \
                 ROLLBACK TO sp; RELEASE sp; {sql}",
                self.described(me)
            ),
            _ => sql,
        }
    }
}

/// The tag name, column and value of a tag write from `write`.
fn parse_tag_write(sql: &str) -> (String, String, String) {
    let name = sql
        .split("'tag', '")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap_or("tag0");
    let set = sql
        .split("UPDATE tags SET ")
        .nth(1)
        .unwrap_or("color = 'v'");
    let (col, rest) = set.split_once(" = '").unwrap_or(("color", "v'"));
    let value = rest.split('\'').next().unwrap_or("v");
    (name.to_string(), col.to_string(), value.to_string())
}
