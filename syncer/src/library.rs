//! A device's library database, opened with the extension, and the operations the
//! syncer performs through the extension's SQL contract.
//!
//! ```no_run
//! use sdsync_syncer::library::{Library, extension_path};
//! let ext = extension_path(None).unwrap();
//! let lib = Library::create("/tmp/laptop/database.db".as_ref(), &ext).unwrap();
//! let changes = lib.changes_since(&lib.device().unwrap(), 0).unwrap();
//! ```
//!
//! Everything goes through `sdsync_changes`, `sdsync_watermarks` and
//! `sdsync_mark_complete`: the syncer has no private access to sdsync's tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql, params};
use sdsync_core::schema::{TableSpec, quote_ident};

/// The default library schema (`sql/library.sql`), compiled in.
pub const LIBRARY_SQL: &str = include_str!("../../sql/library.sql");

/// Why a library operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    /// SQLite (or the extension) refused.
    #[error("{path}: {source}")]
    Sql {
        /// Database file.
        path: PathBuf,
        /// The error.
        source: rusqlite::Error,
    },
    /// A file or directory could not be created or read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `demo`/`bench` were pointed at a non-empty folder they did not create.
    #[error(
        "{0} is not empty and was not made by sdsync demo/bench: refusing to empty it; name a new folder"
    )]
    NotScratch(PathBuf),
    /// The extension file is not where it was looked for.
    #[error(
        "libsdsync.so not found (looked in {0}); build it with `cargo build --release -p sdsync-extension` or pass --extension"
    )]
    NoExtension(String),
}

/// One change as `sdsync_changes` presents it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// Table.
    pub tbl: String,
    /// Row uuid, typed as the uuid column stores it.
    pub pk: Pk,
    /// `upsert` or `delete`.
    pub op: String,
    /// JSON object of column values.
    pub data: Option<String>,
    /// Origin device uuid.
    pub origin: String,
    /// Origin sequence.
    pub seq: i64,
    /// HLC.
    pub hlc: i64,
    /// 1 when the change created the row.
    pub creates: i64,
}

/// A row's uuid as `sdsync_changes.pk` gives it: TEXT (`uuid TEXT`), BLOB
/// (Spacedrive's `pub_id BLOB`) or INTEGER (capture refuses REAL uuids). Kept
/// typed and byte-exact end to end (and in messages): a blob uuid turned into
/// text, or text bytes made valid UTF-8, would name no row on the peer.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Pk {
    /// A TEXT uuid.
    Text(String),
    /// A TEXT uuid whose bytes are not UTF-8 (SQLite stores what it is given).
    RawText(Vec<u8>),
    /// A BLOB uuid.
    Blob(Vec<u8>),
    /// An INTEGER uuid.
    Integer(i64),
}

impl Pk {
    /// The uuid when it is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Pk::Text(s) => Some(s),
            _ => None,
        }
    }

    /// Approximate encoded size, for bounding pages.
    pub fn len(&self) -> usize {
        match self {
            Pk::Text(s) => s.len(),
            Pk::RawText(b) | Pk::Blob(b) => b.len(),
            Pk::Integer(_) => 8,
        }
    }

    /// Whether the uuid is empty text or an empty blob.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for Pk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pk::Text(s) => f.write_str(s),
            Pk::Integer(i) => write!(f, "{i}"),
            Pk::RawText(b) => {
                f.write_str("CAST(x'")?;
                b.iter().try_for_each(|x| write!(f, "{x:02x}"))?;
                f.write_str("' AS TEXT)")
            }
            Pk::Blob(b) => {
                f.write_str("x'")?;
                b.iter().try_for_each(|x| write!(f, "{x:02x}"))?;
                f.write_str("'")
            }
        }
    }
}

impl From<&str> for Pk {
    fn from(s: &str) -> Self {
        Pk::Text(s.into())
    }
}

impl From<String> for Pk {
    fn from(s: String) -> Self {
        Pk::Text(s)
    }
}

impl PartialEq<&str> for Pk {
    fn eq(&self, other: &&str) -> bool {
        self.as_text() == Some(*other)
    }
}

impl ToSql for Pk {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Pk::Text(s) => ValueRef::Text(s.as_bytes()),
            Pk::RawText(b) => ValueRef::Text(b),
            Pk::Blob(b) => ValueRef::Blob(b),
            Pk::Integer(i) => ValueRef::Integer(*i),
        }))
    }
}

impl FromSql for Pk {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Text(t) => Ok(match std::str::from_utf8(t) {
                Ok(s) => Pk::Text(s.to_string()),
                Err(_) => Pk::RawText(t.to_vec()),
            }),
            ValueRef::Blob(b) => Ok(Pk::Blob(b.to_vec())),
            ValueRef::Integer(i) => Ok(Pk::Integer(i)),
            ValueRef::Null | ValueRef::Real(_) => Err(FromSqlError::InvalidType),
        }
    }
}

