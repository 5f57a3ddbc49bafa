//! A change a peer cannot apply is quarantined there, the rest of the stream
//! goes on, and both devices show it (issue 7, defects 3 and 7).

#[path = "common/mesh.rs"]
mod mesh;

use mesh::Mesh;
use rusqlite::Connection;
use sdsync_syncer::library::Change;
use sdsync_syncer::proto::message::{Envelope, Payload, encode};
use sdsync_syncer::proto::node::Event;
use sdsync_tests::devices::cli;
use sdsync_tests::extension_path;

const NAME_UNIQUE: &str = "CREATE UNIQUE INDEX tags_by_name ON tags(canonical_name)";

#[test]
fn a_change_a_peer_cannot_apply_is_quarantined_and_the_stream_goes_on() {
    let mut m = Mesh::new("q-stream", 2);
    let (ida, idb) = (m.devs[0].id.clone(), m.devs[1].id.clone());
    // B's app has a UNIQUE index A's lacks: A's third tag cannot go in on B.
    m.devs[1].exec(NAME_UNIQUE);
    m.devs[0].exec(
        "INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'x'), ('t2', 'y'), ('t3', 'x'), ('t4', 'z')",
    );
    m.link(0, 1);
    assert_eq!(m.devs[1].count("tags"), 3, "all but the conflicting one");
    assert_eq!(m.devs[1].quarantined(), 1);
    assert_eq!(m.devs[1].holds(&ida), 4, "the watermark advanced past it");
    assert_eq!(m.devs[1].dead_letters(), 0);
    assert_eq!(
        m.count_events(1, |e| matches!(e, Event::Quarantined { seq: 3, reason, .. }
            if reason.contains("UNIQUE constraint failed: tags.canonical_name")
                && reason.contains("held by row t1"))),
        1,
        "{:?}",
        m.events
    );
    // The stream goes on: A's next change arrives.
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t5', 'w')");
    m.committed(0);
    assert_eq!(m.devs[1].count("tags"), 4);
    // Both devices show it: B its quarantine, A (after B's next Hello) that B
    // holds one of its changes.
    m.advance(10_000);
    let b = m.devs[1].status();
    assert!(
        b.contains(&format!("quarantined 1 change(s) of {ida}")) && b.contains("held by row t1"),
        "{b}"
    );
    let a = m.devs[0].status();
    assert!(
        a.contains(&format!(
            "1 of your changes are quarantined on peer {idb}: sdsync_changes: UNIQUE constraint failed"
        )),
        "{a}"
    );
    // Re-pulling the same origin from scratch does not add rows or records.
    let page = Envelope::new(
        "lib",
        &ida,
        Payload::Page {
            origin: ida.clone(),
            after: 0,
            complete_to: 5,
            changes: m.devs[0].store.lib.changes_since(&ida, 0).unwrap(),
            more: false,
            restores: Vec::new(),
            clock: (0, 0),
        },
    );
    let d = &mut m.devs[1];
    d.node
        .receive_from(&ida, &encode(&page), m.now, &d.store)
        .unwrap();
    assert_eq!(m.devs[1].quarantined(), 1);
    assert_eq!(m.devs[1].dead_letters(), 0);
}

