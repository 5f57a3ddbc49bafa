//! `sdsync_track` / `sdsync_untrack` / `sdsync_reidentify`: installing and removing capture.
//!
//! ```sql
//! SELECT sdsync_track('locations', 'owned');
//! SELECT sdsync_track('entries', 'owned', '{"refs":{"location_id":"locations"}}');
//! SELECT sdsync_untrack('entries');
//! ```
//!
//! Tracking validates the table (see `sdsync_core::schema`), stores its spec, installs
//! the triggers and records a version for every row already in the table, so rows
//! written before tracking sync like any other. All of it happens in one savepoint:
//! a failed track leaves nothing behind.

use sdsync_core::ids::device_uuid;
use sdsync_core::schema::{
    Class, Options, RawColumn, RawForeignKey, RawTable, SchemaError, TableSpec, quote_ident,
};
use sdsync_core::triggers::{INSTALLED_TRIGGERS, children, create_statements, drop_statement};

use crate::catalog::{Catalog, CatalogError};
use crate::ffi::{Db, SqlError, Value};
use crate::{migrate, store};

/// Why tracking, untracking or re-identifying failed.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    /// The table cannot be synced as it is.
    #[error("sdsync_track: {0}")]
    Schema(#[from] SchemaError),
    /// SQLite failed.
    #[error("sdsync_track: {0}")]
    Sql(#[from] SqlError),
    /// The catalog could not be read.
    #[error("sdsync_track: {0}")]
    Catalog(#[from] CatalogError),
    /// Re-tracking with another class.
    #[error(
        "sdsync_track: table {table} is tracked as {was}; untrack it before tracking it as {now}"
    )]
    ClassChanged {
        /// Table.
        table: String,
        /// Earlier class.
        was: &'static str,
        /// Requested class.
        now: &'static str,
    },
    /// Untracking a table other tracked tables reference.
    #[error(
        "sdsync_untrack: table {table} is referenced by tracked table {child}; untrack {child} first"
    )]
    Referenced {
        /// Table.
        table: String,
        /// Referencing table.
        child: String,
    },
    /// Untracking a table that is not tracked.
    #[error("sdsync_untrack: table {0} is not tracked")]
    NotTracked(String),
}

impl crate::ffi::ResultCode for TrackError {
    fn result_code(&self) -> std::ffi::c_int {
        match self {
            Self::Sql(e) | Self::Catalog(CatalogError::Sql(e)) => e.result_code(),
            _ => crate::ffi::SQLITE_ERROR,
        }
    }
}

/// Tracks `table` as `class`, returning a one-line summary. A table tracked
/// before is re-tracked in place: its versions follow the columns by name
/// (`migrate::relayout`), and without `options` the stored ones are kept.
pub fn track(
    db: Db,
    table: &str,
    class: &str,
    options: Option<&str>,
    wall_ms: u64,
) -> Result<String, TrackError> {
    let class = Class::parse(class)?;
    let options = options.map(|o| Options::parse(Some(o))).transpose()?;
    in_savepoint(db, || {
        // A table tracked again may change its columns' mask bits.
        crate::fold::fold(db)?;
        track_parsed(db, table, class, options, wall_ms)
    })
}

