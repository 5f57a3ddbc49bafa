//! The capture triggers `sdsync_track` installs, as SQL text.
//!
//! ```
//! use sdsync_core::schema::{Class, ColumnSpec, Affinity, TableSpec};
//! use sdsync_core::triggers::create_statements;
//! let spec = TableSpec {
//!     id: 1, name: "tags".into(), class: Class::Shared, uuid_column: "uuid".into(),
//!     local_id: "id".into(),
//!     columns: vec![ColumnSpec { name: "name".into(), affinity: Affinity::Text, required: false, reference: None }],
//!     options: Default::default(), aliases: vec![], column_aliases: vec![],
//! };
//! let sql = create_statements(&spec, 1, &[]);
//! assert!(sql[0].starts_with("CREATE TRIGGER \"sdsync_ins_tags\""));
//! ```
//!
//! Why pure SQL triggers: SQLite compiles a trigger into the writing statement, so
//! capture costs no statement preparation per row, runs in the writer's transaction
//! (atomic with the write, DESIGN.md §2.1), and works for every client. The triggers
//! only call the extension's INNOCUOUS functions (`sdsync_capturing()`,
//! `sdsync_wall()`, `sdsync_refuse*()`), so a connection without the extension fails
//! with "no such function" instead of writing uncaptured (fail closed, §2.2).
//!
//! Capture stores metadata only: one row per group of columns sharing a version in
//! `sdsync_versions(tbl, rid, mask, origin, seq, hlc)`, keyed by the table's rowid
//! (small keys: measured ×1.3 smaller and ×2 faster than keying by the uuid text),
//! and one row per deleted row in `sdsync_tombstones(tbl, pk, origin, seq, hlc)`,
//! keyed by the uuid (the rowid is gone). Values are read from the table itself
//! when changes are served. An UPDATE's version goes to `sdsync_log` first and
//! reaches `sdsync_versions` when the log is folded (trigger format 10, the
//! extension's `fold.rs`).

use crate::limits::{size_check, size_check_update};
use crate::schema::{Class, TableSpec, quote_ident, quote_literal};

/// Bumps the persistent clock: next HLC by the send rule, next local sequence.
/// `sdsync_next_stamp` (format 10's name of `sdsync_next_hlc`, which an
/// older extension lacks) computes `max(hlc + 1, wall)` and, when that enters a new
/// second (or is a connection's first change, or comes on a clock gone below
/// what the connection issued), records the pair in `sdsync_issued` (in the
/// writer's transaction), so a peer's copy of a lost change can be told from
/// this history after a restore. A statement of its own in every trigger cost
/// ×1.6 on inserts (`sdsync bench`); the function decides in Rust per row and
/// writes about once a second of writing.
///
/// The sequence number comes from the function too: the clock row lags
/// the updates in `sdsync_log` until they are folded, and `sdsync_next_stamp`
/// follows the newest of the two. SQLite computes an UPDATE's new values in
/// the table's column order, `hlc` before `seq`.
const CLOCK_BUMP: &str =
    "UPDATE sdsync_clock SET hlc = sdsync_next_stamp(hlc, seq), seq = sdsync_bumped(0);";

/// The sequence number and HLC [`CLOCK_BUMP`] just issued, as the next
/// statement of the trigger reads them: from the connection, where
/// `sdsync_next_hlc` left them for this row, not from the clock row (a
/// subquery on it per row cost about 3 % of a bulk update's capture, `bench_capture`).
const BUMPED: &str = "sdsync_bumped(0), sdsync_bumped(1)";

/// The end of the update trigger's log append. The writing statement's
/// conflict clause overrides a trigger statement's own (`Ctx::record`), so
/// under `UPDATE OR IGNORE` a second entry under one number would vanish and
/// under `OR REPLACE` displace the first; an upsert is not overridden, and
/// this one refuses the write instead. No number is issued twice
/// (`sdsync_stamp`): this is the guard should that ever break.
const COLLISION: &str = "ON CONFLICT(seq) DO UPDATE SET tbl = sdsync_refuse_seq(excluded.seq);";

