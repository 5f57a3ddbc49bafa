//! What a tracked table looks like to sdsync, validated once at `sdsync_track`.
//!
//! ```
//! use sdsync_core::schema::{Class, RawColumn, RawTable, TableSpec, Options};
//! let raw = RawTable {
//!     name: "tags".into(),
//!     columns: vec![
//!         RawColumn::new("id", "INTEGER", false, false, 1),
//!         RawColumn::new("uuid", "TEXT", true, false, 0),
//!         RawColumn::new("canonical_name", "TEXT", false, false, 0),
//!     ],
//!     unique: vec!["uuid".into()],
//!     foreign_keys: vec![],
//!     integer_primary_key: Some("id".into()),
//! };
//! let spec = TableSpec::validate(raw, Class::Shared, &Options::default(), 1, &|_| None).unwrap();
//! assert_eq!(spec.columns.len(), 1); // the local id and the uuid never travel as columns
//! ```
//!
//! Parse, don't validate: the extension reads `PRAGMA table_info` and friends into a
//! [`RawTable`], and everything after `sdsync_track` works on a [`TableSpec`], which
//! can only exist if the table is syncable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The bit of a version mask that stands for the row's existence (its creation).
/// Column `i` of [`TableSpec::columns`] is bit `i + 1`.
pub const ROW_BIT: u64 = 1;

/// Most synced columns a table may have: bit 0 is the row, bit 63 is kept clear so
/// masks stay positive SQLite integers.
pub const MAX_COLUMNS: usize = 62;

/// How a table syncs (DESIGN.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Written only by the device that created the row; the owner's newest version wins.
    Owned,
    /// Written by any device; per-column last-writer-wins by (HLC, origin).
    Shared,
}

impl Class {
    /// Parses the class argument of `sdsync_track`.
    pub fn parse(text: &str) -> Result<Self, SchemaError> {
        match text {
            "owned" => Ok(Self::Owned),
            "shared" => Ok(Self::Shared),
            other => Err(SchemaError::UnknownClass(other.to_string())),
        }
    }

    /// The name used in SQL and in `sdsync_tables`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owned => "owned",
            Self::Shared => "shared",
        }
    }
}

/// SQLite's type affinity of a column, which decides what JSON values it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Affinity {
    /// `INT` in the declared type.
    Integer,
    /// `CHAR`, `CLOB` or `TEXT`.
    Text,
    /// `BLOB` or no declared type: any value.
    Blob,
    /// `REAL`, `FLOA` or `DOUB`.
    Real,
    /// Anything else.
    Numeric,
}

impl Affinity {
    /// SQLite's affinity rules (section 3.1 of "Datatypes In SQLite").
    pub fn of_declared(decl: &str) -> Self {
        let d = decl.to_ascii_uppercase();
        if d.contains("INT") {
            Self::Integer
        } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
            Self::Text
        } else if d.contains("BLOB") || d.is_empty() {
            Self::Blob
        } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
            Self::Real
        } else {
            Self::Numeric
        }
    }
}

/// One row of `PRAGMA table_info`.
#[derive(Clone, Debug)]
pub struct RawColumn {
    /// Column name.
    pub name: String,
    /// Declared type.
    pub decl_type: String,
    /// Declared NOT NULL.
    pub not_null: bool,
    /// Has a DEFAULT clause.
    pub has_default: bool,
    /// Position in the primary key (0 when not part of it).
    pub pk: i64,
}

impl RawColumn {
    /// Shorthand for tests and docs.
    pub fn new(name: &str, decl: &str, not_null: bool, has_default: bool, pk: i64) -> Self {
        Self {
            name: name.into(),
            decl_type: decl.into(),
            not_null,
            has_default,
            pk,
        }
    }
}

/// A single-column foreign key from `PRAGMA foreign_key_list`.
#[derive(Clone, Debug)]
pub struct RawForeignKey {
    /// Constraint id; columns sharing one id form a multi-column key.
    pub id: i64,
    /// Referencing column.
    pub from: String,
    /// Referenced table.
    pub table: String,
    /// Referenced column, `None` when it names the referenced primary key implicitly.
    pub to: Option<String>,
}