/// [`track`] with parsed arguments, inside the caller's savepoint.
pub(crate) fn track_parsed(
    db: Db,
    table: &str,
    class: Class,
    options: Option<Options>,
    wall_ms: u64,
) -> Result<String, TrackError> {
    store::ensure(db)?;
    let catalog = Catalog::load(db)?;
    let table = canonical_name(db, table)?;
    let existing = catalog.exact(&table).cloned();
    let id = match &existing {
        Some(spec) => spec.id,
        None => db
            .query_i64("SELECT coalesce(max(id), 0) + 1 FROM sdsync_tables", &[])?
            .unwrap_or(1),
    };
    let raw = read_raw(db, &table)?;
    // Columns renamed since it was tracked, read before anything keyed by
    // column name is carried over.
    let renames = match &existing {
        Some(old) => {
            let names: Vec<&str> = raw.columns.iter().map(|c| c.name.as_str()).collect();
            migrate::renames::read(db, old, &table, &names)?
        }
        None => Vec::new(),
    };
    let options = match (options, &existing) {
        (Some(o), _) => o,
        (None, Some(old)) => migrate::renames::options(old, &renames)
            .surviving_options(|c| column_exists(db, &table, c)),
        (None, None) => Options::default(),
    };
    let lookup = |name: &str| {
        catalog
            .by_name(name)
            .map(|s| (s.uuid_column.clone(), Some(s.local_id.clone())))
    };
    let mut spec = TableSpec::validate(raw, class, &options, id, &lookup)?;
    let origin = store::local_origin(db)?.unwrap_or(0);
    // The old spec under the current names.
    let existing = existing.map(|old| migrate::renames::follow(&old, &renames, &mut spec));
    if let Some(old) = &existing {
        check_class(old, &spec)?;
        spec.aliases = old.aliases.clone();
        migrate::relayout(db, old, &spec)?;
        migrate::prune_vanished(db, &spec)?;
    }
    let text = serde_json::to_string(&spec).unwrap_or_default();
    db.prepare("INSERT INTO sdsync_tables(id, name, spec) VALUES (?1, ?2, ?3) ON CONFLICT(id) DO UPDATE SET name = excluded.name, spec = excluded.spec")?
        .run(&[Value::Integer(id), Value::Text(spec.name.clone()), Value::Text(text)])?;
    install_triggers(db, &spec, origin)?;
    reinstall_parents(db, &spec, origin)?;
    let backfilled = backfill(db, &spec, origin, wall_ms)?;
    let added = match &existing {
        Some(old) => migrate::capture_added(db, old, &spec, origin, wall_ms)?,
        None => 0,
    };
    let warnings: String = self_updating_triggers(db, &spec.name)?
        .iter()
        .map(|t| {
            format!(
                "; warning: app trigger {t} writes {} again and has no WHEN clause: sdsync turns \
                 recursive_triggers on (to capture REPLACE), so it fires itself again, and unless \
                 its WHERE runs out of rows the write fails at SQLite's trigger depth limit; \
                 guard it, e.g. WHEN NEW.updated_at IS OLD.updated_at",
                spec.name
            )
        })
        .collect();
    let added = if added > 0 {
        format!(", {added} rows with values in new columns recorded")
    } else {
        String::new()
    };
    Ok(format!(
        "tracked {} as {}: {} synced columns, {} references, {} existing rows recorded{added}{warnings}",
        spec.name,
        spec.class.as_str(),
        spec.columns.len(),
        spec.columns
            .iter()
            .filter(|c| c.reference.is_some())
            .count(),
        backfilled
    ))
}

/// Whether `table` has a column `column`.
fn column_exists(db: Db, table: &str, column: &str) -> bool {
    db.query_i64(
        "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
        &[
            Value::Text(table.to_string()),
            Value::Text(column.to_string()),
        ],
    )
    .ok()
    .flatten()
    .unwrap_or(0)
        > 0
}

/// Whether a trigger's SQL (on `table`, lowercase) fires itself again: its body
/// does to `table` what the trigger reacts to (an UPDATE trigger updating the
/// table, touching a column of its `UPDATE OF` list if it has one; an INSERT
/// trigger inserting; a DELETE trigger deleting), and no WHEN clause stops it.
/// A heuristic over the words of the SQL: it can miss exotic forms.
fn recurses(sql: &str, table: &str) -> bool {
    let words: Vec<String> = sql
        .to_lowercase()
        .split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ';' | ','))
        .filter(|w| !w.is_empty())
        .map(|w| {
            let w = w.trim_matches(|c| matches!(c, '"' | '`' | '[' | ']'));
            // `main.t` names `t`.
            w.rsplit('.').next().unwrap_or(w).to_string()
        })
        .collect();
    let begin = words
        .iter()
        .position(|w| w == "begin")
        .unwrap_or(words.len());
    let (head, body) = words.split_at(begin);
    let on = head.iter().position(|w| w == "on").unwrap_or(head.len());
    if head[on..].iter().any(|w| w == "when") {
        return false;
    }
    let event = head[..on]
        .iter()
        .find(|w| matches!(w.as_str(), "insert" | "update" | "delete"))
        .map(String::as_str);
    let of: Vec<&String> = head[..on]
        .iter()
        .skip_while(|w| *w != "of")
        .skip(1)
        .collect();
    (0..body.len()).any(|i| {
        // `UPDATE [OR clause] t SET …`, `INSERT [OR clause] INTO t`, `DELETE FROM t`.
        let skip = if body.get(i + 1).is_some_and(|w| w == "or") {
            3
        } else {
            1
        };
        match (event, body[i].as_str()) {
            (Some("update"), "update") if body.get(i + skip).map(String::as_str) == Some(table) => {
                of.is_empty()
                    || body[i + skip..]
                        .iter()
                        .take_while(|w| *w != "where" && *w != "end")
                        .any(|w| of.contains(&w))
            }
            (Some("insert"), "into") | (Some("delete"), "from") => {
                body.get(i + 1).map(String::as_str) == Some(table)
            }
            _ => false,
        }
    })
}

