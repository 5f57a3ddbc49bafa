//! Helpers for the cross-crate tests: open real database files with the built
//! `libsdsync.so`, copy changes between them, and compare their contents.
//!
//! ```no_run
//! use sdsync_tests::{Lib, sync_pair};
//! let dir = tempfile_dir("demo");
//! let a = Lib::create(&dir.join("a.db"));
//! let b = Lib::create(&dir.join("b.db"));
//! a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'x')");
//! sync_pair(&a, &b);
//! assert_eq!(a.digest(), b.digest());
//! # fn tempfile_dir(_: &str) -> std::path::PathBuf { std::env::temp_dir() }
//! ```
//!
//! Digests compare what a user sees: every tracked table's rows by uuid, with
//! references translated to the referenced row's uuid (local ids differ per device).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, params};
use sdsync_core::schema::{TableSpec, quote_ident};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The built extension: `$SDSYNC_EXTENSION`, else `target/release`, else `target/debug`.
pub fn extension_path() -> PathBuf {
    if let Ok(p) = std::env::var("SDSYNC_EXTENSION") {
        return PathBuf::from(p);
    }
    for profile in ["release", "debug"] {
        let p = root().join("target").join(profile).join("libsdsync.so");
        if p.exists() {
            return p;
        }
    }
    panic!("libsdsync.so not built: run `cargo build --release -p sdsync-extension` first");
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sdsync-test-{}-{}-{}",
        name,
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Opens a database file in WAL mode with the extension loaded.
pub fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open database");
    load(&conn);
    conn.pragma_update(None, "journal_mode", "WAL").expect("WAL");
    conn
}

/// Loads the extension into a connection.
pub fn load(conn: &Connection) {
    // SAFETY: loading our own extension into a connection we own.
    unsafe {
        conn.load_extension_enable().expect("enable extensions");
        conn.load_extension(extension_path(), None::<&str>).expect("load libsdsync");
        conn.load_extension_disable().expect("disable extensions");
    }
}

/// A library database: the default schema, tracked.
pub struct Lib {
    /// The connection.
    pub conn: Connection,
    /// Its file.
    pub path: PathBuf,
}

impl Lib {
    /// Creates a database with the default library schema.
    pub fn create(path: &Path) -> Self {
        let conn = open(path);
        let schema = std::fs::read_to_string(root().join("sql/library.sql")).expect("read schema");
        conn.execute_batch(&schema).expect("apply library schema");
        Self {
            conn,
            path: path.to_path_buf(),
        }
    }

    /// Reopens an existing database.
    pub fn open(path: &Path) -> Self {
        Self {
            conn: open(path),
            path: path.to_path_buf(),
        }
    }

