//! `sdsync status --json` against known states (issue 10): lag in changes
//! and in seconds while a device backfills, nothing once it holds all.

use sdsync_tests::devices::{QUIET, QUIET_AND_SLOW, cli, pair_of};
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
    // Stopped, B still tells how far behind it is, but not for how long:
    // that is what a running syncer sees (it read "for 0 s").
    b.kill();
    let s = status();
    let lag = &s["lag"][0];
    assert!(lag["changes"].as_i64().is_some_and(|n| n > 0), "{s}");
    assert_eq!(lag["seconds"], serde_json::Value::Null, "{s}");
    let text = cli(&["status", &dir]);
    assert!(
        text.contains(&format!("behind      on {} by", a.id)) && !text.contains(" s (holds"),
        "{text}"
    );
    b.start();
    wait_for("B to hold all of A, lag gone", 120, || {
        let s = status();
        s["lag"] == serde_json::json!([]) && b.app().count("tags") == 20000
    });
    assert_eq!(a.app().digest(), b.app().digest());
}

/// A burst of commits on a running peer shows as lag on the receiver while
/// its pages stream in, with the burst's full size: the pages of the
/// sender's own changes carry its clock. Before, the receiver learned how far
/// the sender went only from its Hellos (every 5 s by default; here never
/// after the first), so a catch-up of seconds showed no lag at all (a
/// user's trial, session 25).
#[test]
fn a_burst_on_a_running_peer_shows_as_lag_with_its_full_size() {
    let (_dir, mut a, mut b) = pair_of("status-burst");
    a.app()
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('first', 'first')");
    a.start_with(&QUIET_AND_SLOW);
    b.start_with(&QUIET);
    wait_for("B to hold A's first tag", 30, || b.app().count("tags") == 1);
    a.app().exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
         INSERT INTO tags(uuid, canonical_name) SELECT 'tag-' || i, 'tag ' || i FROM n",
    );
    let top = a.app().int("SELECT seq FROM sdsync_clock");
    let dir = b.dir.to_str().expect("utf-8").to_string();
    let mut seen = None;
    wait_for(
        "B to hold all of A, noting the lag it shows meanwhile",
        120,
        || {
            let s: serde_json::Value =
                serde_json::from_str(&cli(&["status", &dir, "--json"])).expect("JSON");
            if let Some(lag) = s["lag"]
                .as_array()
                .and_then(|l| l.iter().find(|x| x["origin"] == a.id.as_str()))
            {
                seen =
                    Some(lag["held"].as_i64().unwrap_or(0) + lag["changes"].as_i64().unwrap_or(0));
            }
            b.app().count("tags") == 20001 && s["lag"] == serde_json::json!([])
        },
    );
    assert_eq!(
        seen,
        Some(top),
        "the lag B showed ends at A's newest change"
    );
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

/// `status` reads; it must answer while an app (an indexer's large
/// transaction) or the syncer's own apply holds the write lock, which used
/// to fail it after a second with "database is locked" (a user's trial,
/// session 25).
#[test]
fn status_answers_while_another_connection_holds_the_write_lock() {
    let (_dir, mut a, b) = pair_of("status-locked");
    a.app()
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one')");
    // The syncer has run once (it makes the tables status reads).
    a.start();
    let running = || -> bool {
        let s: serde_json::Value =
            serde_json::from_str(&cli(&["status", a.dir.to_str().expect("utf-8"), "--json"]))
                .expect("JSON");
        s["syncer_pid"].is_string()
    };
    wait_for("A's syncer to start", 30, running);
    let lock = rusqlite::Connection::open(a.dir.join("database.db")).expect("open");
    lock.execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    let dir = a.dir.to_str().expect("utf-8");
    let started = std::time::Instant::now();
    let status: serde_json::Value =
        serde_json::from_str(&cli(&["status", dir, "--json"])).expect("JSON");
    let took = started.elapsed();
    assert_eq!(status["device"].as_str(), Some(a.id.as_str()), "{status}");
    assert!(
        status["peers"].as_array().is_some_and(|p| p.len() == 1),
        "{status}"
    );
    // A reader never waits for a writer in WAL mode: well under the busy
    // timeouts (1 s for the syncer's connection, 5 s for the library's).
    assert!(took < std::time::Duration::from_millis(900), "{took:?}");
    lock.execute_batch("ROLLBACK").expect("release");
    drop(b);
}

/// `sdsync status DIR | head -1`: a reader that closes the pipe ends the
/// command as it ends any Unix tool, by SIGPIPE, with nothing on stderr (it
/// panicked: "failed printing to stdout: Broken pipe", a user's trial).
#[test]
fn status_into_a_closed_pipe_ends_quietly() {
    let dir = sdsync_tests::temp_dir("status-pipe").join("lib");
    cli(&["init", dir.to_str().expect("utf-8")]);
    let mut child = std::process::Command::new(sdsync_tests::devices::sdsync())
        .args(["status", dir.to_str().expect("utf-8")])
        .env("SDSYNC_EXTENSION", sdsync_tests::extension_path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sdsync");
    // The reader goes before the first line is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// After a restore's renumbering (this device's changes moved above 2^20),
/// what a peer lacks of them is counted in changes, not as the distance
/// between two numbers (a user's trial read "lacks 1076083 of this device's
/// changes" of 30,000).
#[test]
fn what_a_peer_lacks_after_a_renumbering_is_counted_in_changes() {
    let (_dir, mut a, mut b) = pair_of("status-renumbered");
    a.app()
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one'), ('t2', 'two')");
    a.start();
    b.start();
    let dir = a.dir.to_str().expect("utf-8").to_string();
    let status = || -> serde_json::Value {
        serde_json::from_str(&cli(&["status", &dir, "--json"])).expect("JSON")
    };
    wait_for("A to record that B holds its two changes", 60, || {
        status()["peers"][0]["lacks_of_ours"] == 0 && b.app().count("tags") == 2
    });
    b.stop();
    a.stop();
    a.app().exec("SELECT sdsync_restamp(1048576)");
    assert!(a.app().int("SELECT seq FROM sdsync_clock") > 1_048_576);

    let s = status();

    // Every current change of A (its tags, and the device rows pairing
    // wrote), each renumbered once.
    let changes = a
        .app()
        .int("SELECT count(*) FROM sdsync_changes WHERE origin = sdsync_device_id()");
    assert!(changes >= 2);
    assert_eq!(s["peers"][0]["lacks_of_ours"], changes, "{s}");
}