/// The app's triggers on `table` that write `table` again and have no WHEN
/// clause. Harmless with SQLite's default, they recurse once sdsync turns
/// `recursive_triggers` on; `sdsync_track` warns about them.
fn self_updating_triggers(db: Db, table: &str) -> Result<Vec<String>, SqlError> {
    let list = db.query_text(
        "SELECT json_group_array(json_array(name, sql)) FROM sqlite_schema \
         WHERE type = 'trigger' AND tbl_name = ?1 AND name NOT LIKE 'sdsync\\_%' ESCAPE '\\'",
        &[Value::Text(table.to_string())],
    )?;
    let rows: Vec<(String, String)> = list
        .and_then(|l| serde_json::from_str(&l).ok())
        .unwrap_or_default();
    let table = table.to_lowercase();
    Ok(rows
        .into_iter()
        .filter(|(_, sql)| recurses(sql, &table))
        .map(|(name, _)| name)
        .collect())
}

/// Removes capture from `table` and forgets its versions and parked changes.
pub fn untrack(db: Db, table: &str) -> Result<String, TrackError> {
    in_savepoint(db, || {
        crate::fold::fold(db)?;
        let catalog = Catalog::load(db)?;
        let spec = catalog
            .by_name(table)
            .cloned()
            .ok_or_else(|| TrackError::NotTracked(table.to_string()))?;
        if let Some(child) = catalog
            .ordered
            .iter()
            .find(|s| s.name != spec.name && s.parents().any(|p| p == spec.name))
        {
            return Err(TrackError::Referenced {
                table: table.to_string(),
                child: child.name.clone(),
            });
        }
        drop_triggers(db, &spec.name)?;
        forget(db, spec.id)?;
        let origin = store::local_origin(db)?.unwrap_or(0);
        reinstall_parents(db, &spec, origin)?;
        Ok(format!("untracked {table}"))
    })
}

/// Forgets everything keyed by a table's id: a table tracked later may reuse
/// the id and must not inherit its tombstones or parked changes.
pub(crate) fn forget(db: Db, table_id: i64) -> Result<(), SqlError> {
    let id = [Value::Integer(table_id)];
    for sql in [
        "DELETE FROM sdsync_versions WHERE tbl = ?1",
        "DELETE FROM sdsync_tombstones WHERE tbl = ?1",
        "DELETE FROM sdsync_parked WHERE tbl = ?1",
        "DELETE FROM sdsync_tables WHERE id = ?1",
    ] {
        db.prepare(sql)?.run(&id)?;
    }
    Ok(())
}

/// The `format` in `sdsync_meta` from which triggers are the current ones. Format
/// 1 triggers used `INSERT OR REPLACE`, which the writing statement's conflict
/// clause overrode, and names that could collide between tables; format 2 (never
/// released) checked `REPLACE` per row, formats 3 and 4 summed row sizes in SQL;
/// format 6 added `sdsync_kept` and the schema guard (`store::FORMAT_6`), format
/// 7 the record of issued numbers (`store::FORMAT_7`); format 8 triggers read
/// the clock bump's numbers from `sdsync_bumped` instead of the clock row;
/// format 9 update triggers fire on an `OR` of the columns' changes instead
/// of a bit mask in their `WHEN`; format 10 update triggers append to
/// `sdsync_log` (`fold::FORMAT_10`) instead of writing the clock row and
/// the version.
pub const TRIGGER_FORMAT: i64 = 10;

/// Re-installs the capture triggers of a library written by an older sdsync, at
/// load. Best effort: a read-only or busy database keeps its triggers and is
/// upgraded by a later load (the old triggers still capture every plain write).
pub fn upgrade(db: Db) -> Result<(), TrackError> {
    if !store::exists(db)? {
        return Ok(());
    }
    let format = db
        .query_i64("SELECT value FROM sdsync_meta WHERE key = 'format'", &[])?
        .unwrap_or(1);
    if format >= TRIGGER_FORMAT {
        return Ok(());
    }
    in_savepoint(db, || {
        db.exec(store::FORMAT_6)?;
        db.exec(store::FORMAT_7)?;
        db.exec(crate::fold::FORMAT_10)?;
        let origin = store::local_origin(db)?.unwrap_or(0);
        for spec in Catalog::load(db)?.ordered {
            install_triggers(db, &spec, origin)?;
        }
        db.prepare("UPDATE sdsync_meta SET value = ?1 WHERE key = 'format'")?
            .run(&[Value::Integer(TRIGGER_FORMAT)])?;
        Ok(())
    })
}