/// Everything sdsync reads about a table before tracking it.
#[derive(Clone, Debug)]
pub struct RawTable {
    /// Table name.
    pub name: String,
    /// Columns in declaration order.
    pub columns: Vec<RawColumn>,
    /// Columns that carry a single-column UNIQUE index or PRIMARY KEY.
    pub unique: Vec<String>,
    /// Foreign key constraints.
    pub foreign_keys: Vec<RawForeignKey>,
    /// The `INTEGER PRIMARY KEY` (rowid alias), if the table has one.
    pub integer_primary_key: Option<String>,
}

/// The options argument of `sdsync_track`. Kept in the table's spec, so a table
/// whose layout changed is re-tracked with the options it was tracked with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The column that identifies a row on every device (default `uuid`).
    #[serde(default)]
    pub uuid_column: Option<String>,
    /// Integer references without a FOREIGN KEY constraint: column → table.
    #[serde(default)]
    pub refs: BTreeMap<String, String>,
    /// Local-only columns (caches, derived data) that never sync.
    #[serde(default)]
    pub local: Vec<String>,
}

impl Options {
    /// Parses the JSON options; unknown keys are errors so typos do not pass silently.
    pub fn parse(json: Option<&str>) -> Result<Self, SchemaError> {
        match json {
            None => Ok(Self::default()),
            Some(text) => {
                serde_json::from_str(text).map_err(|e| SchemaError::BadOptions(e.to_string()))
            }
        }
    }
}

/// Where a reference column points: the referenced table, and which of its
/// columns the stored value matches (its uuid column means no translation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// Referenced tracked table.
    pub table: String,
    /// Referenced column holding the stored value.
    pub column: String,
    /// True when the stored value already is the referenced row's uuid.
    pub by_uuid: bool,
    /// The referenced table's uuid column.
    pub target_uuid: String,
    /// Declared as a FOREIGN KEY (SQLite enforces it while `foreign_keys` is on),
    /// rather than named in the `refs` option. Specs stored before this field
    /// existed read as declared, which checks no more than they did.
    #[serde(default = "declared_by_default")]
    pub declared: bool,
}

fn declared_by_default() -> bool {
    true
}

/// A synced column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSpec {
    /// Column name.
    pub name: String,
    /// Decides which JSON values are accepted on apply.
    pub affinity: Affinity,
    /// NOT NULL without a default: a row cannot be created without it.
    pub required: bool,
    /// A reference to another tracked row, sent as that row's uuid.
    pub reference: Option<Reference>,
}

/// A tracked table, as stored (JSON) in `sdsync_tables`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSpec {
    /// Id in `sdsync_tables`, used in version rows instead of the name.
    pub id: i64,
    /// Table name.
    pub name: String,
    /// Sync class.
    pub class: Class,
    /// The identifying column.
    pub uuid_column: String,
    /// The local `INTEGER PRIMARY KEY` (the rowid), which never crosses the wire;
    /// version metadata is keyed by it.
    pub local_id: String,
    /// Synced columns; column `i` is mask bit `i + 1`.
    pub columns: Vec<ColumnSpec>,
    /// The options it was tracked with (re-used when its layout changes).
    #[serde(default)]
    pub options: Options,
    /// Former names (`ALTER TABLE … RENAME TO`): changes from devices that still
    /// use one of them apply to this table.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Former names of columns (`ALTER TABLE … RENAME COLUMN`), `(former,
    /// current)`: values from devices that still use the former name apply
    /// to the current column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub column_aliases: Vec<(String, String)>,
}

