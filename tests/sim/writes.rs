//! The simulation's local writes: what a device's app does, phrased as real
//! clients phrase it.
//!
//! ```ignore
//! sim.write(d)?; // one random write transaction on device d, committed or rolled back
//! ```

use super::{Sim, local_seq};

impl Sim {
    pub(super) fn write(&mut self, d: usize) -> Result<(), String> {
        if !self.devices[d].up {
            return Ok(());
        }
        self.clock(d);
        let key = self.rng.below(6);
        let name = self.rng.below(4);
        let album = self.rng.below(2);
        let owner = self.rng.below(self.devices.len() as u64);
        let val = self.rng.below(5);
        let me = d;
        // The random draws happen in the same order as before, so seeds replay.
        let sql = match self.rng.below(10) {
            0..=2 => {
                let col = ["color", "icon", "description"][self.rng.below(3) as usize];
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
            6 => format!("UPDATE entries SET size = {val} WHERE uuid = 'd{me}-e{key}'"),
            7 => format!("DELETE FROM entries WHERE uuid = 'd{me}-e{key}'"),
            _ => {
                let entry = format!("d{owner}-e{key}");
                if self.rng.chance(70) {
                    format!(
                        "INSERT OR IGNORE INTO collections(uuid, name) VALUES (sdsync_uuid_v5('album', 'a{album}'), 'a{album}');
                         INSERT OR IGNORE INTO collection_entries(uuid, collection_id, entry_id)
                           SELECT sdsync_uuid_v5('collection_entry', c.uuid || '/' || e.uuid), c.id, e.id
                           FROM collections c, entries e WHERE c.uuid = sdsync_uuid_v5('album', 'a{album}') AND e.uuid = '{entry}';"
                    )
                } else {
                    format!(
                        "DELETE FROM collection_entries WHERE uuid = sdsync_uuid_v5('collection_entry', sdsync_uuid_v5('album', 'a{album}') || '/' || '{entry}')"
                    )
                }
            }
        };
        let sql = self.in_some_form(sql, me, val);
        let end = if self.rng.chance(10) {
            self.report.rolled_back += 1;
            "ROLLBACK"
        } else {
            "COMMIT"
        };
        let dev = &mut self.devices[d];
        let before = local_seq(&dev.store);
        dev.store
            .lib
            .exec(&format!("BEGIN; {sql}; {end};"))
            .map_err(|e| format!("device {d} write failed: {e}\n{sql}"))?;
        let seq = local_seq(&dev.store);
        dev.written.push((before, seq));
        dev.log.push(format!(
            "t={} seq->{seq}: {}",
            self.now,
            sql.split_whitespace().collect::<Vec<_>>().join(" ")
        ));
        self.report.writes += 1;
        let out = dev.node.committed(&dev.store);
        self.handle(d, out);
        Ok(())
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
                "SAVEPOINT sp; UPDATE tags SET description = 'undone'; DELETE FROM entries WHERE uuid LIKE 'd{me}-%'; \
                 ROLLBACK TO sp; RELEASE sp; {sql}"
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