/// Gives a copied database file its own device identity and re-installs the
/// triggers, which name the local origin.
pub fn reidentify(db: Db, given: Option<String>) -> Result<String, TrackError> {
    in_savepoint(db, || {
        store::ensure(db)?;
        let uuid = given.unwrap_or_else(device_uuid);
        let origin = store::assign_identity(db, &uuid)?;
        for spec in Catalog::load(db)?.ordered {
            install_triggers(db, &spec, origin)?;
        }
        Ok(uuid)
    })
}

/// Runs `f` inside a savepoint, rolled back if it fails.
pub(crate) fn in_savepoint<T>(
    db: Db,
    f: impl FnOnce() -> Result<T, TrackError>,
) -> Result<T, TrackError> {
    migrate::watch::own(|| savepoint(db, f))
}

fn savepoint<T>(db: Db, f: impl FnOnce() -> Result<T, TrackError>) -> Result<T, TrackError> {
    db.exec("SAVEPOINT sdsync_track")?;
    match f() {
        Ok(v) => {
            db.exec("RELEASE sdsync_track")?;
            Ok(v)
        }
        Err(e) => {
            // Rolling back can only fail if the connection is gone; the first error matters.
            let _ = db.exec("ROLLBACK TO sdsync_track; RELEASE sdsync_track");
            Err(e)
        }
    }
}

/// Installs a table's triggers; its delete trigger checks the tracked tables
/// that reference it (see `triggers::Child`).
pub(crate) fn install_triggers(db: Db, spec: &TableSpec, origin: i64) -> Result<(), TrackError> {
    drop_triggers(db, &spec.name)?;
    let catalog = Catalog::load(db)?;
    let children = children(&spec.name, catalog.ordered.iter().map(|s| s.as_ref()));
    for sql in create_statements(spec, origin, &children) {
        db.exec(&sql)?;
    }
    Ok(())
}

/// Re-installs the triggers of the tables `spec` references: which tables
/// reference a table is part of its delete trigger.
pub(crate) fn reinstall_parents(db: Db, spec: &TableSpec, origin: i64) -> Result<(), TrackError> {
    let catalog = Catalog::load(db)?;
    for parent in spec.parents().filter(|p| *p != spec.name) {
        if let Some(parent) = catalog.by_name(parent) {
            install_triggers(db, parent, origin)?;
        }
    }
    Ok(())
}

/// Drops every sdsync trigger on `table`, found by the table they are on (not by
/// name: older versions named them differently).
pub(crate) fn drop_triggers(db: Db, table: &str) -> Result<(), SqlError> {
    let mut names = Vec::new();
    let mut stmt = db.prepare(INSTALLED_TRIGGERS)?;
    stmt.bind_all(&[Value::Text(table.to_string())])?;
    while stmt.step()? {
        names.push(stmt.text(0).unwrap_or_default());
    }
    drop(stmt);
    for name in names {
        db.exec(&drop_statement(&name))?;
    }
    Ok(())
}

fn check_class(old: &TableSpec, new: &TableSpec) -> Result<(), TrackError> {
    if old.class == new.class {
        return Ok(());
    }
    Err(TrackError::ClassChanged {
        table: new.name.clone(),
        was: old.class.as_str(),
        now: new.class.as_str(),
    })
}

/// Records a local version for every row that has none (rows written before tracking).
fn backfill(db: Db, spec: &TableSpec, origin: i64, wall_ms: u64) -> Result<i64, SqlError> {
    let rows = format!(
        "SELECT t.{rid} AS rid, {mask} AS mask FROM {t} t \
         WHERE NOT EXISTS (SELECT 1 FROM sdsync_versions v WHERE v.tbl = {id} AND v.rid = t.{rid})",
        rid = quote_ident(&spec.local_id),
        mask = spec.all_mask(),
        t = quote_ident(&spec.name),
        id = spec.id,
    );
    migrate::stamp(db, spec.id, origin, &rows, wall_ms)
}

