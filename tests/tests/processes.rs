//! Real `sdsync run` processes on loopback, killed with SIGKILL at arbitrary
//! points: nothing committed is lost, and every restart resumes.

use std::process::{Command, Stdio};

use sdsync_tests::devices::{
    Device, cli, free_port, free_tcp_port, http_get, metric, pair_of, sdsync,
};
use sdsync_tests::{temp_dir, wait_for};

#[test]
fn a_receiver_killed_during_backfill_resumes_and_loses_nothing() {
    // Small pages, one at a time: pages applied together take the 20,000
    // entries in a fraction of a second, before the first kill.
    let (a, b) = killed_during_backfill(
        "kill-backfill",
        20_000,
        &["--set", "page_rows=200", "--set", "window=1"],
    );
    // The backfill's progress is logged (every 5 s, while changes apply).
    let n = a.app().int(&format!(
        "SELECT seq FROM sdsync_watermarks WHERE origin = '{}'",
        a.id
    ));
    let done = format!("progress {}: {n} of {n} changes (100%)", a.id);
    let log = || std::fs::read_to_string(b.dir.join("syncer.log")).unwrap_or_default();
    wait_for("the last progress line", 15, || log().contains(&done));
}

/// The same with the default pages, applied many to a transaction: a kill
/// lands inside a gathered transaction or between two (100,000 entries take
/// a few seconds).
#[test]
fn a_receiver_killed_while_pages_apply_together_loses_nothing() {
    killed_during_backfill("kill-gathered", 100_000, &[]);
}

/// A holds `entries` entries and runs with `sender`; B is started and
/// SIGKILLed as soon as it made progress, three times, then converges
/// exactly, nothing left parked.
fn killed_during_backfill(name: &str, entries: i64, sender: &[&str]) -> (Device, Device) {
    let (_dir, mut a, mut b) = pair_of(name);
    let app_a = a.app();
    app_a.exec(&format!(
        "INSERT INTO locations(uuid, name, path) VALUES ('loc', 'Photos', '/p');
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {entries})
           INSERT INTO entries(uuid, name, size, location_id) SELECT 'e' || i, 'f' || i, i, 1 FROM n;"
    ));
    a.start_with(sender);
    let app_b = b.app();
    // Kill the receiver as soon as it has made progress, three times over.
    for round in 1..=3 {
        let before = app_b.count("entries");
        b.start();
        wait_for(&format!("progress in round {round}"), 60, || {
            app_b.count("entries") > before || app_b.digest() == app_a.digest()
        });
        b.kill();
    }
    b.start();
    wait_for("convergence", 120, || app_b.digest() == app_a.digest());
    assert_eq!(app_b.count("entries"), entries);
    assert_eq!(app_b.int("SELECT count(*) FROM sdsync_parked"), 0);
    (a, b)
}

