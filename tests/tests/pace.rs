//! App writers wait after their commits while the pace file says so (issue 9:
//! backpressure), per row they captured, and only then: a commit that
//! captured nothing, a connection that opted out (`sdsync_pace(0)`, as the
//! syncer's own does), a word that expired, or a database without the file
//! never waits; and the wait holds no lock, so another connection writes
//! meanwhile. Real WAL files and the extension; the syncer's controller has
//! unit tests of its own (`syncer/src/daemon/pace.rs`), its effect is in
//! `bench_live`.

use std::time::Duration;

use sdsync_core::pace;
use sdsync_tests::{Lib, now_ms, temp_dir, wait_for};

/// One millisecond per row written.
const MS_PER_ROW: u32 = 1_000_000;

/// Asks writers of the database at `path` to wait `per_row_ns` per row
/// written after each commit, for the next 5 s.
fn pace_writers(path: &std::path::Path, per_row_ns: u32) {
    let until = u64::try_from(now_ms()).expect("after 1970") + 5_000;
    std::fs::write(pace::path(path), pace::encode(per_row_ns, until)).expect("pace file");
}

/// Microseconds the connection waited in all.
fn paced(lib: &Lib) -> i64 {
    lib.int("SELECT sdsync_paced()")
}

/// One statement inserting `n` tags named `name-1` … `name-n`.
fn insert(lib: &Lib, name: &str, n: u32) {
    lib.exec(&format!(
        "WITH RECURSIVE i(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM i WHERE k < {n})
         INSERT INTO tags(uuid, canonical_name) SELECT '{name}-' || k, '{name}-' || k FROM i"
    ));
}

fn library(name: &str) -> (Lib, std::path::PathBuf) {
    let path = temp_dir(name).join("database.db");
    (Lib::create(&path), path)
}

#[test]
fn a_commit_that_captured_changes_waits_per_row_as_the_pace_file_says() {
    let (_setup, path) = library("pace");
    pace_writers(&path, MS_PER_ROW);
    let app = Lib::open(&path);
    let started = std::time::Instant::now();
    insert(&app, "a", 30);
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert_eq!(paced(&app), 30_000);
    // A commit that wrote no tracked row does not wait.
    app.exec("CREATE TABLE notes(x); INSERT INTO notes VALUES (1)");
    assert_eq!(paced(&app), 30_000);
    insert(&app, "b", 2);
    assert_eq!(paced(&app), 32_000);
}

#[test]
fn another_connection_writes_while_a_commit_waits() {
    let (_setup, path) = library("pace-lock");
    pace_writers(&path, MS_PER_ROW);
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            let app = Lib::open(&path);
            insert(&app, "slow", 500); // waits 500 ms after its commit
            paced(&app)
        })
    };
    let other = Lib::open(&path);
    other.exec("SELECT sdsync_pace(0)");
    wait_for("the paced commit", 10, || other.count("tags") == 500);
    // No busy timeout: a lock held through the wait would fail this at once.
    other
        .conn
        .busy_timeout(Duration::ZERO)
        .expect("busy timeout");
    other.exec("BEGIN IMMEDIATE; INSERT INTO tags(uuid, canonical_name) VALUES ('x', 'x'); COMMIT");
    assert_eq!(writer.join().expect("writer"), 500_000);
    assert_eq!(other.count("tags"), 501);
}

#[test]
fn a_connection_that_opted_out_never_waits() {
    let (_setup, path) = library("pace-off");
    pace_writers(&path, MS_PER_ROW);
    let app = Lib::open(&path);
    assert_eq!(app.int("SELECT sdsync_pace(0)"), 0);
    insert(&app, "a", 10);
    assert_eq!(paced(&app), 0);
    assert_eq!(app.int("SELECT sdsync_pace(1)"), 1);
    insert(&app, "b", 10);
    assert_eq!(paced(&app), 10_000);
}

#[test]
fn an_expired_word_or_no_file_paces_no_one() {
    let (_setup, path) = library("pace-expired");
    let app = Lib::open(&path);
    insert(&app, "a", 10);
    assert_eq!(paced(&app), 0, "no pace file");
    let past = u64::try_from(now_ms()).expect("after 1970") - 1;
    std::fs::write(pace::path(&path), pace::encode(MS_PER_ROW, past)).expect("pace file");
    let late = Lib::open(&path);
    insert(&late, "b", 10);
    assert_eq!(paced(&late), 0, "expired");
}

/// A new device's apps are not paced while it backfills: its peers lag on
/// its changes then because its own syncer is busy applying, not because
/// its apps write faster than a link (a user's trial, session 25: 500-row
/// commits on the joining device took up to 935 ms, the log saying
/// "pacing app writers: a peer is 1362 ms behind"). Real processes: A holds
/// 200,000 tags; B joins and writes 500 tags every 50 ms until it holds
/// them all.
#[test]
fn a_device_catching_up_paces_none_of_its_own_apps() {
    use sdsync_tests::devices::pair_of;
    let (_dir, mut a, mut b) = pair_of("pace-joining");
    a.app().exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) \
         INSERT INTO tags(uuid, canonical_name) SELECT 'a-' || i, 'a ' || i FROM n",
    );
    a.start();
    b.start();
    let app = b.app();
    let mut round = 0;
    wait_for("B to hold A's tags while its app writes", 180, || {
        round += 1;
        app.exec(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) \
             INSERT INTO tags(uuid, canonical_name) SELECT 'b-{round}-' || i, 'b' FROM n"
        ));
        std::thread::sleep(Duration::from_millis(50));
        app.int("SELECT count(*) FROM tags WHERE uuid LIKE 'a-%'") == 200_000
    });
    let log = std::fs::read_to_string(b.dir.join("syncer.log")).unwrap_or_default();
    assert!(!log.contains("pacing app writers"), "{log}");
    assert_eq!(paced(&app), 0);
}
