//! The tracked tables of a database, read from `sdsync_tables`.
//!
//! ```ignore
//! let catalog = Catalog::load(db)?;
//! let entries = catalog.by_name("entries").expect("tracked");
//! ```
//!
//! The specs are cached per connection and reloaded when `PRAGMA schema_version`
//! moves, so a table tracked by another process is seen without reconnecting.

use std::collections::HashMap;
use std::rc::Rc;

use sdsync_core::schema::TableSpec;

use crate::ffi::{Db, SqlError, Value};
use crate::store;

/// Tracked tables by id and by name, in dependency order (parents first).
#[derive(Default)]
pub struct Catalog {
    by_id: HashMap<i64, Rc<TableSpec>>,
    by_name: HashMap<String, Rc<TableSpec>>,
    /// Tables in dependency order: every table after the tables it references.
    pub ordered: Vec<Rc<TableSpec>>,
    /// Tracked tables that do not exist (dropped, or renamed by a connection
    /// whose repair has not run): changes for them are kept, not applied.
    missing: Vec<String>,
    /// Per table id, per synced column: the value a row gets when a creating
    /// change does not carry the column (see `Change::default_the_rest`).
    defaults: HashMap<i64, Vec<Option<Value>>>,
}

/// Why the catalog could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// SQLite failed.
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// A stored spec does not parse (the file was edited by hand or by a newer version).
    #[error(
        "sdsync_tables row for '{table}' is unreadable: {reason}; re-run sdsync_track('{table}', …)"
    )]
    Corrupt {
        /// Table.
        table: String,
        /// Parse error.
        reason: String,
    },
}

impl Catalog {
    /// Reads every tracked table.
    pub fn load(db: Db) -> Result<Self, CatalogError> {
        let mut catalog = Catalog::default();
        if !store::exists(db)? {
            return Ok(catalog);
        }
        let mut stmt = db.prepare("SELECT name, spec FROM sdsync_tables ORDER BY id")?;
        let mut specs = Vec::new();
        while stmt.step()? {
            let name = stmt.text(0).unwrap_or_default();
            let text = stmt.text(1).unwrap_or_default();
            let spec: TableSpec =
                serde_json::from_str(&text).map_err(|e| CatalogError::Corrupt {
                    table: name,
                    reason: e.to_string(),
                })?;
            specs.push(Rc::new(spec));
        }
        for spec in &specs {
            catalog.by_id.insert(spec.id, spec.clone());
            catalog.by_name.insert(spec.name.clone(), spec.clone());
        }
        // Former names resolve too (changes from devices that have not renamed
        // the table yet), unless a tracked table has that name now.
        for spec in &specs {
            for alias in &spec.aliases {
                catalog
                    .by_name
                    .entry(alias.clone())
                    .or_insert_with(|| spec.clone());
            }
        }
        catalog.ordered = dependency_order(&specs);
        let mut stmt = db.prepare(
            "SELECT name FROM sdsync_tables WHERE name NOT IN (SELECT name FROM sqlite_schema WHERE type = 'table')",
        )?;
        while stmt.step()? {
            catalog.missing.push(stmt.text(0).unwrap_or_default());
        }
        Ok(catalog)
    }

    /// [`Catalog::load`], with the column defaults applying a change needs
    /// (see `Change::default_the_rest`); readers do without them.
    pub fn load_for_apply(db: Db) -> Result<Self, CatalogError> {
        let mut catalog = Self::load(db)?;
        for spec in catalog.ordered.clone() {
            let defaults = column_defaults(db, &spec)?;
            catalog.defaults.insert(spec.id, defaults);
        }
        Ok(catalog)
    }

    /// A tracked table by id.
    pub fn by_id(&self, id: i64) -> Option<&Rc<TableSpec>> {
        self.by_id.get(&id)
    }

    /// The defaults of a table's synced columns (empty for an unknown id).
    pub fn defaults(&self, id: i64) -> &[Option<Value>] {
        self.defaults.get(&id).map_or(&[], Vec::as_slice)
    }

    /// A tracked table that exists, by name or by a former name.
    pub fn present(&self, name: &str) -> Option<&Rc<TableSpec>> {
        self.by_name(name)
            .filter(|s| !self.missing.iter().any(|m| *m == s.name))
    }

    /// A tracked table by its current name only.
    pub fn exact(&self, name: &str) -> Option<&Rc<TableSpec>> {
        self.by_id.values().find(|s| s.name == name)
    }

    /// A tracked table by name, or by a former name.
    pub fn by_name(&self, name: &str) -> Option<&Rc<TableSpec>> {
        self.by_name.get(name)
    }
}

/// What a synced column holds when a creating change does not say: its
/// declared default when that is a constant (a literal, as `ALTER TABLE … ADD
/// COLUMN` requires; the same on every device), NULL when it has none and may
/// be NULL, and nothing (`None`) for a required column or a computed default.
pub(crate) fn column_defaults(db: Db, spec: &TableSpec) -> Result<Vec<Option<Value>>, SqlError> {
    let mut declared_by_name = HashMap::new();
    let mut stmt = db.prepare("SELECT name, dflt_value FROM pragma_table_info(?1)")?;
    stmt.bind_all(&[Value::Text(spec.name.clone())])?;
    while stmt.step()? {
        declared_by_name.insert(stmt.text(0).unwrap_or_default(), stmt.text(1));
    }
    drop(stmt);
    let mut out = Vec::with_capacity(spec.columns.len());
    for c in &spec.columns {
        let declared = declared_by_name.get(&c.name).cloned().flatten();
        out.push(match declared {
            None if c.required => None,
            None => Some(Value::Null),
            Some(expr) if is_literal(&expr) => {
                let mut stmt = db.prepare(&format!("SELECT {expr}"))?;
                if stmt.step()? {
                    Some(stmt.value(0))
                } else {
                    None
                }
            }
            // `DEFAULT active` and `DEFAULT "active"`: SQLite takes the word as text.
            Some(expr) if is_word(&expr) => Some(Value::Text(expr.trim_matches('"').to_string())),
            Some(_) => None,
        });
    }
    Ok(out)
}

/// Whether a default expression is a literal (no function, no column).
fn is_literal(expr: &str) -> bool {
    let e = expr.trim().trim_start_matches(['-', '+']);
    let upper = e.to_ascii_uppercase();
    e.starts_with('\'')
        || upper.starts_with("X'")
        || e.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        || ["NULL", "TRUE", "FALSE"].contains(&upper.as_str())
}

/// Whether a default is a bare or double-quoted word, which SQLite stores as
/// text (`CURRENT_TIME`, `CURRENT_DATE` and `CURRENT_TIMESTAMP` are not).
fn is_word(expr: &str) -> bool {
    let word = expr.trim().trim_matches('"');
    !word.is_empty()
        && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !word.to_ascii_uppercase().starts_with("CURRENT_")
}

/// Orders tables parents-first (Kahn's algorithm); cycles keep their track order.
fn dependency_order(specs: &[Rc<TableSpec>]) -> Vec<Rc<TableSpec>> {
    let mut done: Vec<Rc<TableSpec>> = Vec::new();
    let mut left: Vec<Rc<TableSpec>> = specs.to_vec();
    while !left.is_empty() {
        let ready = left.iter().position(|s| {
            s.parents()
                .all(|p| done.iter().any(|d| d.name == p) || !left.iter().any(|l| l.name == p))
        });
        let next = left.remove(ready.unwrap_or(0));
        done.push(next);
    }
    done
}