/// A backfill's pages apply together, many to a transaction; one change in
/// the middle that the receiver refuses (its own UNIQUE index) rolls back
/// that transaction, says so in the log, and is then set aside alone while
/// every other change arrives: nothing is lost, the quarantine shows, and
/// the user's fix converges both devices.
#[test]
fn a_refused_change_among_pages_applied_together_is_set_aside_alone() {
    let (_dir, mut a, mut b) = pair_of("gathered-refusal");
    let app_a = a.app();
    let entries = |from: i64, to: i64| {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n WHERE i < {to})
               INSERT INTO entries(uuid, name, size, location_id) SELECT 'e' || i, 'f' || i, i, 1 FROM n;"
        )
    };
    app_a.exec("INSERT INTO locations(uuid, name, path) VALUES ('loc', 'Photos', '/p')");
    app_a.exec(&entries(1, 10_000));
    app_a.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('tag-a', 'Vacation')");
    app_a.exec(&entries(10_001, 20_000));
    let app_b = b.app();
    app_b.exec("CREATE UNIQUE INDEX tags_by_name ON tags(canonical_name)");
    app_b.exec("INSERT INTO tags(uuid, canonical_name) VALUES ('tag-b', 'Vacation')");
    a.start();
    b.start();
    let issued = app_a.int(&format!(
        "SELECT seq FROM sdsync_watermarks WHERE origin = '{}'",
        a.id
    ));
    let held = || {
        app_b.int(&format!(
            "SELECT coalesce((SELECT seq FROM sdsync_watermarks WHERE origin = '{}'), 0)",
            a.id
        ))
    };
    wait_for("B holds all of A", 60, || held() >= issued);
    assert_eq!(app_b.count("entries"), 20_000);
    let log = std::fs::read_to_string(b.dir.join("syncer.log")).unwrap_or_default();
    assert!(
        log.contains("a page failed among pages applied together"),
        "{log}"
    );
    let status = cli(&["status", b.dir.to_str().expect("utf-8")]);
    assert!(
        status.contains(&format!("quarantined 1 change(s) of {}", a.id)),
        "{status}"
    );
    // The user keeps A's tag: both devices converge, nothing stays aside.
    app_b.exec("DELETE FROM tags WHERE uuid = 'tag-b'");
    wait_for("converged", 60, || {
        app_b.digest() == app_a.digest() && app_b.int("SELECT count(*) FROM sdsync_quarantine") == 0
    });
}

#[test]
fn an_origin_killed_while_its_app_writes_loses_no_commit() {
    let (_dir, mut a, mut b) = pair_of("kill-origin");
    b.start();
    a.start();
    let app_a = a.app();
    for i in 1..=300 {
        app_a.exec(&format!(
            "INSERT INTO tags(uuid, canonical_name) VALUES (sdsync_uuid_v5('tag', 't{i}'), 't{i}')"
        ));
        if i % 60 == 0 {
            a.kill(); // the app goes on writing; the syncer restarts later
        }
        if i % 60 == 20 {
            a.start();
        }
        if i % 100 == 0 {
            b.kill();
            b.start();
        }
    }
    a.start();
    let app_b = b.app();
    wait_for("convergence", 120, || app_b.digest() == app_a.digest());
    assert_eq!(app_b.count("tags"), 300);
    let status = cli(&["status", b.dir.to_str().expect("utf-8")]);
    // A's 300 tags, its `devices` row (from init) and the address its first
    // `sdsync run` listed in it (the same on every restart: written once).
    assert!(
        status.contains(&format!("holds       {} up to seq 302", a.id)),
        "{status}"
    );
    assert!(
        !status.contains("parked") && !status.contains("dead letter"),
        "{status}"
    );
}