#[test]
fn quarantined_changes_retry_when_data_changes_and_superseded_ones_stay_gone() {
    let mut m = Mesh::new("q-retry", 2);
    m.devs[1].exec(NAME_UNIQUE);
    m.devs[0].exec(
        "INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'x'), ('t2', 'x'), ('t3', 'y'), ('t4', 'y')",
    );
    m.link(0, 1);
    assert_eq!(m.devs[1].quarantined(), 2, "t2 and t4");
    // Nothing changed on B: an anti-entropy round does not retry.
    m.advance(10_000);
    assert_eq!(m.count_events(1, |e| matches!(e, Event::Retried { .. })), 0);
    // A deletes t4 (superseding the quarantined create); B's user renames t1.
    m.devs[0].exec("DELETE FROM tags WHERE uuid = 't4'");
    m.committed(0);
    m.devs[1].exec("UPDATE tags SET canonical_name = 'x-b' WHERE uuid = 't1'");
    m.advance(10_000);
    assert_eq!(
        m.count_events(1, |e| matches!(
            e,
            Event::Retried {
                applied: 2,
                kept: 0
            }
        )),
        1,
        "{:?}",
        m.events
    );
    assert_eq!(m.devs[1].quarantined(), 0);
    let names: Vec<String> = {
        let conn = &m.devs[1].store.lib.conn;
        let mut s = conn
            .prepare("SELECT uuid || '=' || canonical_name FROM tags ORDER BY uuid")
            .unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(names, ["t1=x-b", "t2=x", "t3=y"], "t4 not resurrected");
    // A's status no longer reports anything quarantined on B.
    m.advance(10_000);
    assert!(
        !m.devs[0].status().contains("quarantine"),
        "{}",
        m.devs[0].status()
    );
}

/// Decided: between two devices' rows, an app UNIQUE conflict is not resolved
/// by dropping anyone's data. Each device keeps its own row and quarantines the
/// other's, both statuses say so (naming the rows), and once a user removes or
/// renames one of the two rows on any device, the retries converge every device
/// to the same content.
#[test]
fn a_unique_conflict_between_devices_shows_on_both_and_converges_once_resolved() {
    let mut m = Mesh::new("q-unique", 2);
    let (ida, idb) = (m.devs[0].id.clone(), m.devs[1].id.clone());
    for d in &m.devs {
        d.exec(NAME_UNIQUE);
    }
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('tag-a', 'Vacation')");
    m.devs[1].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('tag-b', 'Vacation')");
    m.link(0, 1);
    m.advance(10_000);
    let (a, b) = (m.devs[0].status(), m.devs[1].status());
    assert!(
        a.contains(&format!("quarantined 1 change(s) of {idb}")),
        "{a}"
    );
    assert!(
        a.contains(&format!("1 of your changes are quarantined on peer {idb}")),
        "{a}"
    );
    assert!(
        b.contains(&format!("quarantined 1 change(s) of {ida}")),
        "{b}"
    );
    assert!(
        b.contains(&format!("1 of your changes are quarantined on peer {ida}")),
        "{b}"
    );
    assert!(a.contains("held by row tag-a") && b.contains("held by row tag-b"));
    // The user keeps A's tag: deletes B's on B. Everyone converges.
    m.devs[1].exec("DELETE FROM tags WHERE uuid = 'tag-b'");
    m.committed(1);
    m.advance(10_000);
    m.advance(10_000);
    for d in &m.devs {
        assert_eq!(d.quarantined(), 0, "{}", d.status());
    }
    assert_eq!(
        m.devs[0].store.lib.digest().unwrap(),
        m.devs[1].store.lib.digest().unwrap()
    );
    assert_eq!(m.devs[1].count("tags"), 1);
}

#[test]
fn quarantined_changes_are_served_to_peers_that_pull_from_the_holder() {
    let mut m = Mesh::new("q-serve", 3);
    let ida = m.devs[0].id.clone();
    m.devs[1].exec(NAME_UNIQUE);
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'x'), ('t2', 'x')");
    m.link(0, 1);
    m.unlink(0, 1);
    assert_eq!(m.devs[1].quarantined(), 1);
    // C only ever meets B, and still gets both of A's tags.
    m.link(1, 2);
    assert_eq!(m.devs[2].count("tags"), 2);
    assert_eq!(m.devs[2].holds(&ida), 2);
}