/// The kinds of trigger a table gets. The kind comes first in a trigger's name
/// (`sdsync_<kind>_<table>`) and no kind followed by `_` starts another kind, so
/// two tables' trigger names never collide (with the table first, table `x`'s
/// `apply_del` was table `x_apply`'s `del`).
const KINDS: [&str; 5] = ["ins", "upd", "del", "adel", "rekey"];

/// Names of the triggers a table gets.
pub fn trigger_names(table: &str) -> Vec<String> {
    KINDS
        .iter()
        .map(|kind| format!("sdsync_{kind}_{table}"))
        .collect()
}

/// A tracked column referencing the table whose triggers are being made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child {
    /// The referencing table.
    pub table: String,
    /// Its referencing column.
    pub column: String,
    /// The referenced column of the parent (its id, or its uuid).
    pub parent_column: String,
    /// A declared FOREIGN KEY (enforced while `foreign_keys` is on).
    pub declared: bool,
}

/// The tracked columns of `specs` that reference table `parent`.
pub fn children<'a>(parent: &str, specs: impl IntoIterator<Item = &'a TableSpec>) -> Vec<Child> {
    let mut out = Vec::new();
    for spec in specs {
        for col in &spec.columns {
            let Some(r) = col.reference.as_ref().filter(|r| r.table == parent) else {
                continue;
            };
            out.push(Child {
                table: spec.name.clone(),
                column: col.name.clone(),
                parent_column: r.column.clone(),
                declared: r.declared,
            });
        }
    }
    out
}

/// `CREATE TRIGGER` statements for a table, for the local origin id `origin`;
/// `children` are the tracked columns that reference it.
pub fn create_statements(spec: &TableSpec, origin: i64, children: &[Child]) -> Vec<String> {
    let t = Ctx::new(spec, origin, children);
    vec![
        t.insert(),
        t.update(),
        t.delete(),
        t.apply_delete(),
        t.rekey(),
    ]
}

/// Finds every trigger sdsync installed on a table, whatever naming scheme the
/// version that installed it used: bind the table name as `?1`.
pub const INSTALLED_TRIGGERS: &str = "SELECT name FROM sqlite_schema WHERE type = 'trigger' \
     AND tbl_name = ?1 COLLATE NOCASE AND name LIKE 'sdsync\\_%' ESCAPE '\\'";

/// `DROP TRIGGER` for one trigger name.
pub fn drop_statement(name: &str) -> String {
    format!("DROP TRIGGER IF EXISTS {};", quote_ident(name))
}

/// What every generated statement needs.
struct Ctx<'a> {
    spec: &'a TableSpec,
    origin: i64,
    children: &'a [Child],
    table: String,
    uuid: String,
}

impl<'a> Ctx<'a> {
    fn new(spec: &'a TableSpec, origin: i64, children: &'a [Child]) -> Self {
        Self {
            spec,
            origin,
            children,
            table: quote_ident(&spec.name),
            uuid: quote_ident(&spec.uuid_column),
        }
    }

    fn name(&self, kind: &str) -> String {
        quote_ident(&format!("sdsync_{kind}_{}", self.spec.name))
    }

    fn rid(&self, row: &str) -> String {
        format!("{row}.{}", quote_ident(&self.spec.local_id))
    }

    /// The error a local write to another device's owned row gets (evaluated only
    /// when the row's owner column `owner` is not this device).
    fn refuse(&self, row: &str, owner: &str) -> String {
        format!(
            "sdsync_refuse({}, {row}.{}, (SELECT uuid FROM sdsync_origins WHERE id = {owner}))",
            quote_literal(&self.spec.name),
            self.uuid
        )
    }