/// Why a table cannot be tracked, or an option is wrong. Every message says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchemaError {
    /// The class argument is neither `owned` nor `shared`.
    #[error("unknown sync class '{0}': use 'owned' (written only by its device) or 'shared'")]
    UnknownClass(String),
    /// The options argument is not valid JSON of the expected shape.
    #[error(
        "bad sdsync_track options: {0} (expected {{\"uuid_column\": \"…\", \"refs\": {{\"col\": \"table\"}}, \"local\": [\"col\"]}})"
    )]
    BadOptions(String),
    /// The table does not exist.
    #[error("no such table: {0}")]
    NoSuchTable(String),
    /// The table name is reserved for sdsync.
    #[error("table {0}: names starting with sdsync_ are reserved for sdsync's own tables")]
    Reserved(String),
    /// The uuid column is missing.
    #[error(
        "table {table}: no column '{column}' to identify rows; add `{column} TEXT NOT NULL UNIQUE` or name another column in options {{\"uuid_column\": \"…\"}}"
    )]
    NoUuidColumn {
        /// Table.
        table: String,
        /// Expected column.
        column: String,
    },
    /// The uuid column allows NULL.
    #[error(
        "table {table}: column '{column}' must be NOT NULL (it identifies the row on every device)"
    )]
    UuidNullable {
        /// Table.
        table: String,
        /// Column.
        column: String,
    },
    /// The uuid column has no unique index.
    #[error(
        "table {table}: column '{column}' must be UNIQUE (declare it UNIQUE or CREATE UNIQUE INDEX on it alone)"
    )]
    UuidNotUnique {
        /// Table.
        table: String,
        /// Column.
        column: String,
    },
    /// Too many columns for a 64-bit version mask.
    #[error(
        "table {table}: {count} synced columns; at most {MAX_COLUMNS} are supported (mark caches as \"local\" in the options)"
    )]
    TooManyColumns {
        /// Table.
        table: String,
        /// Synced column count.
        count: usize,
    },
    /// A column named in the options does not exist.
    #[error("table {table}: options name column '{column}', which the table does not have")]
    UnknownOptionColumn {
        /// Table.
        table: String,
        /// Column.
        column: String,
    },
    /// A foreign key spans several columns.
    #[error(
        "table {table}: foreign key on ({columns}) spans several columns; sdsync maps single-column references only"
    )]
    CompositeForeignKey {
        /// Table.
        table: String,
        /// Columns.
        columns: String,
    },
    /// A reference points at a table that is not tracked.
    #[error(
        "table {table}: column '{column}' references table '{target}', which is not tracked; track '{target}' first (or list '{column}' as \"local\")"
    )]
    UntrackedReference {
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// Referenced table.
        target: String,
    },
    /// The table has no stable rowid to key version metadata by.
    #[error(
        "table {0}: needs a local `id INTEGER PRIMARY KEY` (sdsync keys version metadata by the rowid, which VACUUM may renumber unless it is declared so; WITHOUT ROWID tables are not supported)"
    )]
    NoIntegerPrimaryKey(String),
    /// A local-only column could not be left out of inserted rows.
    #[error(
        "table {table}: local column '{column}' is NOT NULL without a default, so rows from peers could not be inserted; give it a default"
    )]
    LocalRequired {
        /// Table.
        table: String,
        /// Column.
        column: String,
    },
}

/// Looks up the uuid column of an already tracked table (`None`: not tracked).
pub type TrackedUuid<'a> = dyn Fn(&str) -> Option<(String, Option<String>)> + 'a;

