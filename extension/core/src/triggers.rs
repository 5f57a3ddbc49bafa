//! The capture triggers `sdsync_track` installs, as SQL text.
//!
//! ```
//! use sdsync_core::schema::{Class, ColumnSpec, Affinity, TableSpec};
//! use sdsync_core::triggers::create_statements;
//! let spec = TableSpec {
//!     id: 1, name: "tags".into(), class: Class::Shared, uuid_column: "uuid".into(),
//!     local_id: Some("id".into()),
//!     columns: vec![ColumnSpec { name: "name".into(), affinity: Affinity::Text, required: false, reference: None }],
//! };
//! let sql = create_statements(&spec, 1);
//! assert!(sql[0].starts_with("CREATE TRIGGER \"sdsync_tags_ins\""));
//! ```
//!
//! Why pure SQL triggers: SQLite compiles a trigger into the writing statement, so
//! capture costs no statement preparation per row, runs in the writer's transaction
//! (atomic with the write, DESIGN.md §2.1), and works for every client. The triggers
//! only call the extension's INNOCUOUS functions (`sdsync_capturing()`,
//! `sdsync_wall()`, `sdsync_refuse*()`), so a connection without the extension fails
//! with "no such function" instead of writing uncaptured (fail closed, §2.2).
//!
//! Capture stores metadata only: one version row per group of columns sharing a
//! version, in `sdsync_versions(tbl, pk, mask, origin, seq, hlc)`. Values are read
//! from the table itself when changes are served.

use crate::schema::{Class, TableSpec, quote_ident, quote_literal};

/// Bumps the persistent clock: next HLC by the send rule, next local sequence.
const CLOCK_BUMP: &str =
    "UPDATE sdsync_clock SET hlc = max(hlc + 1, sdsync_wall()), seq = seq + 1;";

/// Names of the triggers a table gets, for `sdsync_untrack`.
pub fn trigger_names(table: &str) -> Vec<String> {
    ["ins", "upd", "del", "apply_del", "rekey"]
        .iter()
        .map(|kind| format!("sdsync_{table}_{kind}"))
        .collect()
}

/// `CREATE TRIGGER` statements for a table, for the local origin id `origin`.
pub fn create_statements(spec: &TableSpec, origin: i64) -> Vec<String> {
    let t = Ctx::new(spec, origin);
    vec![
        t.insert(),
        t.update(),
        t.delete(),
        t.apply_delete(),
        t.rekey(),
    ]
}

/// `DROP TRIGGER` statements for a table.
pub fn drop_statements(table: &str) -> Vec<String> {
    trigger_names(table)
        .into_iter()
        .map(|n| format!("DROP TRIGGER IF EXISTS {};", quote_ident(&n)))
        .collect()
}

/// What every generated statement needs.
struct Ctx<'a> {
    spec: &'a TableSpec,
    origin: i64,
    table: String,
    uuid: String,
}

impl<'a> Ctx<'a> {
    fn new(spec: &'a TableSpec, origin: i64) -> Self {
        Self {
            spec,
            origin,
            table: quote_ident(&spec.name),
            uuid: quote_ident(&spec.uuid_column),
        }
    }

    fn name(&self, kind: &str) -> String {
        quote_ident(&format!("sdsync_{}_{kind}", self.spec.name))
    }

    /// Refuses a local write to a device-owned row that another device owns.
    fn ownership_check(&self, row: &str) -> String {
        if self.spec.class != Class::Owned {
            return String::new();
        }
        format!(
            "SELECT sdsync_refuse({tbl}, {row}.{uuid}, o.uuid) FROM sdsync_versions v \
             JOIN sdsync_origins o ON o.id = v.origin \
             WHERE v.tbl = {id} AND v.pk = {row}.{uuid} AND v.origin <> {origin};",
            tbl = quote_literal(&self.spec.name),
            uuid = self.uuid,
            id = self.spec.id,
            origin = self.origin,
        )
    }

    /// Records a new version group for the row from the freshly bumped clock.
    fn record(&self, row: &str, mask: &str) -> String {
        format!(
            "INSERT INTO sdsync_versions(tbl, pk, mask, origin, seq, hlc) \
             SELECT {id}, {row}.{uuid}, {mask}, {origin}, seq, hlc FROM sdsync_clock;",
            id = self.spec.id,
            uuid = self.uuid,
            origin = self.origin,
        )
    }

    fn forget(&self, row: &str) -> String {
        format!(
            "DELETE FROM sdsync_versions WHERE tbl = {} AND pk = {row}.{};",
            self.spec.id, self.uuid
        )
    }

    fn insert(&self) -> String {
        format!(
            "CREATE TRIGGER {name} AFTER INSERT ON {table} WHEN sdsync_capturing() BEGIN {check} {CLOCK_BUMP} {forget} {record} END;",
            name = self.name("ins"),
            table = self.table,
            check = self.ownership_check("NEW"),
            forget = self.forget("NEW"),
            record = self.record("NEW", &self.spec.all_mask().to_string()),
        )
    }

