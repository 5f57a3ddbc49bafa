//! Columns renamed with `ALTER TABLE … RENAME COLUMN`: a rename is not a
//! column dropped and another added. The renamed column keeps its versions
//! (re-tracking stamps none of its values as new changes, which would beat
//! what peers wrote to it meanwhile), and its former name stays an alias, so
//! values from devices that have not renamed yet apply to it.
//!
//! ```sql
//! ALTER TABLE tags RENAME COLUMN icon TO glyph;
//! -- re-tracked: glyph keeps icon's mask bit and versions; a peer's
//! -- {"icon": …} applies to glyph.
//! ```
//!
//! How a rename is told from a drop and an add: SQLite rewrites the names in
//! every trigger, the capture triggers included, and the update trigger's
//! `WHEN` compares each synced column in the order of their bits,
//! `OLD."icon" IS NOT NEW."icon" OR OLD."glyph" IS NOT NEW."glyph"`: the
//! column at that place of the stored spec had another name. A rebuild drops the triggers; the columns
//! it renames are read from its copy step instead (`super::copies`).

use sdsync_core::schema::{Options, TableSpec, quote_ident};
use sdsync_core::triggers::trigger_names;

use crate::ffi::{Db, SqlError, Value};

/// `(former, current)` for each synced column of `old` that table `table`
/// (its columns now `names`) holds under another name: its place in the
/// update trigger's comparisons (its bit) is now another column's. The trigger still
/// has the name it was installed under, which is the table's former name
/// when the table was renamed in the same step.
pub fn read(
    db: Db,
    old: &TableSpec,
    table: &str,
    names: &[&str],
) -> Result<Vec<(String, String)>, SqlError> {
    let mut sql = None;
    for former in std::iter::once(&old.name).chain(old.aliases.iter().rev()) {
        sql = db.query_text(
            "SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND name = ?1 AND tbl_name = ?2",
            &[
                Value::Text(trigger_names(former)[1].clone()),
                Value::Text(table.to_string()),
            ],
        )?;
        if sql.is_some() {
            break;
        }
    }
    // A rebuild dropped the triggers: its copy step may tell.
    let Some(sql) = sql else {
        return Ok(super::copies::renames(old, table, names));
    };
    let terms = terms(&sql, names);
    // A trigger installed for `old` has one term per column of it; anything
    // else is not read as renames (a drop and an add, as before).
    if terms.len() != old.columns.len() {
        return Ok(Vec::new());
    }
    Ok(old
        .columns
        .iter()
        .zip(terms)
        .filter(|(column, now)| column.name != *now)
        .map(|(column, now)| (column.name.clone(), now.to_string()))
        .collect())
}

/// The columns the update trigger compares, `OLD.c IS NOT NEW.c`, in the
/// order its `WHEN` names them, which is their mask bits' order: the `OR`
/// of trigger format 9 as much as the bit mask `((OLD.c IS NOT NEW.c) <<
/// bit) | …` of the formats before (a shared table's body repeats them as
/// that mask, after the `WHEN`; the first time each is named counts).
/// `names` are the table's columns now; SQLite has rewritten a renamed
/// column's name in the trigger.
fn terms<'a>(sql: &str, names: &[&'a str]) -> Vec<&'a str> {
    let mut found: Vec<(usize, &str)> = names
        .iter()
        .filter_map(|name| {
            let q = quote_ident(name);
            sql.find(&format!("OLD.{q} IS NOT NEW.{q}"))
                .map(|at| (at, *name))
        })
        .collect();
    found.sort_unstable();
    found.into_iter().map(|(_, name)| name).collect()
}

/// The options of `old` under the current column names (`refs` keyed by a
/// renamed column keep their reference).
pub fn options(old: &TableSpec, renames: &[(String, String)]) -> TableSpec {
    let mut renamed = old.clone();
    let current = |name: &str| {
        renames
            .iter()
            .find(|(from, _)| from == name)
            .map_or(name.to_string(), |(_, to)| to.clone())
    };
    renamed.options = Options {
        refs: old
            .options
            .refs
            .iter()
            .map(|(column, table)| (current(column), table.clone()))
            .collect(),
        ..old.options.clone()
    };
    renamed
}

/// `old` with its columns under their current names, and the column aliases
/// `new` takes on: those `old` had, followed to the current names, and one
/// for each rename.
pub fn follow(old: &TableSpec, renames: &[(String, String)], new: &mut TableSpec) -> TableSpec {
    let mut renamed = old.clone();
    for column in &mut renamed.columns {
        if let Some((_, to)) = renames.iter().find(|(from, _)| *from == column.name) {
            column.name = to.clone();
        }
    }
    let mut aliases: Vec<(String, String)> = old
        .column_aliases
        .iter()
        .map(|(former, current)| {
            let now = renames
                .iter()
                .find(|(from, _)| from == current)
                .map_or(current, |(_, to)| to);
            (former.clone(), now.clone())
        })
        .chain(renames.iter().cloned())
        // A former name that is a column again is that column.
        .filter(|(former, _)| !new.columns.iter().any(|c| c.name == *former))
        .collect();
    aliases.sort();
    aliases.dedup();
    new.column_aliases = aliases;
    renamed
}