#[test]
fn the_quarantine_command_lists_retries_and_discards() {
    let mut m = Mesh::new("q-cli", 2);
    m.devs[1].exec(NAME_UNIQUE);
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'x'), ('t2', 'x')");
    m.link(0, 1);
    let dir = m.devs[1].dir.to_str().expect("utf-8 path").to_string();
    let status = cli(&["status", &dir]);
    assert!(status.contains("quarantined 1 change(s) of"), "{status}");
    let list = cli(&["quarantine", &dir]);
    assert!(
        list.contains("seq 2 tags row t2") && list.contains("held by row t1"),
        "{list}"
    );
    assert!(list.ends_with("1 change(s) quarantined\n"), "{list}");
    let id = list
        .split_whitespace()
        .next()
        .expect("id")
        .trim_start_matches('#');
    assert_eq!(
        cli(&["quarantine", &dir, "retry"]),
        "0 applied, 1 still quarantined\n"
    );
    let gone = cli(&["quarantine", &dir, "discard", id]);
    assert!(
        gone.contains("discarded #") && gone.ends_with("1 change(s) discarded\n"),
        "{gone}"
    );
    assert_eq!(m.devs[1].quarantined(), 0);
    assert_eq!(
        cli(&["quarantine", &dir, "list"]),
        "0 change(s) quarantined\n"
    );
}

#[test]
fn dead_letters_are_one_record_per_cause_with_a_count() {
    let mut m = Mesh::new("q-dead", 2);
    let (ida, idb) = (m.devs[0].id.clone(), m.devs[1].id.clone());
    let stranger = Change {
        tbl: "tags".into(),
        pk: "t".into(),
        op: "upsert".into(),
        data: Some("{}".into()),
        origin: idb.clone(),
        seq: 1,
        hlc: 1,
        creates: 1,
    };
    for after in 0..5 {
        let page = Envelope::new(
            "lib",
            &ida,
            Payload::Page {
                origin: ida.clone(),
                after,
                complete_to: after + 1,
                changes: vec![stranger.clone()],
                more: false,
                restores: Vec::new(),
                clock: (0, 0),
            },
        );
        let d = &mut m.devs[1];
        d.node
            .receive_from(&ida, &encode(&page), m.now, &d.store)
            .unwrap();
    }
    let (rows, count): (i64, i64) = m.devs[1]
        .store
        .sync
        .query_row("SELECT count(*), sum(count) FROM dead_letters", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((rows, count), (1, 5));
    assert!(
        m.devs[1].status().contains("5 time(s)"),
        "{}",
        m.devs[1].status()
    );
}

#[test]
fn a_page_that_finds_the_database_busy_applies_later_without_a_dead_letter() {
    let mut m = Mesh::new("q-busy", 2);
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'x'), ('t2', 'y')");
    // An app on B holds the write lock while A's changes arrive.
    let app = Connection::open(&m.devs[1].store.lib.path).unwrap();
    app.execute_batch("BEGIN IMMEDIATE; CREATE TABLE app_notes(x)")
        .unwrap();
    m.link(0, 1);
    assert_eq!(m.devs[1].count("tags"), 0);
    assert_eq!(
        m.count_events(
            1,
            |e| matches!(e, Event::Deferred { reason, .. } if reason.contains("busy"))
        ),
        1,
        "{:?}",
        m.events
    );
    app.execute_batch("COMMIT").unwrap();
    // The deferred pull goes out again after its backoff.
    m.advance(2_000);
    assert_eq!(m.devs[1].count("tags"), 2);
    assert_eq!(m.devs[1].dead_letters(), 0);
    assert_eq!(m.devs[1].quarantined(), 0);
    assert_eq!(
        m.count_events(1, |e| matches!(e, Event::ApplyFailed { .. })),
        0
    );
}