    /// Drops the row's tombstone when a row is (re-)created under its uuid. A
    /// device-owned row that another device deleted may not be re-created here.
    fn clear_tombstone(&self) -> String {
        let guard = match self.spec.class {
            Class::Owned => format!(
                " AND (origin = {} OR {})",
                self.origin,
                self.refuse("NEW", "origin")
            ),
            Class::Shared => String::new(),
        };
        format!(
            "DELETE FROM sdsync_tombstones WHERE tbl = {id} AND pk = NEW.{uuid}{guard};",
            id = self.spec.id,
            uuid = self.uuid,
        )
    }

    /// Refuses changing or deleting a device-owned row that another device owns.
    fn owner_check(&self, row: &str) -> String {
        if self.spec.class != Class::Owned {
            return String::new();
        }
        format!(
            "SELECT {refuse} FROM sdsync_versions v WHERE v.tbl = {id} AND v.rid = {rid} AND v.origin <> {origin};",
            refuse = self.refuse(row, "v.origin"),
            id = self.spec.id,
            rid = self.rid(row),
            origin = self.origin,
        )
    }

    /// Records a new version group for the row from the freshly bumped clock,
    /// replacing the group of the same column set.
    ///
    /// SQLite applies the *writing* statement's conflict clause (`UPDATE OR
    /// IGNORE`, `OR ABORT`, ...) to the statements inside a trigger, overriding
    /// theirs: an `INSERT OR REPLACE` here became `OR IGNORE` (the version
    /// silently kept) or `OR ABORT` (the write refused). An upsert's `ON
    /// CONFLICT DO UPDATE` is not overridden (`tests/tests/write_forms.rs` runs
    /// every clause), and costs one index probe like `OR REPLACE` did.
    fn record(&self, mask: &str) -> String {
        format!(
            "INSERT INTO sdsync_versions(tbl, rid, mask, origin, seq, hlc) \
             VALUES ({id}, {rid}, {mask}, {origin}, {BUMPED}) \
             ON CONFLICT(tbl, rid, mask) DO UPDATE SET origin = excluded.origin, seq = excluded.seq, hlc = excluded.hlc;",
            id = self.spec.id,
            rid = self.rid("NEW"),
            origin = self.origin,
        )
    }

    fn forget(&self, row: &str) -> String {
        format!(
            "DELETE FROM sdsync_versions WHERE tbl = {} AND rid = {};",
            self.spec.id,
            self.rid(row)
        )
    }

