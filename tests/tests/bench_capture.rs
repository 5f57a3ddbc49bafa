//! What each part of the owned update trigger costs (issue 9's capture
//! measure), not a test: the lean table of `sdsync bench`, 100,000 rows,
//! `UPDATE lean SET a = a + 1` in its own transaction (median of 5), with
//! the capture trigger's body replaced by one part at a time in a fresh
//! database each. Ignored by `cargo test`; run with
//!
//! ```text
//! cargo build --release --workspace
//! cargo test --release -p sdsync-tests --test bench_capture -- --ignored --nocapture
//! ```
//!
//! Each line is the time, and its ratio to the plain table's in the same
//! run; the differences between lines are what a part adds per 100,000 rows.

use std::time::Instant;

use rusqlite::Connection;
use sdsync_tests::{extension_path, temp_dir};

const ROWS: i64 = 100_000;

/// Trigger bodies, each on a fresh tracked table (`None`: the trigger as
/// `sdsync_track` installs it).
const PARTS: &[(&str, Option<&str>)] = &[
    ("the trigger as installed", None),
    ("empty body (WHEN clause and frame only)", Some("SELECT 1;")),
    (
        "row size check",
        Some(
            "SELECT sdsync_refuse_row('lean', NEW.id) WHERE sdsync_row_bytes(NEW.uuid, NEW.a, NEW.b, NEW.c) > 33554432;",
        ),
    ),
    (
        "clock bump",
        Some("UPDATE sdsync_clock SET hlc = sdsync_next_hlc(hlc, seq), seq = seq + 1;"),
    ),
    (
        "owner check alone (seek the version row)",
        Some(
            "SELECT sdsync_refuse('lean', NEW.uuid, NULL) FROM sdsync_versions WHERE tbl = 1 AND rid = NEW.id AND origin <> 1;",
        ),
    ),
    (
        "version row: hlc only (no index entry moves)",
        Some("UPDATE sdsync_versions SET hlc = hlc + 1 WHERE tbl = 1 AND rid = NEW.id;"),
    ),
    (
        "version row: seq and hlc (its (origin, seq) entry moves)",
        Some(
            "UPDATE sdsync_versions SET seq = seq + 1000000, hlc = hlc + 1 WHERE tbl = 1 AND rid = NEW.id;",
        ),
    ),
    (
        "an append to a rowid log table",
        Some("INSERT INTO log(tbl, rid, hlc) VALUES (1, NEW.id, 5);"),
    ),
    (
        "owner check fused into a log append, HLC from a function (neither clock row nor version row written)",
        Some(
            "INSERT INTO log(tbl, rid, hlc) SELECT 1, NEW.id, sdsync_wall() FROM sdsync_versions WHERE tbl = 1 AND rid = NEW.id AND (origin = 1 OR sdsync_refuse('lean', NEW.uuid, NULL));",
        ),
    ),
    (
        "row size check + clock bump + owner check fused into a log append (version row not written)",
        Some(
            "SELECT sdsync_refuse_row('lean', NEW.id) WHERE sdsync_row_bytes(NEW.uuid, NEW.a, NEW.b, NEW.c) > 33554432; UPDATE sdsync_clock SET hlc = sdsync_next_hlc(hlc, seq), seq = seq + 1; INSERT INTO log(seq, tbl, rid, hlc) SELECT sdsync_bumped(0), 1, NEW.id, sdsync_bumped(1) FROM sdsync_versions WHERE tbl = 1 AND rid = NEW.id AND (origin = 1 OR sdsync_refuse('lean', NEW.uuid, NULL));",
        ),
    ),
    (
        "clock bump + owner check + log append",
        Some(
            "UPDATE sdsync_clock SET hlc = sdsync_next_hlc(hlc, seq), seq = seq + 1; \
             SELECT sdsync_refuse('lean', NEW.uuid, NULL) FROM sdsync_versions WHERE tbl = 1 AND rid = NEW.id AND origin <> 1; \
             INSERT INTO log(seq, tbl, rid, hlc) SELECT seq, 1, NEW.id, hlc FROM sdsync_clock;",
        ),
    ),
];

#[test]
#[ignore = "benchmark: run with --ignored"]
fn update_trigger_parts() {
    let dir = temp_dir("bench-capture");
    let plain = lean(&dir.join("plain.db"), false);
    let base = median_update(&plain);
    println!("| trigger body | UPDATE of {ROWS} rows | ratio to plain |\n|---|---|---|");
    println!("| no trigger (plain SQLite) | {base:.1} ms | ×1.00 |");
    for (i, (what, body)) in PARTS.iter().enumerate() {
        let conn = lean(&dir.join(format!("part{i}.db")), true);
        if let Some(body) = body {
            replace_body(&conn, body);
        }
        let ms = median_update(&conn);
        println!("| {what} | {ms:.1} ms | ×{:.2} |", ms / base);
    }
    println!(
        "| no trigger, again | {:.1} ms | - |",
        median_update(&plain)
    );
}

/// A WAL database with the lean table and its rows (tracked as owned).
fn lean(path: &std::path::Path, tracked: bool) -> Connection {
    let conn = Connection::open(path).expect("open");
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .expect("pragmas");
    if tracked {
        // SAFETY: loading the extension this workspace built.
        unsafe {
            conn.load_extension_enable().expect("enable");
            conn.load_extension(extension_path(), None::<&str>)
                .expect("load");
        }
    }
    conn.execute_batch(
        "CREATE TABLE lean(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, a INTEGER, b TEXT, c REAL);
         CREATE TABLE log(seq INTEGER PRIMARY KEY, tbl INTEGER, rid INTEGER, hlc INTEGER);",
    )
    .expect("schema");
    if tracked {
        conn.execute_batch("SELECT sdsync_track('lean', 'owned')")
            .expect("track");
    }
    conn.execute_batch(&format!(
        "BEGIN; WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {ROWS})
         INSERT INTO lean(uuid, a, b, c) SELECT printf('u%08d', i), i, 'name' || i, i * 0.5 FROM s; COMMIT;"
    ))
    .expect("rows");
    conn
}

/// Replaces the update trigger's body, keeping its `WHEN` clause.
fn replace_body(conn: &Connection, body: &str) {
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'sdsync_upd_lean'",
            [],
            |r| r.get(0),
        )
        .expect("trigger");
    let head = &sql[..sql.find(" BEGIN ").expect("a trigger body")];
    conn.execute_batch(&format!(
        "BEGIN; DROP TRIGGER sdsync_upd_lean; {head} BEGIN {body} END; COMMIT;"
    ))
    .expect("replace the body");
}

/// The median of five `UPDATE`s of every row, each in its own transaction.
fn median_update(conn: &Connection) -> f64 {
    let mut ms: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            conn.execute_batch("BEGIN; UPDATE lean SET a = a + 1; COMMIT;")
                .expect("update");
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[2]
}
