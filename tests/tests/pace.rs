//! App writers wait after their commits while the pace file says so (issue 9:
//! backpressure), and only then: a commit that captured nothing, a connection
//! that opted out (`sdsync_pace(0)`, as the syncer's own does), a word that
//! expired, or a database without the file never waits. Real WAL files and
//! the extension; the syncer's controller has unit tests of its own
//! (`syncer/src/daemon/pace.rs`), its effect is in `bench_live`.

use std::time::Duration;

use sdsync_core::pace;
use sdsync_tests::{Lib, now_ms, temp_dir};

/// Asks writers of `lib` to wait `wait_us` after each commit for the next 60 s.
fn pace_writers(lib: &Lib, wait_us: u32) {
    let until = u64::try_from(now_ms()).expect("after 1970") + 60_000;
    std::fs::write(pace::path(&lib.path), pace::encode(wait_us, until)).expect("pace file");
}

fn paced(lib: &Lib) -> i64 {
    lib.int("SELECT sdsync_paced()")
}

fn insert(lib: &Lib, name: &str) {
    lib.exec(&format!(
        "INSERT INTO tags(uuid, canonical_name) VALUES ('{name}', '{name}')"
    ));
}

#[test]
fn a_commit_that_captured_changes_waits_as_the_pace_file_says() {
    let dir = temp_dir("pace");
    let path = dir.join("database.db");
    let setup = Lib::create(&path);
    pace_writers(&setup, 30_000);
    let app = Lib::open(&path);
    let started = std::time::Instant::now();
    insert(&app, "t1");
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert_eq!(paced(&app), 30_000);
    // Reads and a commit that wrote no tracked row do not wait.
    app.exec("BEGIN; SELECT count(*) FROM tags; COMMIT");
    app.exec("CREATE TABLE notes(x); INSERT INTO notes VALUES (1)");
    assert_eq!(paced(&app), 30_000);
    insert(&app, "t2");
    assert_eq!(paced(&app), 60_000);
}

#[test]
fn a_connection_that_opted_out_never_waits() {
    let dir = temp_dir("pace-off");
    let path = dir.join("database.db");
    let setup = Lib::create(&path);
    pace_writers(&setup, 30_000);
    let app = Lib::open(&path);
    assert_eq!(app.int("SELECT sdsync_pace(0)"), 0);
    insert(&app, "t1");
    assert_eq!(paced(&app), 0);
    assert_eq!(app.int("SELECT sdsync_pace(1)"), 1);
    insert(&app, "t2");
    assert_eq!(paced(&app), 30_000);
}

#[test]
fn an_expired_word_or_no_file_paces_no_one() {
    let dir = temp_dir("pace-expired");
    let path = dir.join("database.db");
    let setup = Lib::create(&path);
    let app = Lib::open(&path);
    insert(&app, "t1");
    assert_eq!(paced(&app), 0, "no pace file");
    let past = u64::try_from(now_ms()).expect("after 1970") - 1;
    std::fs::write(pace::path(&path), pace::encode(30_000, past)).expect("pace file");
    let late = Lib::open(&path);
    insert(&late, "t2");
    assert_eq!(paced(&late), 0, "expired");
    drop(setup);
}
