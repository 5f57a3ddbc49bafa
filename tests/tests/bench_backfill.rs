//! Backfill benchmark (issue 9), not a test: a new device takes a library of
//! 1,000,000 entries (plus 100,000 content identities, a 3-level directory
//! tree, v7 uuids, and the location's totals updated after its entries, as an
//! indexer does) from one peer over QUIC on 127.0.0.1. Ignored by `cargo
//! test`; run with
//!
//! ```text
//! cargo build --release --workspace
//! SDSYNC_BENCH_ENTRIES=1000000 cargo test --release -p sdsync-tests --test bench_backfill -- --ignored --nocapture
//! ```
//!
//! The reference, measured in the same run: the same rows copied into a plain
//! (untracked) database with `ATTACH` and `INSERT … SELECT`. Reports wall time,
//! the ratio, and each syncer's CPU time and peak RSS (from /proc). Meanwhile
//! an app on B commits one row every 20 ms: its commit latency (p50, p99,
//! max) is what an app feels while a backfill applies (`SDSYNC_BENCH_APP=0`
//! runs the backfill alone).

use std::time::{Duration, Instant};

use rusqlite::Connection;
use sdsync_tests::devices::{Device, pair_of, usage};
use sdsync_tests::{Lib, load, watermarks};

#[test]
#[ignore = "benchmark: run with --ignored"]
fn backfill_a_large_library() {
    let entries: i64 = env("SDSYNC_BENCH_ENTRIES", 1_000_000);
    let (dir, mut a, mut b) = pair_of("bench-backfill");
    let app_a = a.app();
    let made = Instant::now();
    index(&app_a, entries);
    println!(
        "A indexed {entries} entries in {:.1} s",
        made.elapsed().as_secs_f64()
    );

    let reference = copy_reference(&a, &dir.join("plain.db"));

    let app_b = b.app();
    let issued = held(&app_a, &a.id);
    let start = Instant::now();
    a.start();
    b.start();
    let writer = (env("SDSYNC_BENCH_APP", 1) == 1).then(|| app_writer(&b, &a.id, issued));
    let patience = Duration::from_secs(env("SDSYNC_BENCH_PATIENCE", 600) as u64);
    let mut last_report = Instant::now();
    while held(&app_b, &a.id) < issued && start.elapsed() < patience {
        if last_report.elapsed() > Duration::from_secs(5) {
            println!(
                "  {:.0} s: B holds {} of {issued}, {} entries visible",
                start.elapsed().as_secs_f64(),
                held(&app_b, &a.id),
                app_b.count("entries")
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = start.elapsed().as_secs_f64();
    let done = held(&app_b, &a.id) >= issued;
    let usage = [usage(&a), usage(&b)];
    let latencies = writer.map(|w| w.join().expect("app writer"));
    a.kill();
    b.kill();
    // The app's own rows on B (audit_log) are not A's: compared without them.
    let library = |lib: &Lib| {
        let mut d = lib.digest();
        d.remove("audit_log");
        d
    };
    let same = library(&app_b) == library(&app_a);
    println!(
        "\nbackfill of {entries} entries (+{} content ids, tree, location updated last)\n\
         sdsync over QUIC: {} ({:.1} s wall, ×{:.1} of the reference), digests {}\n\
         reference (ATTACH + INSERT … SELECT into a plain database): {reference:.2} s\n\
         syncer A (sender): {}\nsyncer B (receiver): {}\n\
         an app on B committing one row every 20 ms meanwhile: {}",
        entries / 10,
        if done { "complete" } else { "NOT COMPLETE" },
        wall,
        wall / reference,
        if same { "identical" } else { "DIFFER" },
        usage[0],
        usage[1],
        latencies.map_or("not run (SDSYNC_BENCH_APP=0)".into(), percentiles),
    );
    assert!(done && same, "B took the whole library");
}

/// An app on B committing one small row every 20 ms until B holds `origin`
/// up to `issued` (at most 10 minutes): each commit's latency, in ms,
/// including its wait for the syncer's write lock.
fn app_writer(b: &Device, origin: &str, issued: i64) -> std::thread::JoinHandle<Vec<f64>> {
    let db = b.database();
    let origin = origin.to_string();
    std::thread::spawn(move || {
        let lib = Lib::open(&db);
        lib.conn
            .busy_timeout(Duration::from_secs(30))
            .expect("busy timeout");
        let mut out = Vec::new();
        let start = Instant::now();
        while held(&lib, &origin) < issued && start.elapsed() < Duration::from_secs(600) {
            let t = Instant::now();
            lib.conn
                .execute_batch(
                    "BEGIN IMMEDIATE;
                     INSERT INTO audit_log(uuid, action) VALUES (sdsync_uuid(), 'app write');
                     COMMIT;",
                )
                .expect("app commit");
            out.push(t.elapsed().as_secs_f64() * 1000.0);
            std::thread::sleep(Duration::from_millis(20));
        }
        out
    })
}

/// `n commits, p50 …, p99 …, max … ms`.
fn percentiles(mut ms: Vec<f64>) -> String {
    if ms.is_empty() {
        return "no commits".into();
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    format!(
        "{} commits, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

/// What an indexer writes: content identities, a location, a directory tree
/// (10 top-level directories, 1,000 below them, files below those), in
/// transactions of 100,000 rows, then the location's totals.
fn index(app: &Lib, entries: i64) {
    let contents = (entries / 10).max(1);
    app.exec(&format!(
        "BEGIN;
         INSERT INTO locations(uuid, name, path) VALUES (sdsync_uuid(), 'Home', '/home/me');
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {contents})
           INSERT INTO content_identities(uuid, content_hash, size, kind)
           SELECT sdsync_uuid(), printf('%064x', i), i * 13, 'file' FROM n;
         {}
           INSERT INTO entries(uuid, location_id, name, kind)
           SELECT sdsync_uuid(), 1, 'top' || value, 'dir' FROM s;
         {}
           INSERT INTO entries(uuid, location_id, parent_id, name, kind)
           SELECT sdsync_uuid(), 1, 1 + value % 10, 'dir' || value, 'dir' FROM s;
         COMMIT;",
        series(1, 10),
        series(1, 1000)
    ));
    let files = entries - 1010;
    let mut from = 1;
    while from <= files {
        let to = (from + 99_999).min(files);
        app.exec(&format!(
            "BEGIN;
             {}
             INSERT INTO entries(uuid, location_id, parent_id, content_id, name, extension, size, inode)
               SELECT sdsync_uuid(), 1, 11 + value % 1000, 1 + value % {contents},
                      'IMG_' || value || '.jpg', 'jpg', value * 7, value
               FROM s;
             COMMIT;",
            series(from, to)
        ));
        from = to + 1;
    }
    app.exec(
        "UPDATE locations SET total_file_count = (SELECT count(*) FROM entries WHERE kind = 'file'),
                              total_byte_size = (SELECT sum(size) FROM entries), scan_state = 'done'",
    );
}

/// A `WITH` clause naming the integers `from..=to` `s(value)`.
fn series(from: i64, to: i64) -> String {
    format!(
        "WITH RECURSIVE s(value) AS (SELECT {from} UNION ALL SELECT value + 1 FROM s WHERE value < {to})"
    )
}

/// Seconds to copy the same rows into a fresh untracked database in one
/// transaction with `ATTACH` and `INSERT … SELECT`.
fn copy_reference(a: &Device, plain: &std::path::Path) -> f64 {
    let conn = Connection::open(plain).expect("plain");
    conn.execute_batch("PRAGMA journal_mode = WAL")
        .expect("wal");
    let schema: String = sdsync_syncer::library::LIBRARY_SQL
        .lines()
        .filter(|l| !l.starts_with("SELECT sdsync_track"))
        .collect::<Vec<_>>()
        .join("\n");
    load(&conn);
    conn.execute_batch(&schema).expect("schema");
    let from = a.database();
    let start = Instant::now();
    conn.execute_batch(&format!(
        "ATTACH '{}' AS a;
         BEGIN;
         INSERT INTO main.locations SELECT * FROM a.locations;
         INSERT INTO main.content_identities SELECT * FROM a.content_identities;
         INSERT INTO main.entries SELECT * FROM a.entries;
         COMMIT;
         DETACH a;",
        from.display()
    ))
    .expect("copy");
    start.elapsed().as_secs_f64()
}

fn held(lib: &Lib, origin: &str) -> i64 {
    watermarks(&lib.conn)
        .into_iter()
        .find(|(o, _)| o == origin)
        .map_or(0, |(_, s)| s)
}

fn env(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
