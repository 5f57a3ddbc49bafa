//! `sdsync status --json` against known states (issue 10): lag in changes
//! and in seconds while a device backfills, nothing once it holds all.

use sdsync_tests::devices::{cli, pair_of};
use sdsync_tests::wait_for;

#[test]
fn status_tells_lag_in_changes_and_seconds_while_a_device_catches_up() {
    let (_dir, mut a, mut b) = pair_of("status-lag");
    a.app().exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
         INSERT INTO tags(uuid, canonical_name) SELECT 'tag-' || i, 'tag ' || i FROM n",
    );
    // Tiny pages, one at a time: B takes A's 20,000 changes in 10,000 round
    // trips, seconds even on a fast machine (lag is recorded every 0.5 s).
    a.start_with(&["--set", "page_rows=2", "--set", "window=1"]);
    b.start();
    let dir = b.dir.to_str().expect("utf-8").to_string();
    let status = || -> serde_json::Value {
        serde_json::from_str(&cli(&["status", &dir, "--json"])).expect("JSON")
    };
    wait_for(
        "B to report lag on A's origin, in changes and seconds",
        60,
        || {
            let s = status();
            s["lag"].as_array().is_some_and(|l| {
                l.iter().any(|x| {
                    x["origin"] == a.id.as_str()
                        && x["changes"].as_i64().is_some_and(|n| n > 0)
                        && x["seconds"].as_u64().is_some()
                })
            })
        },
    );
    let text = cli(&["status", &dir]);
    assert!(
        text.contains(&format!("behind      on {} by", a.id)),
        "{text}"
    );
    wait_for("B to hold all of A, lag gone", 120, || {
        let s = status();
        s["lag"] == serde_json::json!([]) && b.app().count("tags") == 20000
    });
    assert_eq!(a.app().digest(), b.app().digest());
}

/// Two devices of different libraries pinned to each other by mistake: each
/// says why (a WARN naming both libraries), nothing repeats on the
/// anti-entropy rounds that follow (no storm), and `status` names the
/// refusal.
#[test]
fn two_libraries_pinned_by_mistake_refuse_each_other_once_without_a_storm() {
    use sdsync_tests::devices::Device;
    let dir = sdsync_tests::temp_dir("two-libraries");
    let mut a = Device::init(&dir, "a", None);
    let mut b = Device::init(&dir, "b", None);
    assert_ne!(a.library(), b.library());
    a.pair(&b);
    b.pair(&a);
    // Anti-entropy every 100 ms: a storm would show within the window below.
    let fast = ["--set", "anti_entropy_ms=100"];
    a.start_with(&fast);
    b.start_with(&fast);
    let refused = |d: &Device| -> String {
        let s: serde_json::Value =
            serde_json::from_str(&cli(&["status", d.dir.to_str().expect("utf-8"), "--json"]))
                .expect("JSON");
        s["peers"][0]["refused"].as_str().unwrap_or("").to_string()
    };
    wait_for("both to show the refusal", 30, || {
        !refused(&a).is_empty() && !refused(&b).is_empty()
    });
    let reason = refused(&a);
    assert!(
        reason.contains("wrong library") && reason.contains(&a.library()),
        "{reason}"
    );
    // The point of the test is what does not happen: after the first
    // exchange (each side refuses what the other sent before it heard the
    // refusal: one message per connection, at most two connections), 20
    // anti-entropy rounds add nothing.
    let log = |d: &Device| std::fs::read_to_string(d.dir.join("syncer.log")).expect("syncer.log");
    let counts = |d: &Device| {
        let log = log(d);
        (
            log.matches("event=Refused {").count(),
            log.matches("WARN").count(),
        )
    };
    let before = (counts(&a), counts(&b));
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!((counts(&a), counts(&b)), before, "{}\n{}", log(&a), log(&b));
    for (refusals, warnings) in [before.0, before.1] {
        assert!((1..=2).contains(&refusals) && (1..=2).contains(&warnings));
    }
}