/// Writers in other processes and languages (the `sqlite3` shell and Debian's
/// python3 with plain SQL) on both devices while both syncers run: every write
/// reaches the other device.
#[test]
fn shell_and_python_writers_sync_through_running_syncers() {
    let (_dir, mut a, mut b) = pair_of("foreign-writers");
    a.start();
    b.start();
    let ext = sdsync_tests::extension_path();
    let load = ext.with_extension("");
    let db_a = a.dir.join("database.db");
    let out = Command::new("sqlite3")
        .arg(&db_a)
        .arg(format!(".load {}", load.display()))
        .arg("INSERT INTO tags(uuid, canonical_name, color) VALUES (sdsync_uuid_v5('tag', 'Shell'), 'Shell', 'red')")
        .arg("UPDATE tags SET icon = 'terminal' WHERE canonical_name = 'Shell'")
        .output()
        .expect("sqlite3 shell (apt-get install sqlite3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = "import sqlite3, sys
c = sqlite3.connect(sys.argv[2], isolation_level=None)
c.enable_load_extension(True); c.load_extension(sys.argv[1])
c.execute(\"INSERT INTO collections(uuid, name) VALUES (sdsync_uuid_v5('album', 'Py'), 'Py')\")
c.execute(\"INSERT INTO tags(uuid, canonical_name) VALUES (sdsync_uuid_v5('tag', 'Python'), 'Python')\")
";
    let db_b = b.dir.join("database.db");
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(&ext)
        .arg(&db_b)
        .output()
        .expect("Debian's /usr/bin/python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (app_a, app_b) = (a.app(), b.app());
    wait_for("convergence", 60, || app_a.digest() == app_b.digest());
    assert_eq!(
        app_a.text("SELECT group_concat(canonical_name || ':' || coalesce(icon, '-'), ',') FROM (SELECT * FROM tags ORDER BY canonical_name)"),
        "Python:-,Shell:terminal"
    );
    assert_eq!(app_a.count("collections"), 1);
}

/// One syncer per folder (issue 10): a second `sdsync run` on a folder whose
/// syncer runs is refused with a clear error and changes nothing; a syncer
/// killed with SIGKILL leaves no stale lock behind.
#[test]
fn a_second_syncer_on_a_folder_is_refused() {
    let (_dir, mut a, _b) = pair_of("one-syncer");
    let lock = a.dir.join("syncer.lock");
    let holder = || std::fs::read_to_string(&lock).unwrap_or_default();
    a.start();
    let first = a.syncer.as_ref().expect("running").id().to_string();
    wait_for("the first syncer's lock", 30, || holder() == first);
    let second = Command::new(sdsync())
        .args(["run", a.dir.to_str().expect("utf-8"), "--listen"])
        .arg(free_port().to_string())
        .env("SDSYNC_EXTENSION", sdsync_tests::extension_path())
        .output()
        .expect("run sdsync");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second syncer ran");
    assert!(
        stderr.contains("another `sdsync run` is running") && stderr.contains(&first),
        "{stderr}"
    );
    assert_eq!(holder(), first, "the first keeps the folder");
    a.kill();
    a.start();
    let restarted = a.syncer.as_ref().expect("running").id().to_string();
    wait_for("the restarted syncer's lock", 30, || holder() == restarted);
}

/// `sdsync status --json` says how each peer stands (issue 10): connected and
/// lacking nothing once in sync; disconnected and lacking exactly what was
/// written since it stopped; and, with no syncer running, no pid and nobody
/// connected.
#[test]
fn status_json_tells_how_each_peer_stands() {
    let (_dir, mut a, mut b) = pair_of("status-json");
    let dir = a.dir.to_str().expect("utf-8").to_string();
    let status = || -> serde_json::Value {
        serde_json::from_str(&cli(&["status", &dir, "--json"])).expect("status is JSON")
    };
    a.start();
    b.start();
    a.app()
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one'), ('t2', 'two')");
    wait_for("B connected and holding A's changes", 30, || {
        let p = &status()["peers"][0];
        p["connected"] == true && p["lacks_of_ours"] == 0
    });
    let s = status();
    let pid = a.syncer.as_ref().expect("running").id().to_string();
    assert_eq!(s["device"], a.id.as_str());
    assert_eq!(s["syncer_pid"], pid.as_str());
    assert_eq!(s["peers"].as_array().map(Vec::len), Some(1));
    let p = &s["peers"][0];
    assert_eq!(p["device"], b.id.as_str());
    assert_eq!(p["address"], b.addr.to_string().as_str());
    assert!(
        p["last_contact_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{p}"
    );
    assert_eq!(p["ahead_of_us"], serde_json::json!([]));
    let text = cli(&["status", &dir]);
    assert!(
        text.contains(&format!("peer        b ({}) connected", b.id)),
        "{text}"
    );
    // Once: its address is in that line, not in a second one as `info` has.
    assert!(
        !text.contains(&format!("peer        {} at", b.id)),
        "{text}"
    );
    assert!(
        text.contains(&format!("syncer      running (pid {pid})")),
        "{text}"
    );
    // B stops; A writes three changes it cannot send.
    b.kill();
    a.app().exec(
        "INSERT INTO tags(uuid, canonical_name) VALUES ('t3', 'three'), ('t4', 'four'), ('t5', 'five')",
    );
    wait_for("A to see B gone", 30, || {
        status()["peers"][0]["connected"] == false
    });
    assert_eq!(status()["peers"][0]["lacks_of_ours"], 3);
    let text = cli(&["status", &dir]);
    assert!(
        text.contains("not connected") && text.contains("lacks 3 of this device's changes"),
        "{text}"
    );
    a.kill();
    let s = status();
    assert_eq!(s["syncer_pid"], serde_json::Value::Null);
    assert_eq!(s["peers"][0]["connected"], false);
    assert!(cli(&["status", &dir]).contains("syncer      not running"));
    // A restarts with B still down: B keeps its last contact and what it
    // held (it read "never heard from" and lacking every change).
    let restarted = sdsync_core::hlc::wall_millis() as i64;
    a.start();
    let sync = rusqlite::Connection::open(a.dir.join("sync.db")).expect("sync.db");
    wait_for("A's new run to record its peers", 30, || {
        sync.query_row("SELECT min(at_ms) FROM peer_state", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .ok()
        .flatten()
        .is_some_and(|at| at >= restarted)
    });
    let s = status();
    assert!(
        s["peers"][0]["last_contact_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 0),
        "{s}"
    );
    assert_eq!(s["peers"][0]["lacks_of_ours"], 3, "{s}");
    assert!(!cli(&["status", &dir]).contains("never heard from"));
}

/// Every device has its row in `devices` from `sdsync init` on, and the rows
/// sync (issue 10): the plain SQL finds this device, and each device
/// lists both.
#[test]
fn every_device_has_its_row_in_devices() {
    let (_dir, mut a, mut b) = pair_of("devices-rows");
    let app = a.app();
    app.exec(
        "INSERT INTO locations(uuid, device_id, name) \
         SELECT sdsync_uuid(), id, 'Photos' FROM devices WHERE uuid = sdsync_device_id()",
    );
    assert_eq!(app.count("locations"), 1, "the device's own row is there");
    a.start();
    b.start();
    wait_for("both devices listed on both", 30, || {
        a.app().count("devices") == 2
            && b.app().count("devices") == 2
            && b.app().count("locations") == 1
    });
    let names = |d: &Device| -> Vec<(String, String)> {
        let conn = rusqlite::Connection::open(d.database()).expect("open");
        sdsync_tests::pairs(&conn, "SELECT uuid, name FROM devices ORDER BY name")
    };
    let expected = vec![
        (a.id.clone(), "a".to_string()),
        (b.id.clone(), "b".to_string()),
    ];
    assert_eq!(names(&a), expected);
    assert_eq!(names(&b), expected);
}

/// `sdsync run --metrics ADDR` serves the seeds' metrics in Prometheus text
/// and a health check (issue 10): the gauges read exactly what the device
/// holds once in sync, and the counters move with what it receives.
#[test]
fn the_metrics_endpoint_serves_the_seeds_metrics() {
    let (_dir, mut a, mut b) = pair_of("metrics");
    a.app().exec(
        "INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one'), ('t2', 'two');
         INSERT INTO locations(uuid, name, path) VALUES ('loc', 'Photos', '/p')",
    );
    let port = free_tcp_port();
    b.start_with(&[
        "--metrics",
        &format!("127.0.0.1:{port}"),
        "--log-format",
        "json",
    ]);
    a.start();
    let get = |path: &str| http_get(port, path);
    wait_for("the health check", 30, || get("/health").ends_with("ok\n"));
    let lag = format!("sync_lag_changes{{origin=\"{}\"}}", a.id);
    wait_for("B in sync with A, as its metrics say", 30, || {
        let m = get("/metrics");
        metric(&m, "sync_connected_partners") == Some(1)
            && metric(&m, &lag) == Some(0)
            && metric(&m, "sync_state_changes_received_total").is_some_and(|n| n >= 1)
    });
    let m = get("/metrics");
    assert!(m.starts_with("HTTP/1.1 200 OK"), "{m}");
    assert_eq!(metric(&m, "sync_buffer_queue_size"), Some(0), "{m}");
    assert_eq!(metric(&m, "sync_quarantine_size"), Some(0), "{m}");
    assert_eq!(metric(&m, "sync_retry_queue_size"), Some(0), "{m}");
    // A's two tags and its `devices` row are shared; the location is owned.
    let shared = metric(&m, "sync_shared_changes_received_total").expect("shared received");
    assert!(shared >= 3, "{m}");
    assert!(
        metric(&m, "sync_apply_duration_seconds_count").is_some_and(|n| n >= 1),
        "{m}"
    );
    for name in [
        "sync_state_changes_sent_total",
        "sync_shared_changes_sent_total",
        "sync_broadcast_failures_total",
        "sync_broadcast_duration_seconds_count",
    ] {
        assert!(metric(&m, name).is_some(), "{name} in {m}");
    }
    a.app()
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t3', 'three'), ('t4', 'four')");
    wait_for("the shared counter to move by A's two new tags", 30, || {
        metric(&get("/metrics"), "sync_shared_changes_received_total")
            .is_some_and(|n| n >= shared + 2)
    });
    assert!(get("/nothing").starts_with("HTTP/1.1 404"));
    // `--log-format json`: every line of B's log is one JSON object.
    let log = std::fs::read_to_string(b.dir.join("syncer.log")).expect("syncer.log");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "INFO"
            && l["fields"]["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("Applied"))),
        "{log}"
    );
}

/// `sdsync sql DIR` runs SQL with the extension loaded (issue 10): its writes
/// are captured like any app's, and queries print rows as text or JSON.
#[test]
fn sdsync_sql_writes_are_captured_and_queries_print_rows() {
    let dir = temp_dir("sql-cli");
    let a = Device::init(&dir, "a", None);
    let d = a.dir.to_str().expect("utf-8");
    cli(&[
        "sql",
        d,
        "INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one'); \
         INSERT INTO tags(uuid, canonical_name, color) VALUES ('t2', 'two', 'red')",
    ]);
    let text = cli(&[
        "sql",
        d,
        "SELECT canonical_name, color FROM tags ORDER BY 1",
    ]);
    assert_eq!(text, "canonical_name\tcolor\none\tNULL\ntwo\tred\n");
    let json = cli(&[
        "sql",
        d,
        "--json",
        "SELECT count(*) AS n FROM sdsync_changes WHERE tbl = 'tags'",
    ]);
    assert_eq!(json, "[{\"n\":2}]\n", "both writes captured");
    // A batch whose later statements use what its earlier ones create runs
    // as the sqlite3 shell runs it; its last query prints nothing.
    let batch = cli(&[
        "sql",
        d,
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT); \
         CREATE TABLE note_log(note INTEGER); \
         CREATE TRIGGER notes_logged AFTER INSERT ON notes BEGIN INSERT INTO note_log VALUES (NEW.id); END; \
         INSERT INTO notes(body) VALUES ('x'); SELECT 1",
    ]);
    assert_eq!(batch, "");
    let logged = cli(&["sql", d, "SELECT count(*) FROM note_log"]);
    assert_eq!(logged, "count(*)\n1\n");
}

/// Settings come from defaults, `config.toml`, `SDSYNC_<KEY>` and flags, in
/// that order (issue 10); `sdsync config` says which; `sdsync run` with no
/// flags listens and serves metrics where the file says.
#[test]
fn config_toml_then_environment_then_flags() {
    let dir = temp_dir("config");
    let a = Device::init(&dir, "a", None);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    std::fs::write(
        a.dir.join("config.toml"),
        format!(
            "listen = \"{}\"\nmetrics = \"{port}\"\nwindow = 8\n",
            a.addr
        ),
    )
    .expect("config.toml");
    let config = Command::new(sdsync())
        .args(["config", a.dir.to_str().expect("utf-8")])
        .env("SDSYNC_EXTENSION", sdsync_tests::extension_path())
        .env("SDSYNC_WINDOW", "2")
        .output()
        .expect("sdsync config");
    let text = String::from_utf8_lossy(&config.stdout);
    assert!(text.contains("window = 2  # env SDSYNC_WINDOW"), "{text}");
    assert!(
        text.contains(&format!("metrics = \"{port}\"  # config.toml")),
        "{text}"
    );
    assert!(text.contains("page_rows = 2000  # default"), "{text}");
    let mut run = Command::new(sdsync())
        .args(["run", a.dir.to_str().expect("utf-8")])
        .env("SDSYNC_EXTENSION", sdsync_tests::extension_path())
        .env("SDSYNC_STATE_DIR", a.state_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sdsync run");
    let health = || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(port) else {
            return false;
        };
        let _ = s.write_all(b"GET /health HTTP/1.1\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.ends_with("ok\n")
    };
    wait_for("metrics where config.toml says", 30, health);
    run.kill().expect("kill");
    run.wait().expect("reap");
    std::fs::write(a.dir.join("config.toml"), "windwo = 8\n").expect("config.toml");
    let bad = Command::new(sdsync())
        .args(["run", a.dir.to_str().expect("utf-8")])
        .env("SDSYNC_EXTENSION", sdsync_tests::extension_path())
        .output()
        .expect("sdsync run");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("setting windwo (from config.toml): no such setting"),
        "{stderr}"
    );
}

/// Two devices end with one connection between them, also when one started
/// seconds before the other: its dial, sent while the peer was not listening,
/// completes on QUIC's retransmission after the later dials already linked
/// them, and each extra link restarts the streams (pages sent again). The
/// dials still under way are called off once a link is up.
#[test]
fn a_device_that_starts_late_ends_with_one_link() {
    let (_dir, mut a, mut b) = pair_of("one-link");
    let (first, second) = if a.id < b.id {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    // The device with the smaller id dials first, every 0.5 s; the other
    // stays offline past the 2 s a dial under way holds off the next one.
    first.start();
    std::thread::sleep(std::time::Duration::from_millis(2600));
    second.start();
    first
        .app()
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one')");
    wait_for("the tag on the late device", 30, || {
        second.app().count("tags") == 1
    });
    // Longer than a dial under way can take to complete (QUIC retransmits
    // its first packet after about 1, 3 and 7 s).
    std::thread::sleep(std::time::Duration::from_secs(8));
    let links = |d: &Device| {
        std::fs::read_to_string(d.dir.join("syncer.log"))
            .expect("log")
            .matches("link up")
            .count()
    };
    assert_eq!((links(first), links(second)), (1, 1));
}

/// A syncer that starts while an app holds the library's write lock longer
/// than any busy timeout (an indexer's large transactions, back to back)
/// waits for it, saying so at WARN, instead of exiting with "database is
/// locked" (seen in the real-tree benchmark); then it syncs.
#[test]
fn a_syncer_started_while_an_app_holds_the_write_lock_waits_for_it() {
    let (_dir, mut a, mut b) = pair_of("busy-start");
    b.start();
    let app = a.app();
    app.exec("BEGIN IMMEDIATE; INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one');");
    a.start();
    let log = a.dir.join("syncer.log");
    wait_for("A to say it waits for the library", 30, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("the library is busy"))
    });
    app.exec("COMMIT");
    wait_for("B to hold A's tag", 30, || b.app().count("tags") == 1);
    // B's own device row reaches A on its own pull, which may finish after.
    wait_for("both to hold the same rows", 30, || {
        a.app().digest() == b.app().digest()
    });
}
