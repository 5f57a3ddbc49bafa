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

pub mod devices;
pub mod fuzz_ops;
pub mod sim;
pub mod wire;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, params};
use sdsync_core::schema::quote_ident;

/// Every conflict clause an `INSERT` or `UPDATE` may carry (with its trailing
/// space; the first is none): the write-form matrix, the simulator and the SQL
/// fuzzer all run each of them, since SQLite applies the writer's clause to the
/// capture triggers' statements too.
pub const CONFLICT_CLAUSES: [&str; 6] = [
    "",
    "OR IGNORE ",
    "OR REPLACE ",
    "OR ABORT ",
    "OR FAIL ",
    "OR ROLLBACK ",
];

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

/// Waits for `cond`, failing the test after `secs` seconds (a deadline, never a
/// bare sleep: the outcome does not depend on timing).
pub fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The wall clock in milliseconds since the Unix epoch (what the extension's
/// HLC reads).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("WAL");
    conn
}

/// Loads the extension into a connection.
pub fn load(conn: &Connection) {
    // SAFETY: loading our own extension into a connection we own.
    unsafe {
        conn.load_extension_enable().expect("enable extensions");
        conn.load_extension(extension_path(), None::<&str>)
            .expect("load libsdsync");
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
        conn.execute_batch(sdsync_syncer::library::LIBRARY_SQL)
            .expect("apply library schema");
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
        read_changes(
            &self.conn,
            "SELECT tbl, pk, op, data, origin, seq, hlc, creates FROM sdsync_changes ORDER BY origin, seq",
        )
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

pub use sdsync_syncer::library::{Change, digest as digest_of, read_changes as read_changes_with};

/// `change` without the columns `names`: a partial copy of it, as a peer
/// serves a change some of whose columns a newer change holds there.
pub fn without(change: &Change, names: &[&str]) -> Change {
    let data: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(change.data.as_deref().expect("an upsert")).expect("JSON");
    let kept = data
        .into_iter()
        .filter(|(k, _)| !names.contains(&k.as_str()))
        .collect();
    Change {
        data: Some(serde_json::Value::Object(kept).to_string()),
        ..change.clone()
    }
}

/// Reads changes with a query returning the eight columns.
pub fn read_changes(conn: &Connection, sql: &str) -> Vec<Change> {
    read_changes_with(conn, sql, []).expect("read changes")
}

/// Applies changes to a database, all or nothing (a savepoint, so it nests in a
/// caller's transaction).
pub fn apply(conn: &Connection, changes: &[Change]) -> rusqlite::Result<()> {
    conn.execute_batch("SAVEPOINT sdsync_test_apply")?;
    let result = sdsync_syncer::library::apply_in(conn, changes);
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
    sdsync_syncer::library::apply_in(conn, changes)
}

/// Copies everything `from` holds into `to`, and records `from`'s watermarks,
/// in one transaction.
pub fn copy_all(from: &Lib, to: &Lib) {
    let changes = from.changes();
    let marks = watermarks(&from.conn);
    let tx = to.conn.unchecked_transaction().expect("begin");
    apply(&tx, &changes).expect("apply changes");
    for (origin, seq) in marks {
        tx.query_row(
            "SELECT sdsync_mark_complete(?1, ?2)",
            params![origin, seq],
            |_| Ok(()),
        )
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
    pairs(
        conn,
        "SELECT origin, seq FROM sdsync_watermarks ORDER BY origin",
    )
}

/// The rows of a two-column query.
pub fn pairs<A: rusqlite::types::FromSql, B: rusqlite::types::FromSql>(
    conn: &Connection,
    sql: &str,
) -> Vec<(A, B)> {
    let mut stmt = conn.prepare(sql).expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("read")
}

/// The content of every tracked table, references as uuids.
pub fn digest(conn: &Connection) -> BTreeMap<String, Vec<String>> {
    digest_of(conn).expect("digest")
}