/// Finds `libsdsync.so`: the given path, `$SDSYNC_EXTENSION`, next to the running
/// executable, or in `target/release` / `target/debug` of the workspace.
pub fn extension_path(given: Option<&Path>) -> Result<PathBuf, LibraryError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = given {
        candidates.push(p.to_path_buf());
    }
    if let Ok(p) = std::env::var("SDSYNC_EXTENSION") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join("libsdsync.so"));
        candidates.push(dir.join("../libsdsync.so"));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for profile in ["release", "debug"] {
        candidates.push(root.join("target").join(profile).join("libsdsync.so"));
    }
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| {
            LibraryError::NoExtension(
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
}

/// A library database with the extension loaded.
pub struct Library {
    /// The connection.
    pub conn: Connection,
    /// The file.
    pub path: PathBuf,
}

impl Library {
    /// Opens a database file in WAL mode with the extension loaded.
    pub fn open(path: &Path, extension: &Path) -> Result<Self, LibraryError> {
        let err = |source| LibraryError::Sql {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        // SAFETY: we load our own extension into a connection we own, then turn
        // extension loading off again.
        unsafe {
            conn.load_extension_enable().map_err(err)?;
            conn.load_extension(extension, None::<&str>).map_err(err)?;
            conn.load_extension_disable().map_err(err)?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Opens a database and installs the default library schema.
    pub fn create(path: &Path, extension: &Path) -> Result<Self, LibraryError> {
        let lib = Self::open(path, extension)?;
        lib.exec(LIBRARY_SQL)?;
        Ok(lib)
    }

    fn err(&self, source: rusqlite::Error) -> LibraryError {
        LibraryError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs SQL.
    pub fn exec(&self, sql: &str) -> Result<(), LibraryError> {
        self.conn.execute_batch(sql).map_err(|e| self.err(e))
    }

    /// This database's device uuid.
    pub fn device(&self) -> Result<String, LibraryError> {
        self.conn
            .query_row("SELECT sdsync_device_id()", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Every change this database holds.
    pub fn changes(&self) -> Result<Vec<Change>, LibraryError> {
        fold(&self.conn).map_err(|e| self.err(e))?;
        read_changes(
            &self.conn,
            "SELECT tbl, pk, op, data, origin, seq, hlc, creates FROM sdsync_changes",
            [],
        )
        .map_err(|e| self.err(e))
    }

    /// The changes of `origin` above sequence `after`, in sequence order.
    pub fn changes_since(&self, origin: &str, after: i64) -> Result<Vec<Change>, LibraryError> {
        fold(&self.conn).map_err(|e| self.err(e))?;
        read_changes(
            &self.conn,
            "SELECT tbl, pk, op, data, origin, seq, hlc, creates FROM sdsync_changes WHERE origin = ?1 AND seq > ?2",
            params![origin, after],
        )
        .map_err(|e| self.err(e))
    }

    /// `(origin, seq)`: what this database holds of each origin.
    pub fn watermarks(&self) -> Result<Vec<(String, i64)>, LibraryError> {
        let mut stmt = self
            .conn
            .prepare("SELECT origin, seq FROM sdsync_watermarks ORDER BY origin")
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// Applies changes and records the watermarks they complete, in one
    /// transaction: either all of it lands or none.
    pub fn apply(
        &self,
        changes: &[Change],
        complete: &[(String, i64)],
    ) -> Result<(), LibraryError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        apply_in(&tx, changes).map_err(|e| self.err(e))?;
        for (origin, seq) in complete {
            tx.query_row(
                "SELECT sdsync_mark_complete(?1, ?2)",
                params![origin, seq],
                |_| Ok(()),
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The tracked tables' contents (see [`digest`]).
    pub fn digest(&self) -> Result<BTreeMap<String, Vec<String>>, LibraryError> {
        digest(&self.conn).map_err(|e| self.err(e))
    }

    /// Rows of one table.
    pub fn count(&self, table: &str) -> Result<i64, LibraryError> {
        self.conn
            .query_row(
                &format!("SELECT count(*) FROM {}", quote_ident(table)),
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }
}

/// Whether the database of `conn` has table `name`.
pub fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1")?
        .query_row([name], |r| r.get::<_, i64>(0))
        .map(|n| n > 0)
}

/// How many changes of `origin` lie above `after`, counted, not as the
/// distance between two numbers (a restored device renumbers its changes
/// 2^20 and more above what its peers hold).
pub fn changes_above(conn: &Connection, origin: &str, after: i64) -> rusqlite::Result<i64> {
    fold(conn)?;
    conn.query_row(
        "SELECT count(*) FROM sdsync_changes WHERE origin = ?1 AND seq > ?2",
        rusqlite::params![origin, after],
        |r| r.get(0),
    )
}

/// Folds this device's update log into its versions (the extension's
/// `fold.rs`), as a statement of its own. `sdsync_changes` folds too when
/// it finds the log not empty, but inside the reading statement, whose
/// read transaction cannot always take the write lock (another connection
/// committed since it began): readers fold first, so it seldom has to.
pub fn fold(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("SELECT sdsync_fold()")?
        .query_row([], |_| Ok(()))
}

/// Reads changes with a query returning the eight columns of `sdsync_changes`.
pub fn read_changes(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> rusqlite::Result<Vec<Change>> {
    // Cached: a syncer reads a page per page sent and per acknowledgement.
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(p, change)?;
    rows.collect()
}

/// A change from a row of `tbl, pk, op, data, origin, seq, hlc, creates`.
pub fn change(r: &rusqlite::Row<'_>) -> rusqlite::Result<Change> {
    Ok(Change {
        tbl: r.get(0)?,
        pk: r.get(1)?,
        op: r.get(2)?,
        data: r.get(3)?,
        origin: r.get(4)?,
        seq: r.get(5)?,
        hlc: r.get(6)?,
        creates: r.get(7)?,
    })
}

/// Inserts changes into `sdsync_changes` (the caller owns the transaction).
pub fn apply_in(conn: &Connection, changes: &[Change]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO sdsync_changes(tbl, pk, op, data, origin, seq, hlc, creates) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for c in changes {
        stmt.execute(params![
            c.tbl, c.pk, c.op, c.data, c.origin, c.seq, c.hlc, c.creates
        ])?;
    }
    Ok(())
}

/// The content of every tracked table as sorted rows of exact values (see
/// [`exact_text`]), references as the referenced row's uuid: equal digests mean
/// two devices show the same library, value for value and byte for byte.
/// Columns are taken by name, so two devices whose tables hold the same columns
/// in a different order (a rebuild moved one) compare equal. A tracked table
/// the app dropped (`missing` in `sdsync_schema`) has no entry.
pub fn digest(conn: &Connection) -> rusqlite::Result<BTreeMap<String, Vec<String>>> {
    let specs: Vec<TableSpec> = {
        let mut stmt = conn.prepare("SELECT spec FROM sdsync_tables ORDER BY id")?;
        let texts: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        texts
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect()
    };
    let mut out = BTreeMap::new();
    for spec in specs {
        if !table_exists(conn, &spec.name)? {
            continue;
        }
        let mut cols = vec![format!("t.{}", quote_ident(&spec.uuid_column))];
        let mut columns: Vec<_> = spec.columns.iter().collect();
        columns.sort_by(|a, b| a.name.cmp(&b.name));
        for c in columns {
            let col = format!("t.{}", quote_ident(&c.name));
            cols.push(match &c.reference {
                Some(r) if !r.by_uuid => format!(
                    "(SELECT r.{} FROM {} r WHERE r.{} = {col})",
                    quote_ident(&r.target_uuid),
                    quote_ident(&r.table),
                    quote_ident(&r.column)
                ),
                _ => col,
            });
        }
        let sql = format!(
            "SELECT {} FROM {} t",
            cols.join(", "),
            quote_ident(&spec.name)
        );
        let mut stmt = conn.prepare(&sql)?;
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                let cells = (0..cols.len())
                    .map(|i| r.get_ref(i).map(exact_text))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(format!("[{}]", cells.join(",")))
            })?
            .collect::<Result<_, _>>()?;
        rows.sort();
        out.insert(spec.name.clone(), rows);
    }
    Ok(out)
}

/// A value as text that tells every SQLite value apart: `null`, integers, REALs
/// in Rust's shortest round-trip form (always with `.`, `e`, `inf` or `NaN`, so
/// never equal to an integer's), TEXT as a quoted escaped string or, when it is
/// not UTF-8, `text x'…'`, BLOBs as `x'…'`.
fn exact_text(v: ValueRef<'_>) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    match v {
        ValueRef::Null => "null".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(r) => format!("{r:?}"),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => format!("{s:?}"),
            Err(_) => format!("text x'{}'", hex(t)),
        },
        ValueRef::Blob(b) => format!("x'{}'", hex(b)),
    }
}

/// A short fingerprint of a digest, for display.
pub fn fingerprint(digest: &BTreeMap<String, Vec<String>>) -> String {
    // FNV-1a over the canonical text: stable across runs and platforms.
    let mut h: u64 = 0xcbf29ce484222325;
    for (table, rows) in digest {
        for byte in table.bytes().chain(rows.iter().flat_map(|r| r.bytes())) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}