/// The same conflict between two real syncers over QUIC: each shows its own
/// quarantine and the other's, and a user's fix converges both.
#[test]
fn over_quic_both_devices_show_the_conflict_and_converge_after_the_fix() {
    use sdsync_syncer::daemon::{Background, Directory};
    use sdsync_syncer::home::Home;
    use sdsync_syncer::net::tls::Pins;
    use sdsync_tests::{temp_dir, wait_for};

    let homes: Vec<Home> = (0..2)
        .map(|i| {
            Home::init(
                &temp_dir(&format!("q-quic-{i}")),
                &extension_path(),
                Some("lib"),
            )
            .expect("init")
        })
        .collect();
    let ids: Vec<String> = homes.iter().map(|h| h.device().expect("device")).collect();
    let (pins, directory) = (Pins::default(), Directory::default());
    for (h, id) in homes.iter().zip(&ids) {
        pins.pin(id, h.identity().expect("identity").cert);
    }
    let mut running = Vec::new();
    for (i, h) in homes.iter().enumerate() {
        let (store, _, _) = h.syncer_parts().expect("store");
        store.lib.exec(NAME_UNIQUE).expect("index");
        store
            .lib
            .exec(&format!(
                "INSERT INTO tags(uuid, canonical_name) VALUES ('tag-{i}', 'Vacation')"
            ))
            .expect("tag");
        let me = h.identity().expect("identity");
        running.push(Background::start(store, "lib", me, &pins, &directory).expect("daemon"));
    }
    let status = |i: usize| homes[i].status().expect("status").to_string();
    for (i, other) in [(0, 1), (1, 0)] {
        wait_for("both statuses show the conflict", 30, || {
            let s = status(i);
            s.contains(&format!("quarantined 1 change(s) of {}", ids[other]))
                && s.contains(&format!(
                    "1 of your changes are quarantined on peer {}",
                    ids[other]
                ))
        });
    }
    // The user keeps device 0's tag.
    let db = homes[1].database().expect("database");
    db.exec("DELETE FROM tags WHERE uuid = 'tag-1'")
        .expect("delete");
    wait_for("converged, nothing quarantined", 30, || {
        let (a, b) = (
            homes[0].database().expect("db"),
            homes[1].database().expect("db"),
        );
        a.digest().ok() == b.digest().ok()
            && a.count("tags").ok() == Some(1)
            && !status(0).contains("quarantine")
            && !status(1).contains("quarantine")
    });
    drop(running);
}

/// A sync.db of the one-row-per-failure form is folded into counted records.
#[test]
fn old_dead_letters_are_folded_into_counted_records() {
    let sync = Connection::open_in_memory().unwrap();
    sync.execute_batch(
        "CREATE TABLE dead_letters(id INTEGER PRIMARY KEY, peer TEXT NOT NULL, what TEXT NOT NULL,
           reason TEXT NOT NULL, at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')));
         INSERT INTO dead_letters(peer, what, reason) VALUES
           ('p', 'page of origin o after 0', 'bad'), ('p', 'page of origin o after 0', 'bad'),
           ('p', 'page of origin o after 0', 'worse'), ('q', 'pull of origin o after 3', 'no answer');",
    )
    .unwrap();
    sdsync_syncer::sqlstore::syncdb::ensure(&sync).unwrap();
    let rows: Vec<(String, i64)> = sync
        .prepare("SELECT peer, count FROM dead_letters ORDER BY peer")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, [("p".to_string(), 3), ("q".to_string(), 1)]);
    // And counting goes on in the new form.
    sdsync_syncer::sqlstore::syncdb::dead_letter(&sync, "q", "pull of origin o after 3", "w", "r")
        .unwrap();
    let n: i64 = sync
        .query_row("SELECT count FROM dead_letters WHERE peer = 'q'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, 2);
}

/// A change for a table this device does not track yet is kept (not
/// quarantined: nothing is wrong with it), both devices name the mismatch, and
/// it applies on the first anti-entropy round after the schema catches up.
#[test]
fn a_table_one_device_lacks_is_kept_until_its_schema_catches_up() {
    let mut m = Mesh::new("q-schema", 2);
    let notes = "CREATE TABLE notes(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, body TEXT);
                 SELECT sdsync_track('notes', 'shared');";
    m.devs[0].exec(notes);
    m.devs[0].exec("INSERT INTO notes(uuid, body) VALUES ('n1', 'hello'), ('n2', 'world')");
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'x')");
    m.link(0, 1);
    assert_eq!(m.devs[1].quarantined(), 0);
    assert_eq!(m.devs[1].kept(), 2);
    assert_eq!(m.devs[1].count("tags"), 1, "the rest of the stream applied");
    for (d, says) in [
        (0, "this device syncs it and the peer does not"),
        (1, "the peer syncs it and this device does not"),
    ] {
        let mismatch = |e: &Event| matches!(e, Event::SchemaMismatch { detail, .. } if detail.contains("table notes") && detail.contains(says));
        assert_eq!(
            m.count_events(d, mismatch),
            1,
            "device {d} names the mismatch"
        );
        assert!(m.devs[d].status().contains(says), "{}", m.devs[d].status());
    }
    assert!(
        m.devs[1].status().contains("kept        2 change(s)"),
        "{}",
        m.devs[1].status()
    );
    m.devs[1].exec(notes);
    m.advance(10_000);
    assert_eq!(m.devs[1].kept(), 0);
    assert!(
        !m.devs[0].status().contains("mismatch"),
        "{}",
        m.devs[0].status()
    );
    assert_eq!(m.devs[1].count("notes"), 2);
    assert_eq!(
        m.devs[0].store.lib.digest().unwrap(),
        m.devs[1].store.lib.digest().unwrap()
    );
}