impl TableSpec {
    /// Validates a raw table into a spec. `tracked(name)` returns the uuid column
    /// and local id column of a tracked table, for references.
    pub fn validate(
        raw: RawTable,
        class: Class,
        options: &Options,
        id: i64,
        tracked: &TrackedUuid<'_>,
    ) -> Result<Self, SchemaError> {
        let table = raw.name.clone();
        if table.to_ascii_lowercase().starts_with("sdsync_") {
            return Err(SchemaError::Reserved(table));
        }
        if raw.columns.is_empty() {
            return Err(SchemaError::NoSuchTable(table));
        }
        let uuid_column = options.uuid_column.clone().unwrap_or_else(|| "uuid".into());
        check_uuid_column(&raw, &uuid_column)?;
        for named in options.refs.keys().chain(&options.local) {
            if !raw.columns.iter().any(|c| &c.name == named) {
                return Err(SchemaError::UnknownOptionColumn {
                    table,
                    column: named.clone(),
                });
            }
        }
        let references = references(&raw, options, tracked, &uuid_column)?;
        let mut columns = Vec::new();
        for c in &raw.columns {
            let skip = c.name == uuid_column || Some(&c.name) == raw.integer_primary_key.as_ref();
            let required = c.not_null && !c.has_default;
            if options.local.contains(&c.name) {
                if required {
                    return Err(SchemaError::LocalRequired {
                        table,
                        column: c.name.clone(),
                    });
                }
                continue;
            }
            if skip {
                continue;
            }
            columns.push(ColumnSpec {
                name: c.name.clone(),
                affinity: Affinity::of_declared(&c.decl_type),
                required,
                reference: references.get(&c.name).cloned(),
            });
        }
        let Some(local_id) = raw.integer_primary_key else {
            return Err(SchemaError::NoIntegerPrimaryKey(table));
        };
        if columns.len() > MAX_COLUMNS {
            return Err(SchemaError::TooManyColumns {
                table,
                count: columns.len(),
            });
        }
        Ok(Self {
            id,
            name: table,
            class,
            uuid_column,
            local_id,
            columns,
            options: options.clone(),
            aliases: Vec::new(),
            column_aliases: Vec::new(),
        })
    }

    /// The options to re-track with after the table changed: those it was tracked
    /// with, less the columns that no longer exist (`exists` tells).
    pub fn surviving_options(&self, exists: impl Fn(&str) -> bool) -> Options {
        let mut options = self.options.clone();
        options.refs.retain(|c, _| exists(c));
        options.local.retain(|c| exists(c));
        options
    }

    /// The index of the column a change's key names: a synced column by
    /// its name, or by a name it had before a rename.
    pub fn column_index(&self, key: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == key).or_else(|| {
            let (_, current) = self
                .column_aliases
                .iter()
                .find(|(former, _)| former == key)?;
            self.columns.iter().position(|c| c.name == *current)
        })
    }

    /// The bits of the columns renamed since they were tracked (the current
    /// names of `column_aliases`).
    pub fn renamed_mask(&self) -> u64 {
        self.column_aliases
            .iter()
            .filter_map(|(_, current)| self.columns.iter().position(|c| c.name == *current))
            .fold(0, |mask, i| mask | 1 << (i + 1))
    }

    /// The mask of a whole row: the row bit and every column.
    pub fn all_mask(&self) -> u64 {
        (1u64 << (self.columns.len() + 1)) - 1
    }

    /// The mask bit of a column, by name.
    pub fn bit_of(&self, column: &str) -> Option<u64> {
        self.columns
            .iter()
            .position(|c| c.name == column)
            .map(|i| 1u64 << (i + 1))
    }

    /// Columns named by a mask, in order.
    pub fn columns_in(&self, mask: u64) -> impl Iterator<Item = (usize, &ColumnSpec)> {
        self.columns
            .iter()
            .enumerate()
            .filter(move |(i, _)| mask & (1u64 << (i + 1)) != 0)
    }

    /// Tables this one references (other than itself), for dependency order.
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.columns
            .iter()
            .filter_map(|c| c.reference.as_ref())
            .map(|r| r.table.as_str())
            .filter(move |t| *t != self.name)
    }
}

fn check_uuid_column(raw: &RawTable, uuid_column: &str) -> Result<(), SchemaError> {
    let table = raw.name.clone();
    let column = uuid_column.to_string();
    let Some(col) = raw.columns.iter().find(|c| c.name == uuid_column) else {
        return Err(SchemaError::NoUuidColumn { table, column });
    };
    if !col.not_null {
        return Err(SchemaError::UuidNullable { table, column });
    }
    if !raw.unique.iter().any(|u| u == uuid_column) {
        return Err(SchemaError::UuidNotUnique { table, column });
    }
    Ok(())
}