    /// The mask of columns an UPDATE changed, computed from OLD and NEW.
    fn changed_mask(&self) -> String {
        let parts: Vec<String> = self
            .spec
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let c = quote_ident(&c.name);
                format!("((OLD.{c} IS NOT NEW.{c}) << {})", i + 1)
            })
            .collect();
        if parts.is_empty() {
            "0".into()
        } else {
            format!("({})", parts.join(" | "))
        }
    }

    fn update(&self) -> String {
        let m = self.changed_mask();
        let body = match self.spec.class {
            // Owned rows carry one version for the whole row: move it forward.
            Class::Owned => format!(
                "{check} {CLOCK_BUMP} UPDATE sdsync_versions SET origin = {origin}, seq = c.seq, hlc = c.hlc \
                 FROM sdsync_clock c WHERE tbl = {id} AND pk = NEW.{uuid};",
                check = self.ownership_check("NEW"),
                origin = self.origin,
                id = self.spec.id,
                uuid = self.uuid,
            ),
            // Shared rows: the changed columns leave their old groups and form a new one.
            Class::Shared => format!(
                "{CLOCK_BUMP} \
                 DELETE FROM sdsync_versions WHERE tbl = {id} AND pk = NEW.{uuid} AND (mask & ~{m}) = 0; \
                 UPDATE sdsync_versions SET mask = mask & ~{m} WHERE tbl = {id} AND pk = NEW.{uuid} AND (mask & {m}) <> 0; \
                 {record}",
                id = self.spec.id,
                uuid = self.uuid,
                record = self.record("NEW", &m),
            ),
        };
        format!(
            "CREATE TRIGGER {name} AFTER UPDATE ON {table} WHEN sdsync_capturing() AND {m} <> 0 BEGIN {body} END;",
            name = self.name("upd"),
            table = self.table,
        )
    }

    fn delete(&self) -> String {
        format!(
            "CREATE TRIGGER {name} AFTER DELETE ON {table} WHEN sdsync_capturing() BEGIN {check} {CLOCK_BUMP} {forget} {record} END;",
            name = self.name("del"),
            table = self.table,
            check = self.ownership_check("OLD"),
            forget = self.forget("OLD"),
            record = self.record("OLD", "0"),
        )
    }

    /// Rows deleted while applying peers' changes (e.g. by ON DELETE CASCADE) lose
    /// their version rows, so no live version ever points at a missing row; the
    /// origin's own tombstones for them arrive separately.
    fn apply_delete(&self) -> String {
        format!(
            "CREATE TRIGGER {name} AFTER DELETE ON {table} WHEN NOT sdsync_capturing() BEGIN {forget} END;",
            name = self.name("apply_del"),
            table = self.table,
            forget = self.forget("OLD"),
        )
    }

    /// A row's uuid is its identity everywhere; changing it would orphan its history.
    fn rekey(&self) -> String {
        format!(
            "CREATE TRIGGER {name} BEFORE UPDATE OF {uuid} ON {table} WHEN OLD.{uuid} IS NOT NEW.{uuid} BEGIN \
             SELECT sdsync_refuse_rekey({tbl}, OLD.{uuid}, NEW.{uuid}); END;",
            name = self.name("rekey"),
            table = self.table,
            uuid = self.uuid,
            tbl = quote_literal(&self.spec.name),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Affinity, ColumnSpec};

    fn spec(class: Class) -> TableSpec {
        let col = |n: &str| ColumnSpec {
            name: n.into(),
            affinity: Affinity::Text,
            required: false,
            reference: None,
        };
        TableSpec {
            id: 4,
            name: "my \"t\"".into(),
            class,
            uuid_column: "uuid".into(),
            local_id: None,
            columns: vec![col("a"), col("b")],
        }
    }

    #[test]
    fn shared_update_splits_groups_by_changed_mask() {
        let sql = create_statements(&spec(Class::Shared), 9);
        let upd = &sql[1];
        assert!(
            upd.contains(
                "((OLD.\"a\" IS NOT NEW.\"a\") << 1) | ((OLD.\"b\" IS NOT NEW.\"b\") << 2)"
            )
        );
        assert!(
            upd.contains("\"my \"\"t\"\"\""),
            "identifiers are quoted: {upd}"
        );
        assert!(!upd.contains("sdsync_refuse("), "shared rows have no owner");
    }

    #[test]
    fn owned_triggers_check_the_owner() {
        let sql = create_statements(&spec(Class::Owned), 9);
        for s in &sql[..3] {
            assert!(s.contains("sdsync_refuse('my \"t\"'"), "{s}");
            assert!(s.contains("v.origin <> 9"), "{s}");
        }
        assert!(
            sql[0].contains(", 7, 9, seq, hlc FROM sdsync_clock"),
            "{}",
            sql[0]
        );
    }

    #[test]
    fn names_match_drop_statements() {
        let created = create_statements(&spec(Class::Shared), 1);
        for (c, name) in created.iter().zip(trigger_names("my \"t\"")) {
            assert!(c.starts_with(&format!("CREATE TRIGGER {}", quote_ident(&name))));
        }
        assert_eq!(drop_statements("x").len(), 5);
    }
}
