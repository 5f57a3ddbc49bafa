//! Columns renamed inside a table rebuild: the copy step says which old
//! column each new one was filled from.
//!
//! ```sql
//! -- Alembic's batch_alter_table(...).alter_column("description", new_column_name="summary")
//! CREATE TABLE _alembic_tmp_tags (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, summary TEXT);
//! INSERT INTO _alembic_tmp_tags (id, uuid, summary) SELECT tags.id, tags.uuid, tags.description FROM tags;
//! DROP TABLE tags;
//! ALTER TABLE _alembic_tmp_tags RENAME TO tags;
//! -- re-tracked: summary keeps description's mask bit and versions, as
//! -- after ALTER TABLE tags RENAME COLUMN description TO summary.
//! ```
//!
//! A rebuild drops the capture triggers with the old table, so
//! [`super::renames::read`] finds nothing there; without more, `summary` was
//! a new column whose values re-tracking stamped as this device's new
//! changes, which beat what peers wrote to `description` meanwhile (the
//! loss `RENAME COLUMN` had before session 22). So while a connection
//! changes its schema, its trace callback (`migrate::watch`) keeps the
//! statements that move tables and columns ([`Statement`]: copies, renames,
//! drops) until their transaction commits, and the repair after the commit
//! follows each column of the old table through them ([`renames`]): Alembic's
//! batch mode, Django's `_remake_table`, sqlite-utils `transform(rename=…)`,
//! a `RENAME COLUMN` before a rebuild in the same transaction, and chains of
//! rebuilds. A column filled by any expression other than a plain column is
//! new data, not a rename.

use std::cell::RefCell;

use sdsync_core::schema::TableSpec;

use super::sqltext::Statement;