/// Collects the references of a table: declared foreign keys, then `refs` options.
fn references(
    raw: &RawTable,
    options: &Options,
    tracked: &TrackedUuid<'_>,
    own_uuid: &str,
) -> Result<BTreeMap<String, Reference>, SchemaError> {
    let table = raw.name.clone();
    let mut by_id: BTreeMap<i64, Vec<&RawForeignKey>> = BTreeMap::new();
    for fk in &raw.foreign_keys {
        by_id.entry(fk.id).or_default().push(fk);
    }
    let mut out = BTreeMap::new();
    let mut declared: Vec<(String, String, Option<String>, bool)> = Vec::new();
    for fks in by_id.values() {
        if fks.len() > 1 {
            let columns = fks.iter().map(|f| f.from.as_str()).collect::<Vec<_>>();
            return Err(SchemaError::CompositeForeignKey {
                table,
                columns: columns.join(", "),
            });
        }
        declared.push((
            fks[0].from.clone(),
            fks[0].table.clone(),
            fks[0].to.clone(),
            true,
        ));
    }
    for (col, target) in &options.refs {
        declared.push((col.clone(), target.clone(), None, false));
    }
    for (column, target, to, is_fk) in declared {
        if options.local.contains(&column) {
            continue;
        }
        let (uuid_col, local_id) = if target == raw.name {
            (own_uuid.to_string(), raw.integer_primary_key.clone())
        } else {
            tracked(&target).ok_or_else(|| SchemaError::UntrackedReference {
                table: table.clone(),
                column: column.clone(),
                target: target.clone(),
            })?
        };
        let to = to.or(local_id).unwrap_or_else(|| "rowid".into());
        out.insert(
            column,
            Reference {
                table: target,
                by_uuid: to == uuid_col,
                column: to,
                target_uuid: uuid_col,
                declared: is_fk,
            },
        );
    }
    Ok(out)
}

/// Changes a peer sent that failed to apply here, kept whole with the reason
/// (written by the syncer in the transaction that applied the rest of their
/// page). Created by the extension with its other tables and by the syncer, which
/// may open a library an older extension made.
pub const QUARANTINE_TABLE: &str = "CREATE TABLE IF NOT EXISTS sdsync_quarantine(
  id INTEGER PRIMARY KEY,
  origin TEXT NOT NULL,
  seq INTEGER NOT NULL,
  hlc INTEGER NOT NULL,
  tbl TEXT NOT NULL,
  pk NOT NULL,
  reason TEXT NOT NULL,
  peer TEXT,
  change TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 1,
  at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  tried_at TEXT,
  UNIQUE (origin, seq));";

/// A sparse record of this device's own `(seq, hlc)` as the capture triggers
/// issue them (format 7; see `CLOCK_BUMP` in `triggers`). Created by the
/// extension and by the syncer, which may open a library whose upgrade an app
/// holding the lock put off.
pub const ISSUED_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS sdsync_issued(seq INTEGER PRIMARY KEY, hlc INTEGER NOT NULL);";