/// The table's name as declared (SQLite resolves names case-insensitively).
pub(crate) fn canonical_name(db: Db, table: &str) -> Result<String, SqlError> {
    Ok(db
        .query_text(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
            &[Value::Text(table.to_string())],
        )?
        .unwrap_or_else(|| table.to_string()))
}

/// Reads what SQLite knows about a table into a [`RawTable`].
pub(crate) fn read_raw(db: Db, table: &str) -> Result<RawTable, SqlError> {
    let name = Value::Text(table.to_string());
    let mut columns = Vec::new();
    let mut stmt = db.prepare(
        "SELECT name, type, \"notnull\", dflt_value IS NOT NULL, pk FROM pragma_table_info(?1)",
    )?;
    stmt.bind_all(std::slice::from_ref(&name))?;
    while stmt.step()? {
        columns.push(RawColumn {
            name: stmt.text(0).unwrap_or_default(),
            decl_type: stmt.text(1).unwrap_or_default(),
            not_null: stmt.int(2) != 0,
            has_default: stmt.int(3) != 0,
            pk: stmt.int(4),
        });
    }
    let pk_cols: Vec<&RawColumn> = columns.iter().filter(|c| c.pk > 0).collect();
    let integer_primary_key = match pk_cols.as_slice() {
        [c] if c.decl_type.eq_ignore_ascii_case("INTEGER") => Some(c.name.clone()),
        _ => None,
    };
    let mut unique: Vec<String> = Vec::new();
    if let [c] = pk_cols.as_slice() {
        unique.push(c.name.clone());
    }
    let mut stmt = db.prepare(
        "SELECT (SELECT group_concat(ii.name, ',') FROM pragma_index_info(il.name) ii), \
                (SELECT count(*) FROM pragma_index_info(il.name)) \
         FROM pragma_index_list(?1) il WHERE il.\"unique\" = 1 AND il.partial = 0",
    )?;
    stmt.bind_all(std::slice::from_ref(&name))?;
    while stmt.step()? {
        if stmt.int(1) == 1 {
            unique.push(stmt.text(0).unwrap_or_default());
        }
    }
    let mut foreign_keys = Vec::new();
    let mut stmt =
        db.prepare("SELECT id, \"from\", \"table\", \"to\" FROM pragma_foreign_key_list(?1)")?;
    stmt.bind_all(&[name])?;
    while stmt.step()? {
        foreign_keys.push(RawForeignKey {
            id: stmt.int(0),
            from: stmt.text(1).unwrap_or_default(),
            table: stmt.text(2).unwrap_or_default(),
            to: stmt.text(3),
        });
    }
    Ok(RawTable {
        name: table.to_string(),
        columns,
        unique,
        foreign_keys,
        integer_primary_key,
    })
}

#[cfg(test)]
mod tests {
    use super::recurses;

    #[test]
    fn triggers_that_fire_themselves_are_told_apart() {
        let cases = [
            (
                "CREATE TRIGGER a AFTER UPDATE ON notes BEGIN UPDATE notes SET updated_at = 1 WHERE id = NEW.id; END",
                true,
            ),
            (
                "CREATE TRIGGER a AFTER UPDATE ON \"notes\" BEGIN UPDATE OR IGNORE main.notes SET x = 1; END",
                true,
            ),
            (
                "CREATE TRIGGER a AFTER UPDATE ON notes WHEN NEW.x IS OLD.x BEGIN UPDATE notes SET x = 1; END",
                false,
            ),
            (
                "CREATE TRIGGER a AFTER UPDATE OF body ON notes BEGIN UPDATE notes SET updated_at = 1; END",
                false,
            ),
            (
                "CREATE TRIGGER a AFTER UPDATE OF body ON notes BEGIN UPDATE notes SET body = trim(body); END",
                true,
            ),
            (
                "CREATE TRIGGER a AFTER INSERT ON notes BEGIN UPDATE notes SET x = 1 WHERE id = NEW.id; END",
                false,
            ),
            (
                "CREATE TRIGGER a AFTER INSERT ON notes BEGIN INSERT INTO notes(uuid) VALUES (1); END",
                true,
            ),
            (
                "CREATE TRIGGER a AFTER DELETE ON notes BEGIN DELETE FROM notes WHERE p = OLD.id; END",
                true,
            ),
            (
                "CREATE TRIGGER a AFTER UPDATE ON notes BEGIN UPDATE other SET x = 1; END",
                false,
            ),
        ];
        for (sql, expected) in cases {
            assert_eq!(recurses(sql, "notes"), expected, "{sql}");
        }
    }
}