/// A quarantined create later superseded by the origin's update: the update
/// waits (parked) for the row, the retry creates it, and the newer value wins —
/// the quarantined one is not resurrected over it.
#[test]
fn a_retry_does_not_resurrect_values_a_newer_change_replaced() {
    let mut m = Mesh::new("q-update", 2);
    m.devs[1].exec(NAME_UNIQUE);
    m.devs[0].exec(
        "INSERT INTO tags(uuid, canonical_name, color) VALUES ('t1', 'x', 'red'), ('t2', 'x', 'blue')",
    );
    m.link(0, 1);
    assert_eq!(m.devs[1].quarantined(), 1);
    m.devs[0].exec("UPDATE tags SET canonical_name = 'x2' WHERE uuid = 't2'");
    m.committed(0);
    m.advance(10_000);
    assert_eq!(m.devs[1].quarantined(), 0);
    let t2: (String, String) = m.devs[1]
        .store
        .lib
        .conn
        .query_row(
            "SELECT canonical_name, color FROM tags WHERE uuid = 't2'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(t2, ("x2".to_string(), "blue".to_string()));
    assert_eq!(
        m.devs[0].store.lib.digest().unwrap(),
        m.devs[1].store.lib.digest().unwrap()
    );
}

/// Two different changes under one number (an origin restored from a backup
/// issued the number again before it heard of the first): the second one
/// applying leaves the first quarantined. It released it, and the first was
/// lost for good where its origin had lost it too (simulation seed 22677,
/// whole-folder restores).
#[test]
fn another_change_under_a_quarantined_number_leaves_it_quarantined() {
    use sdsync_syncer::library::Pk;
    use sdsync_syncer::proto::store::Store;
    use sdsync_syncer::sqlstore::quarantine;

    let o = sdsync_tests::wire::store("q-twice-o");
    let origin = o.device().unwrap();
    o.lib
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'x')")
        .unwrap();
    let first = o.slice(&origin, 0, 10, 1 << 20).unwrap().changes[0].clone();
    let second = Change {
        pk: Pk::Text("t2".into()),
        hlc: first.hlc + 1,
        data: Some(r#"{"canonical_name":"y"}"#.into()),
        ..first.clone()
    };
    let r = sdsync_tests::wire::store("q-twice-r");
    r.lib.exec(NAME_UNIQUE).unwrap();
    r.lib
        .exec("INSERT INTO tags(uuid, canonical_name) VALUES ('mine', 'x')")
        .unwrap();
    let refused = r
        .apply(&origin, std::slice::from_ref(&first), None)
        .unwrap();
    assert_eq!(refused.len(), 1, "the first change meets the UNIQUE index");

    let refused = r
        .apply(&origin, std::slice::from_ref(&second), None)
        .unwrap();

    assert!(refused.is_empty(), "the second change applies");
    let held: Vec<(i64, i64)> = quarantine::list(&r.lib.conn)
        .unwrap()
        .iter()
        .map(|e| {
            (
                e.seq,
                r.lib
                    .conn
                    .query_row(
                        "SELECT hlc FROM sdsync_quarantine WHERE id = ?1",
                        [e.id],
                        |row| row.get(0),
                    )
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(
        held,
        vec![(first.seq, first.hlc)],
        "the first stays quarantined"
    );
}