/// Quotes an SQL identifier. Every identifier sdsync puts into SQL goes through here.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> RawTable {
        RawTable {
            name: "entries".into(),
            columns: vec![
                RawColumn::new("id", "INTEGER", false, false, 1),
                RawColumn::new("uuid", "TEXT", true, false, 0),
                RawColumn::new("name", "TEXT", true, true, 0),
                RawColumn::new("size", "INTEGER", false, false, 0),
                RawColumn::new("parent_id", "INTEGER", false, false, 0),
                RawColumn::new("location_id", "INTEGER", false, false, 0),
                RawColumn::new("cache", "BLOB", false, false, 0),
            ],
            unique: vec!["uuid".into()],
            foreign_keys: vec![RawForeignKey {
                id: 0,
                from: "parent_id".into(),
                table: "entries".into(),
                to: Some("id".into()),
            }],
            integer_primary_key: Some("id".into()),
        }
    }

    fn none(_: &str) -> Option<(String, Option<String>)> {
        None
    }

    #[test]
    fn spec_keeps_synced_columns_in_order() {
        let opts = Options::parse(Some(
            r#"{"refs":{"location_id":"locations"},"local":["cache"]}"#,
        ))
        .unwrap();
        let tracked =
            |t: &str| (t == "locations").then(|| ("uuid".to_string(), Some("id".to_string())));
        let spec = TableSpec::validate(entries(), Class::Owned, &opts, 3, &tracked).unwrap();
        let names: Vec<_> = spec.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["name", "size", "parent_id", "location_id"]);
        assert_eq!(spec.all_mask(), 0b11111);
        assert_eq!(spec.bit_of("size"), Some(0b100));
        let parent = spec.columns[2].reference.clone().unwrap();
        assert_eq!(
            (
                parent.table.as_str(),
                parent.column.as_str(),
                parent.by_uuid
            ),
            ("entries", "id", false)
        );
        assert_eq!(spec.parents().collect::<Vec<_>>(), ["locations"]);
    }

    #[test]
    fn untracked_reference_is_named() {
        let opts = Options::parse(Some(r#"{"refs":{"location_id":"locations"}}"#)).unwrap();
        let err = TableSpec::validate(entries(), Class::Owned, &opts, 1, &none).unwrap_err();
        assert_eq!(
            err.to_string(),
            "table entries: column 'location_id' references table 'locations', which is not tracked; track 'locations' first (or list 'location_id' as \"local\")"
        );
    }

    #[test]
    fn uuid_column_rules() {
        let mut raw = entries();
        raw.unique.clear();
        let err =
            TableSpec::validate(raw, Class::Shared, &Options::default(), 1, &none).unwrap_err();
        assert!(matches!(err, SchemaError::UuidNotUnique { .. }), "{err}");
        let mut raw = entries();
        raw.columns[1].not_null = false;
        let err =
            TableSpec::validate(raw, Class::Shared, &Options::default(), 1, &none).unwrap_err();
        assert!(err.to_string().contains("must be NOT NULL"), "{err}");
        let opts = Options::parse(Some(r#"{"uuid_column":"pub_id"}"#)).unwrap();
        let err = TableSpec::validate(entries(), Class::Shared, &opts, 1, &none).unwrap_err();
        assert!(err.to_string().contains("no column 'pub_id'"), "{err}");
    }

    #[test]
    fn options_are_strict() {
        let err = Options::parse(Some(r#"{"ref":{}}"#)).unwrap_err();
        assert!(err.to_string().contains("unknown field `ref`"), "{err}");
        let opts = Options::parse(Some(r#"{"local":["nope"]}"#)).unwrap();
        let err = TableSpec::validate(entries(), Class::Owned, &opts, 1, &none).unwrap_err();
        assert!(matches!(err, SchemaError::UnknownOptionColumn { .. }));
        assert!(matches!(
            Class::parse("both"),
            Err(SchemaError::UnknownClass(_))
        ));
    }

    #[test]
    fn reserved_and_composite_refused() {
        let mut raw = entries();
        raw.name = "sdsync_x".into();
        let err =
            TableSpec::validate(raw, Class::Owned, &Options::default(), 1, &none).unwrap_err();
        assert!(matches!(err, SchemaError::Reserved(_)));
        let mut raw = entries();
        raw.foreign_keys.push(RawForeignKey {
            id: 0,
            from: "size".into(),
            table: "entries".into(),
            to: None,
        });
        let err =
            TableSpec::validate(raw, Class::Owned, &Options::default(), 1, &none).unwrap_err();
        assert!(matches!(err, SchemaError::CompositeForeignKey { .. }));
    }

    #[test]
    fn affinity_follows_sqlite_rules() {
        assert_eq!(Affinity::of_declared("BIGINT"), Affinity::Integer);
        assert_eq!(Affinity::of_declared("varchar(10)"), Affinity::Text);
        assert_eq!(Affinity::of_declared(""), Affinity::Blob);
        assert_eq!(Affinity::of_declared("DOUBLE"), Affinity::Real);
        assert_eq!(Affinity::of_declared("DATETIME"), Affinity::Numeric);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
