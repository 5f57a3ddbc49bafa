//! A pull whose link goes down goes to another peer at once (session 25):
//! real `sdsync run` processes on loopback, anti-entropy Hellos switched
//! off after the first, so nothing but the failover can finish the backfill.

use sdsync_tests::devices::{Device, QUIET, QUIET_AND_SLOW, cli};
use sdsync_tests::{temp_dir, wait_for};

/// C backfills A's 20,000 tags from A, slowly (pages of 2, one at a time);
/// B, which holds them all, connects meanwhile; A is killed. C takes the
/// rest from B as soon as its link to A is down (QUIC's idle timeout),
/// where it used to wait for B's next Hello (every 5 s by default; a
/// user's trial saw a receiver idle for 8 s while a caught-up device could
/// serve it).
#[test]
fn a_backfill_whose_sender_dies_goes_on_from_another_peer() {
    let dir = temp_dir("pull-failover");
    let mut a = Device::init(&dir, "a", None);
    let mut b = Device::init(&dir, "b", Some(&a.library()));
    let mut c = Device::init(&dir, "c", Some(&a.library()));
    for (x, y) in [(&a, &b), (&a, &c), (&b, &c)] {
        x.pair(y);
        y.pair(x);
    }
    a.app().exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
         INSERT INTO tags(uuid, canonical_name) SELECT 'tag-' || i, 'tag ' || i FROM n",
    );
    let count = |d: &Device| d.app().count("tags");
    a.start_with(&QUIET);
    b.start_with(&QUIET);
    wait_for("B to hold A's tags", 60, || count(&b) == 20_000);
    b.kill();
    a.kill();
    a.start_with(&QUIET_AND_SLOW);
    c.start_with(&QUIET);
    wait_for("C to be taking A's tags from A", 60, || count(&c) > 0);
    b.start_with(&QUIET);
    let linked = |d: &Device, peer: &Device| {
        let s: serde_json::Value =
            serde_json::from_str(&cli(&["status", d.dir.to_str().expect("utf-8"), "--json"]))
                .expect("JSON");
        s["peers"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["device"] == peer.id.as_str() && p["connected"] == true)
        })
    };
    wait_for("B and C linked", 60, || linked(&c, &b));
    assert!(count(&c) < 20_000, "the test needs C still behind");
    a.kill();
    wait_for("C to hold all of A's tags, from B", 90, || {
        count(&c) == 20_000
    });
    assert_eq!(b.app().digest(), c.app().digest());
}
