//! The app's writers' share of the library's write lock (issue 9): while an
//! app writes, a page applies in short transactions (`sqlstore::split`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sdsync_syncer::library::Change;
use sdsync_syncer::proto::store::Store;
use sdsync_syncer::sqlstore::SqlStore;
use sdsync_syncer::sqlstore::quarantine::RETRY_BATCH;
use sdsync_syncer::sqlstore::split::FIRST_PART;
use sdsync_tests::devices::pair_of;
use sdsync_tests::wire::store;
use sdsync_tests::{Lib, wait_for};

/// A page of `n` tags from a fresh origin, and the origin.
fn page_of_tags(n: usize) -> (String, Vec<Change>) {
    let o = store("parts-o");
    let origin = o.device().unwrap();
    o.lib
        .exec(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
             INSERT INTO tags(uuid, canonical_name) SELECT 't' || i, 'n' || i FROM n"
        ))
        .unwrap();
    let changes = o.slice(&origin, 0, 2_000, 1 << 30).unwrap().changes;
    assert_eq!(changes.len(), n);
    (origin, changes)
}

/// Makes `c` carry a value no SQLite column takes (it is quarantined where
/// it applies).
fn spoil(c: &mut Change) {
    c.data = Some(r#"{"canonical_name":true}"#.into());
}

/// A page of 1,000 tags whose 600th change is spoilt.
fn page_with_a_bad_change() -> (String, Vec<Change>) {
    let (origin, mut changes) = page_of_tags(1_000);
    spoil(&mut changes[599]);
    (origin, changes)
}

/// Counts `r`'s commits; the `veto`-th one is turned into a rollback.
fn count_commits(r: &mut SqlStore, veto: usize) -> Arc<AtomicUsize> {
    let commits = Arc::new(AtomicUsize::new(0));
    let seen = commits.clone();
    r.lib
        .conn
        .commit_hook(Some(move || {
            seen.fetch_add(1, Ordering::SeqCst) + 1 == veto
        }))
        .unwrap();
    commits
}

fn held(r: &SqlStore, origin: &str) -> i64 {
    let marks = r.watermarks().unwrap();
    marks
        .into_iter()
        .find(|(o, _)| o == origin)
        .map_or(0, |m| m.1)
}

/// A 1,000-change page in parts of 250 (as the simulation splits): four
/// commits; the bad change is quarantined in its part, the others apply. Only
/// the last part vouches for the watermark: when its commit is lost (turned
/// into a rollback here, as a crash would lose it), the three parts before it
/// stay applied, nothing is claimed, and applying the page again completes it
/// exactly.
#[test]
fn a_page_applies_in_parts_and_only_the_last_vouches() {
    let (origin, changes) = page_with_a_bad_change();
    let mut r = store("parts-r");
    r.split_always(Some(250));
    let commits = count_commits(&mut r, 4);
    let err = r.apply(&origin, &changes, Some((&origin, 1_000)));
    assert!(err.is_err(), "the last part's commit was vetoed");
    assert_eq!(
        commits.load(Ordering::SeqCst),
        4,
        "parts 1–3 (the third after its fallback), 4"
    );
    assert_eq!(
        r.lib.count("tags").unwrap(),
        749,
        "three parts but the bad change"
    );
    assert_eq!(held(&r, &origin), 0, "nothing vouched before the last part");
    assert_eq!(r.quarantine_summary().unwrap().len(), 1);

    r.lib.conn.commit_hook(None::<fn() -> bool>).unwrap();
    let quarantined = r.apply(&origin, &changes, Some((&origin, 1_000))).unwrap();
    let seqs: Vec<i64> = quarantined.iter().map(|q| q.seq).collect();
    assert_eq!(seqs, vec![changes[599].seq], "the bad change, once more");
    assert_eq!(r.lib.count("tags").unwrap(), 999);
    assert_eq!(held(&r, &origin), 1_000);
}

/// While an app writes, a page is split by itself: the first part is
/// `FIRST_PART` changes (the pace is not known yet; later parts are as large
/// as fit in the run at the pace measured), and the page completes exactly.
#[test]
fn while_an_app_writes_a_page_is_split() {
    let (origin, changes) = page_with_a_bad_change();
    let mut r = store("parts-app");
    r.room.borrow_mut().app_committed(Instant::now());
    count_commits(&mut r, 2);
    let err = r.apply(&origin, &changes, Some((&origin, 1_000)));
    assert!(err.is_err(), "the second part's commit was vetoed");
    assert_eq!(
        r.lib.count("tags").unwrap(),
        FIRST_PART as i64,
        "the first part"
    );
    r.lib.conn.commit_hook(None::<fn() -> bool>).unwrap();
    r.apply(&origin, &changes, Some((&origin, 1_000))).unwrap();
    assert_eq!(r.lib.count("tags").unwrap(), 999);
    assert_eq!(held(&r, &origin), 1_000);
}

/// While an app writes, an automatic retry of the quarantine takes only what
/// fits in the run (the first time `FIRST_PART` changes), not a whole batch
/// of `RETRY_BATCH`: it holds the write lock throughout. Without an app, one
/// round retries the whole batch.
#[test]
fn while_an_app_writes_a_quarantine_retry_is_split() {
    for app in [true, false] {
        let (origin, mut changes) = page_of_tags(600);
        // Every change is quarantined, and stays.
        changes.iter_mut().for_each(spoil);
        let r = store(if app { "retry-app" } else { "retry-alone" });
        let quarantined = r.apply(&origin, &changes, Some((&origin, 600))).unwrap();
        assert_eq!(quarantined.len(), 600);
        // Something changed since they were tried: the next round retries.
        r.lib
            .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('local', 'l')")
            .unwrap();
        if app {
            r.room.borrow_mut().app_committed(Instant::now());
        }
        let retried = r.retry_quarantined().unwrap();
        let batch = if app { FIRST_PART } else { RETRY_BATCH };
        assert_eq!(retried.kept, batch, "app writing: {app}");
        assert_eq!(retried.applied, 0);
    }
}

/// Without an app writing the page is one transaction, as before.
#[test]
fn without_an_app_a_page_is_one_transaction() {
    let (origin, changes) = page_with_a_bad_change();
    let mut r = store("parts-alone");
    let commits = count_commits(&mut r, usize::MAX);
    r.apply(&origin, &changes, Some((&origin, 1_000))).unwrap();
    assert_eq!(
        commits.load(Ordering::SeqCst),
        1,
        "the fallback's one commit"
    );
    assert_eq!(r.lib.count("tags").unwrap(), 999);
    assert_eq!(held(&r, &origin), 1_000);
}

/// Real processes: B's app commits a row every 10 ms while B backfills
/// 50,000 entries from A (so B applies pages in parts, pausing between them)
/// and B's syncer is SIGKILLed three times as soon as it made progress: B
/// ends with every entry, A with every row B's app wrote, the digests equal
/// and nothing parked.
#[test]
fn a_receiver_killed_while_its_app_writes_during_a_backfill_loses_nothing() {
    const ENTRIES: i64 = 50_000;
    let (_dir, mut a, mut b) = pair_of("parts-killed");
    let app_a = a.app();
    app_a.exec(&format!(
        "INSERT INTO locations(uuid, name, path) VALUES ('loc', 'Photos', '/p');
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ENTRIES})
           INSERT INTO entries(uuid, name, size, location_id) SELECT 'e' || i, 'f' || i, i, 1 FROM n;"
    ));
    a.start();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (b.database(), stop.clone());
        std::thread::spawn(move || {
            let lib = Lib::open(&db);
            lib.conn
                .busy_timeout(Duration::from_secs(30))
                .expect("busy timeout");
            let mut written = 0;
            while !stop.load(Ordering::SeqCst) {
                lib.exec("INSERT INTO audit_log(uuid, action) VALUES (sdsync_uuid(), 'app')");
                written += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            written
        })
    };
    let app_b = b.app();
    for round in 1..=3 {
        let before = app_b.count("entries");
        b.start();
        wait_for(&format!("progress in round {round}"), 60, || {
            app_b.count("entries") > before || app_b.count("entries") == ENTRIES
        });
        b.kill();
    }
    b.start();
    wait_for("B holds every entry", 120, || {
        app_b.count("entries") == ENTRIES
    });
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().expect("app writer");
    wait_for("converged", 60, || app_a.digest() == app_b.digest());
    assert_eq!(app_b.count("audit_log"), written);
    assert_eq!(app_a.count("audit_log"), written);
    assert_eq!(app_b.int("SELECT count(*) FROM sdsync_parked"), 0);
}