thread_local! {
    /// The statements of the transaction being repaired (see [`during`]).
    static STATEMENTS: RefCell<Vec<Statement>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` (a repair) with `statements` known to [`renames`]; returns them
/// after, for a repair tried again later. Whatever `f` does (a panic caught
/// at the FFI boundary included), [`renames`] knows nothing of them after.
pub fn during<T>(statements: Vec<Statement>, f: impl FnOnce() -> T) -> (T, Vec<Statement>) {
    struct Forget;
    impl Drop for Forget {
        fn drop(&mut self) {
            STATEMENTS.with(|s| s.borrow_mut().clear());
        }
    }
    let _forget = Forget;
    STATEMENTS.with(|s| *s.borrow_mut() = statements);
    let out = f();
    (out, STATEMENTS.with(|s| s.take()))
}

/// `(former, current)` for each synced column of `old` that the recorded
/// statements moved under another name of table `table` (its columns now
/// `names`). Each copy out of a table forks its history (the table may
/// also be copied elsewhere, an archive); a dropped table's history ends;
/// the one history that ends as `table` tells. A column the table still
/// has under its old name, or that takes a name the old table had, is not
/// taken for a rename.
pub fn renames(old: &TableSpec, table: &str, names: &[&str]) -> Vec<(String, String)> {
    let ends = STATEMENTS.with(|s| histories(old, &s.borrow()));
    let mut found = ends.iter().filter(|h| h.table.eq_ignore_ascii_case(table));
    let (Some(history), None) = (found.next(), found.next()) else {
        return Vec::new();
    };
    let has = |name: &str| names.iter().any(|n| n.eq_ignore_ascii_case(name));
    let had = |name: &str| {
        old.columns
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(name))
            || old.uuid_column.eq_ignore_ascii_case(name)
            || old.local_id.eq_ignore_ascii_case(name)
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for (former, now) in old.columns.iter().zip(&history.columns) {
        let Some(now) = now.as_deref() else { continue };
        let Some(current) = names.iter().find(|n| n.eq_ignore_ascii_case(now)) else {
            continue;
        };
        let taken = out.iter().any(|(_, c)| c.eq_ignore_ascii_case(current));
        if now.eq_ignore_ascii_case(&former.name) || has(&former.name) || had(now) || taken {
            continue;
        }
        out.push((former.name.clone(), current.to_string()));
    }
    out
}

/// Where the old table's rows went: a table, and the name each synced
/// column of the old table has there (`None`: not carried over plainly).
#[derive(Clone, Debug)]
struct History {
    table: String,
    columns: Vec<Option<String>>,
}

/// Every table the old one's rows live on in after `statements`.
fn histories(old: &TableSpec, statements: &[Statement]) -> Vec<History> {
    let mut live = vec![History {
        table: old.name.clone(),
        columns: old.columns.iter().map(|c| Some(c.name.clone())).collect(),
    }];
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    for statement in statements {
        match statement {
            Statement::RenameColumn { table, from, to } => {
                for h in live.iter_mut().filter(|h| same(&h.table, table)) {
                    for c in h.columns.iter_mut().flatten().filter(|c| same(c, from)) {
                        *c = to.clone();
                    }
                }
            }
            Statement::RenameTable { from, to } => {
                for h in live.iter_mut().filter(|h| same(&h.table, from)) {
                    h.table = to.clone();
                }
            }
            Statement::DropTable { table } => live.retain(|h| !same(&h.table, table)),
            Statement::Copy {
                target,
                source,
                columns,
            } => {
                let forks: Vec<History> = live
                    .iter()
                    .filter(|h| same(&h.table, source))
                    .map(|h| copied(h, target, columns))
                    .collect();
                live.extend(forks);
            }
        }
    }
    live
}

/// `history` after a copy of its table into `target`.
fn copied(history: &History, target: &str, columns: &[(String, Option<String>)]) -> History {
    let moved = |name: &String| {
        columns
            .iter()
            .find(|(_, from)| {
                from.as_deref()
                    .is_some_and(|f| f.eq_ignore_ascii_case(name))
            })
            .map(|(to, _)| to.clone())
    };
    History {
        table: target.to_string(),
        columns: history
            .columns
            .iter()
            .map(|c| c.as_ref().and_then(moved))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::sqltext::statement;
    use sdsync_core::schema::{Affinity, Class, ColumnSpec};

    fn tags() -> TableSpec {
        let col = |n: &str| ColumnSpec {
            name: n.into(),
            affinity: Affinity::Text,
            required: false,
            reference: None,
        };
        TableSpec {
            id: 1,
            name: "tags".into(),
            class: Class::Shared,
            uuid_column: "uuid".into(),
            local_id: "id".into(),
            columns: vec![col("description"), col("name"), col("color")],
            options: Default::default(),
            aliases: vec![],
            column_aliases: vec![],
        }
    }

    fn renames_after(sql: &[&str], names: &[&str]) -> Vec<(String, String)> {
        let statements = sql.iter().filter_map(|s| statement(s)).collect();
        during(statements, || renames(&tags(), "tags", names)).0
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn only_a_synced_column_moved_to_a_new_name_is_a_rename() {
        let found = renames_after(
            &[
                "INSERT INTO tmp (id, summary, name, label, hue, icon) \
                 SELECT id, description, name, name, color, 'x' FROM Tags",
                "DROP TABLE tags",
                "ALTER TABLE tmp RENAME TO tags",
            ],
            &["id", "uuid", "summary", "name", "label", "hue", "icon"],
        );
        // `label` copies `name`, which the table still has: not a rename.
        assert_eq!(
            found,
            pairs(&[("description", "summary"), ("color", "hue")])
        );
        assert!(renames_after(&[], &["id", "summary"]).is_empty());
    }

    #[test]
    fn the_rebuilds_history_is_told_from_an_archive_copy() {
        let names = ["id", "uuid", "summary", "name", "color"];
        let rebuild = [
            "INSERT INTO tmp (id, uuid, summary, name, color) SELECT id, uuid, description, name, color FROM tags",
            "INSERT INTO hist (id, uuid, note) SELECT id, uuid, name FROM tags",
            "DROP TABLE tags",
            "ALTER TABLE tmp RENAME TO tags",
        ];
        assert_eq!(
            renames_after(&rebuild, &names),
            pairs(&[("description", "summary")])
        );
        // An archive copy alone (no rebuild): nothing ends as `tags` but the
        // table itself, whose columns did not move.
        assert!(renames_after(&rebuild[1..2], &names).is_empty());
    }

    #[test]
    fn a_rename_column_then_a_rebuild_and_chains_of_rebuilds_are_followed() {
        let names = ["id", "uuid", "summary", "label", "color"];
        let found = renames_after(
            &[
                "ALTER TABLE tags RENAME COLUMN description TO summary",
                "INSERT INTO t1 (id, uuid, summary, name, color) SELECT id, uuid, summary, name, color FROM tags",
                "DROP TABLE tags",
                "ALTER TABLE t1 RENAME TO tags",
                "INSERT INTO t2 (id, uuid, summary, label, color) SELECT id, uuid, summary, name, color FROM tags",
                "DROP TABLE tags",
                "ALTER TABLE t2 RENAME TO tags",
            ],
            &names,
        );
        assert_eq!(
            found,
            pairs(&[("description", "summary"), ("name", "label")])
        );
    }
}