    fn insert(&self) -> String {
        format!(
            "CREATE TRIGGER {name} AFTER INSERT ON {table} WHEN sdsync_capturing() BEGIN {size} {clear} \
             {CLOCK_BUMP} {record} END;",
            size = size_check(self.spec),
            name = self.name("ins"),
            table = self.table,
            clear = self.clear_tombstone(),
            record = self.record(&self.spec.all_mask().to_string()),
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

    /// Whether an UPDATE changed any synced column, for the update trigger's
    /// `WHEN`: `(OLD."a" IS NOT NEW."a" OR …)`, in the columns' order, which
    /// is their mask bits' order (`migrate::renames` reads a rename back
    /// from it). An `OR` stops at the first changed column; the bit mask
    /// the `WHEN` computed before costs every column's bit for every row
    /// (about 1,100 of 24,000 instructions per row of a lean table's bulk
    /// update, README "Performance", session 25).
    fn changed_any(&self) -> String {
        let terms: Vec<String> = self
            .spec
            .columns
            .iter()
            .map(|c| {
                let c = quote_ident(&c.name);
                format!("OLD.{c} IS NOT NEW.{c}")
            })
            .collect();
        if terms.is_empty() {
            "0".into()
        } else {
            format!("({})", terms.join(" OR "))
        }
    }

    /// An update appends one entry to `sdsync_log`, numbered and stamped by
    /// `sdsync_stamp()` (no clock row write), and leaves the version to the
    /// fold (extension `fold.rs`): about a quarter of what rewriting the
    /// version and moving its `(origin, seq)` index entry cost the writer
    /// (README "Performance", session 27). Always
    /// `INSERT … SELECT`: a SELECT computes its columns left to right, so
    /// the stamp comes before `sdsync_bumped` reads it (`VALUES` computed
    /// the rowid, `seq`, last).
    fn update(&self) -> String {
        let any = self.changed_any();
        let id = self.spec.id;
        let rid = self.rid("NEW");
        let body = match self.spec.class {
            // Owned rows carry one version for the whole row: the entry moves
            // that group. The owner check rides along in the same lookup.
            Class::Owned => format!(
                "INSERT INTO sdsync_log(seq, tbl, rid, mask, hlc) \
                 SELECT sdsync_stamp(), {id}, {rid}, v.mask, sdsync_bumped(1) FROM sdsync_versions v \
                 WHERE v.tbl = {id} AND v.rid = {rid} \
                 AND CASE WHEN v.origin = {origin} THEN 1 ELSE {refuse} END {COLLISION}",
                origin = self.origin,
                refuse = self.refuse("NEW", "v.origin"),
            ),
            // Shared rows: the changed columns form a new group, which shadows
            // them in older groups (see `merge::normalize`). The group of the same
            // column set is replaced; other shadowed groups stay until apply
            // rewrites the row (bounded by the distinct column sets updated).
            Class::Shared => format!(
                "INSERT INTO sdsync_log(seq, tbl, rid, mask, hlc) \
                 SELECT sdsync_stamp(), {id}, {rid}, {mask}, sdsync_bumped(1) WHERE true {COLLISION}",
                mask = self.changed_mask()
            ),
        };
        format!(
            "CREATE TRIGGER {name} AFTER UPDATE ON {table} WHEN sdsync_capturing() AND {any} BEGIN {size} {body} END;",
            size = size_check_update(self.spec),
            name = self.name("upd"),
            table = self.table,
        )
    }

    fn delete(&self) -> String {
        format!(
            "CREATE TRIGGER {name} AFTER DELETE ON {table} WHEN sdsync_capturing() BEGIN {check} {dangling} {CLOCK_BUMP} {forget} \
             INSERT INTO sdsync_tombstones(tbl, pk, origin, seq, hlc) \
             VALUES ({id}, OLD.{uuid}, {origin}, {BUMPED}) \
             ON CONFLICT(tbl, pk) DO UPDATE SET origin = excluded.origin, seq = excluded.seq, hlc = excluded.hlc; END;",
            name = self.name("del"),
            table = self.table,
            check = self.owner_check("OLD"),
            dangling = self.dangling_checks(),
            forget = self.forget("OLD"),
            id = self.spec.id,
            uuid = self.uuid,
            origin = self.origin,
        )
    }

    /// Refuses a delete that leaves rows referencing the deleted row. Peers
    /// applying the delete remove (park) those rows, so the origin must not keep
    /// them: with `foreign_keys` on, SQLite has cascaded, nulled or refused
    /// already and nothing is left; a connection that turned it off (or a `refs`
    /// reference, which SQLite does not enforce) would diverge.
    fn dangling_checks(&self) -> String {
        self.children
            .iter()
            .map(|c| {
                let enforced = if c.declared {
                    "NOT sdsync_foreign_keys() AND "
                } else {
                    ""
                };
                format!(
                    "SELECT sdsync_refuse_dangling({tbl}, OLD.{uuid}, {child}, {col}) WHERE {enforced}\
                     EXISTS (SELECT 1 FROM {child_t} WHERE {col_i} = OLD.{parent_col});",
                    tbl = quote_literal(&self.spec.name),
                    uuid = self.uuid,
                    child = quote_literal(&c.table),
                    col = quote_literal(&c.column),
                    child_t = quote_ident(&c.table),
                    col_i = quote_ident(&c.column),
                    parent_col = quote_ident(&c.parent_column),
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Rows deleted while applying peers' changes (e.g. by ON DELETE CASCADE) lose
    /// their version rows, so no version ever points at a missing row; the
    /// origin's own tombstones for them arrive separately.
    fn apply_delete(&self) -> String {
        format!(
            "CREATE TRIGGER {name} AFTER DELETE ON {table} WHEN NOT sdsync_capturing() BEGIN {forget} END;",
            name = self.name("adel"),
            table = self.table,
            forget = self.forget("OLD"),
        )
    }

    /// A row's uuid is its identity everywhere, and its local id keys its
    /// versions; changing either would orphan its history.
    fn rekey(&self) -> String {
        format!(
            "CREATE TRIGGER {name} BEFORE UPDATE OF {uuid}, {rid_col} ON {table} \
             WHEN OLD.{uuid} IS NOT NEW.{uuid} OR OLD.{rid_col} IS NOT NEW.{rid_col} BEGIN \
             SELECT sdsync_refuse_rekey({tbl}, OLD.{uuid}, NEW.{uuid}); END;",
            name = self.name("rekey"),
            table = self.table,
            uuid = self.uuid,
            rid_col = quote_ident(&self.spec.local_id),
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
            local_id: "rid".into(),
            columns: vec![col("a"), col("b")],
            options: Default::default(),
            aliases: Vec::new(),
            column_aliases: Vec::new(),
        }
    }

    #[test]
    fn shared_update_splits_groups_by_changed_mask() {
        let sql = create_statements(&spec(Class::Shared), 9, &[]);
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
    fn update_triggers_fire_on_any_changed_column_in_bit_order() {
        for class in [Class::Shared, Class::Owned] {
            let upd = &create_statements(&spec(class), 9, &[])[1];
            assert!(
                upd.contains(
                    "WHEN sdsync_capturing() AND (OLD.\"a\" IS NOT NEW.\"a\" OR OLD.\"b\" IS NOT NEW.\"b\") BEGIN"
                ),
                "{upd}"
            );
        }
    }

    #[test]
    fn owned_triggers_check_the_owner() {
        let sql = create_statements(&spec(Class::Owned), 9, &[]);
        for s in &sql[..3] {
            assert!(s.contains("sdsync_refuse('my \"t\"'"), "{s}");
        }
        assert!(
            sql[0].contains("AND (origin = 9 OR sdsync_refuse("),
            "{}",
            sql[0]
        );
        assert!(
            sql[1].contains("CASE WHEN v.origin = 9 THEN 1 ELSE"),
            "{}",
            sql[1]
        );
        assert!(sql[2].contains("v.origin <> 9"), "{}", sql[2]);
        assert!(
            sql[0].contains("NEW.\"rid\", 7, 9, sdsync_bumped(0)"),
            "{}",
            sql[0]
        );
    }

    #[test]
    fn names_match_and_never_collide() {
        let created = create_statements(&spec(Class::Shared), 1, &[]);
        for (c, name) in created.iter().zip(trigger_names("my \"t\"")) {
            assert!(c.starts_with(&format!("CREATE TRIGGER {}", quote_ident(&name))));
        }
        // Tables `x` and `x_apply` (or `adel_x`...) once shared a trigger name.
        let mut all: Vec<String> = [
            "x", "x_apply", "apply", "del_x", "adel_x", "x_del", "x_adel",
        ]
        .iter()
        .flat_map(|t| trigger_names(t))
        .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn no_trigger_statement_uses_a_conflict_clause() {
        for class in [Class::Shared, Class::Owned] {
            for sql in create_statements(&spec(class), 9, &[]) {
                assert!(!sql.contains(" OR REPLACE"), "{sql}");
                assert!(!sql.contains(" OR IGNORE"), "{sql}");
            }
        }
    }
}