    /// Runs SQL, panicking with the statement on failure.
    pub fn exec(&self, sql: &str) {
        self.conn
            .execute_batch(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Runs SQL and returns the error message it must fail with.
    pub fn fails(&self, sql: &str) -> String {
        match self.conn.execute_batch(sql) {
            Ok(()) => panic!("expected failure: {sql}"),
            Err(e) => e.to_string(),
        }
    }

    /// One integer.
    pub fn int(&self, sql: &str) -> i64 {
        self.conn
            .query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// One text value.
    pub fn text(&self, sql: &str) -> String {
        self.conn
            .query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// This database's device uuid.
    pub fn device(&self) -> String {
        self.text("SELECT sdsync_device_id()")
    }

    /// Every row of `sdsync_changes`.
    pub fn changes(&self) -> Vec<Change> {
        read_changes(&self.conn, "SELECT tbl, pk, op, data, origin, seq, hlc, creates FROM sdsync_changes")
    }

    /// The tracked tables' contents, by table, rows as sorted JSON lines.
    pub fn digest(&self) -> BTreeMap<String, Vec<String>> {
        digest(&self.conn)
    }

    /// Row count of a table.
    pub fn count(&self, table: &str) -> i64 {
        self.int(&format!("SELECT count(*) FROM {}", quote_ident(table)))
    }
}

/// One row of `sdsync_changes`.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Table.
    pub tbl: String,
    /// Row uuid.
    pub pk: String,
    /// upsert / delete.
    pub op: String,
    /// JSON data.
    pub data: Option<String>,
    /// Origin device.
    pub origin: String,
    /// Sequence.
    pub seq: i64,
    /// HLC.
    pub hlc: i64,
    /// Creates the row.
    pub creates: i64,
}

/// Reads changes with a query returning the eight columns.
pub fn read_changes(conn: &Connection, sql: &str) -> Vec<Change> {
    let mut stmt = conn.prepare(sql).expect("prepare changes query");
    stmt.query_map([], |r| {
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
    })
    .expect("query changes")
    .collect::<Result<_, _>>()
    .expect("read changes")
}

/// Applies changes to a database, all or nothing (a savepoint, so it nests in a
/// caller's transaction).
pub fn apply(conn: &Connection, changes: &[Change]) -> rusqlite::Result<()> {
    conn.execute_batch("SAVEPOINT sdsync_test_apply")?;
    let result = (|| {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO sdsync_changes(tbl, pk, op, data, origin, seq, hlc, creates) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for c in changes {
            stmt.execute(params![c.tbl, c.pk, c.op, c.data, c.origin, c.seq, c.hlc, c.creates])?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("RELEASE sdsync_test_apply"),
        Err(e) => {
            conn.execute_batch("ROLLBACK TO sdsync_test_apply; RELEASE sdsync_test_apply")?;
            Err(e)
        }
    }
}

/// Applies changes one statement at a time without a savepoint of our own.
pub fn apply_each(conn: &Connection, changes: &[Change]) -> rusqlite::Result<()> {
    for c in changes {
        conn.execute(
            "INSERT INTO sdsync_changes(tbl, pk, op, data, origin, seq, hlc, creates) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![c.tbl, c.pk, c.op, c.data, c.origin, c.seq, c.hlc, c.creates],
        )?;
    }
    Ok(())
}

/// Copies everything `from` holds into `to`, and records `from`'s watermarks,
/// in one transaction.
pub fn copy_all(from: &Lib, to: &Lib) {
    let changes = from.changes();
    let marks = watermarks(&from.conn);
    let tx = to.conn.unchecked_transaction().expect("begin");
    apply(&tx, &changes).expect("apply changes");
    for (origin, seq) in marks {
        tx.query_row("SELECT sdsync_mark_complete(?1, ?2)", params![origin, seq], |_| Ok(()))
            .expect("mark complete");
    }
    tx.commit().expect("commit");
}

/// Copies both ways until both hold the same.
pub fn sync_pair(a: &Lib, b: &Lib) {
    copy_all(a, b);
    copy_all(b, a);
}

/// `(origin, seq)` pairs of `sdsync_watermarks`.
pub fn watermarks(conn: &Connection) -> Vec<(String, i64)> {
    let mut stmt = conn.prepare("SELECT origin, seq FROM sdsync_watermarks ORDER BY origin").expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("read")
}

/// The content of every tracked table, references as uuids.
pub fn digest(conn: &Connection) -> BTreeMap<String, Vec<String>> {
    let specs: Vec<TableSpec> = {
        let mut stmt = conn.prepare("SELECT spec FROM sdsync_tables ORDER BY id").expect("specs");
        stmt.query_map([], |r| r.get::<_, String>(0))
            .expect("query specs")
            .map(|s| serde_json::from_str(&s.expect("spec text")).expect("spec json"))
            .collect()
    };
    let mut out = BTreeMap::new();
    for spec in specs {
        let mut cols = vec![format!("t.{}", quote_ident(&spec.uuid_column))];
        for c in &spec.columns {
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
        let sql = format!("SELECT json_array({}) FROM {} t", cols.join(", "), quote_ident(&spec.name));
        let mut stmt = conn.prepare(&sql).expect("digest query");
        let mut rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .expect("digest rows")
            .collect::<Result<_, _>>()
            .expect("digest read");
        rows.sort();
        out.insert(spec.name.clone(), rows);
    }
    out
}
