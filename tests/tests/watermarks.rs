//! Watermarks are verified, not trusted as sent (issue 7, defect 5).

#[path = "common/mesh.rs"]
mod mesh;

use mesh::Mesh;
use sdsync_syncer::proto::message::{Envelope, Payload, encode};
use sdsync_syncer::proto::node::Event;

/// One wrong `sdsync_mark_complete` on B (an app's own copy) is neither believed
/// by B's syncer nor passed on: A, syncing from B, still gets C's next changes
/// from C, and so does B.
#[test]
fn a_false_mark_complete_is_not_believed_or_passed_on() {
    let mut m = Mesh::new("wm-lie", 3);
    let idc = m.devs[2].id.clone();
    m.devs[2].exec(
        "INSERT INTO tags(uuid, canonical_name) VALUES ('c1', 'a'), ('c2', 'b'), ('c3', 'c')",
    );
    m.link(1, 2);
    m.unlink(1, 2);
    assert_eq!(m.devs[1].holds(&idc), 3);
    m.devs[1].exec(&format!("SELECT sdsync_mark_complete('{idc}', 1000000)"));
    assert_eq!(m.devs[1].holds(&idc), 3, "the syncer vouches for 3 only");
    assert!(
        m.devs[1].status().contains(&format!(
            "database claims {idc} up to seq 1000000; verified up to 3"
        )),
        "{}",
        m.devs[1].status()
    );
    // C writes on while apart; A syncs from B first.
    m.devs[2].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('c4', 'd'), ('c5', 'e')");
    m.link(0, 1);
    assert_eq!(m.devs[0].count("tags"), 3);
    assert_eq!(m.devs[0].holds(&idc), 3, "B did not pass the lie on");
    // C comes online: both get its new changes.
    m.link(0, 2);
    m.link(1, 2);
    assert_eq!(m.devs[0].count("tags"), 5);
    assert_eq!(m.devs[1].count("tags"), 5);
    assert_eq!(m.devs[0].holds(&idc), 5);
    assert_eq!(m.devs[1].holds(&idc), 5);
}

/// A page that claims more of its origin than it carries (a buggy peer) counts
/// only up to its last change; the origin's own report later fills the gap.
#[test]
fn a_page_claiming_more_than_it_carries_is_capped() {
    let mut m = Mesh::new("wm-page", 3);
    let (idb, idc) = (m.devs[1].id.clone(), m.devs[2].id.clone());
    m.devs[2].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('c1', 'a'), ('c2', 'b')");
    let changes = m.devs[2].store.lib.changes_since(&idc, 0).unwrap();
    m.devs[2].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('c3', 'c')");
    // B (buggy) sends A C's first two changes claiming completeness to 1000000.
    let page = Envelope::new(
        "lib",
        &idb,
        Payload::Page {
            origin: idc.clone(),
            after: 0,
            complete_to: 1_000_000,
            changes,
            more: false,
            restores: Vec::new(),
            clock: (0, 0),
        },
    );
    let a = &mut m.devs[0];
    a.node
        .receive_from(&idb, &encode(&page), m.now, &a.store)
        .unwrap();
    assert_eq!(m.devs[0].count("tags"), 2);
    assert_eq!(m.devs[0].holds(&idc), 2);
    m.link(0, 2);
    assert_eq!(m.devs[0].count("tags"), 3);
    assert_eq!(m.devs[0].holds(&idc), 3);
}

/// The origin's own page and Hello are believed: a superseded tail (C's last
/// change overwritten) still completes a peer that heard from C.
#[test]
fn the_origin_vouches_for_its_own_superseded_tail() {
    let mut m = Mesh::new("wm-tail", 2);
    let idb = m.devs[1].id.clone();
    m.devs[1].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('b1', 'a')");
    m.devs[1].exec("UPDATE tags SET canonical_name = 'b' WHERE uuid = 'b1'");
    m.devs[1].exec("UPDATE tags SET canonical_name = 'c' WHERE uuid = 'b1'");
    m.link(0, 1);
    assert_eq!(m.devs[0].holds(&idb), m.devs[1].holds(&idb));
    let pulls_before = m.events.len();
    m.advance(10_000);
    m.advance(10_000);
    assert!(
        m.events[pulls_before..]
            .iter()
            .all(|(_, e)| !matches!(e, sdsync_syncer::proto::node::Event::Applied { .. })),
        "no re-pulls: {:?}",
        &m.events[pulls_before..]
    );
}

/// We vouch for more of an origin than it says it issued (a forged page got
/// through): its own Hello cuts the claim, and its next changes arrive; the
/// origin, hearing the claim, renumbers above it, and nothing is lost.
#[test]
fn the_origin_reporting_less_cuts_what_we_vouch_for() {
    let mut m = Mesh::new("wm-cut", 2);
    let idb = m.devs[1].id.clone();
    m.devs[1].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('b1', 'a')");
    m.link(0, 1);
    m.unlink(0, 1);
    m.devs[0].exec(&format!(
        "SELECT sdsync_mark_complete('{idb}', 1000); UPDATE sdsync_verified SET seq = 1000"
    ));
    assert_eq!(m.devs[0].holds(&idb), 1000);
    m.devs[1].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('b2', 'b')");
    m.link(0, 1);
    assert!(
        m.events.iter().any(|(d, e)| *d == 0
            && matches!(
                e,
                Event::WatermarkCut {
                    vouched: 1000,
                    issued: 2,
                    ..
                }
            )),
        "{:?}",
        m.events
    );
    assert_eq!(m.devs[0].count("tags"), 2);
    // The origin cannot tell the claim from a restore of its own database (a
    // peer holding more of it than it does): it renumbers its 2 changes 2^20
    // above the claim, takes its changes back from the peer (b1, which it
    // holds already, keeps its number), and the claim then holds (README
    // "Backup and restore").
    let renumbered = |e: &Event| {
        matches!(
            e,
            Event::Restored {
                held: 1000,
                had: 2,
                ..
            }
        )
    };
    assert_eq!(m.count_events(1, renumbered), 1);
    assert_eq!(m.devs[0].holds(&idb), 1000 + (1 << 20) + 2);
    assert_eq!(
        m.devs[0].store.lib.digest().unwrap(),
        m.devs[1].store.lib.digest().unwrap()
    );
}

/// A database restored from an older copy, then written: the device reused
/// sequence numbers its peer already holds. The peer's Hello tells it; it
/// renumbers its own changes above them (so the peer takes the new ones) and
/// takes back the ones the copy lacked: both end with everything.
#[test]
fn a_restored_database_takes_its_changes_back_and_writes_above_them() {
    let mut m = Mesh::new("restore", 2);
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one')");
    let snapshot = m.devs[0].dir.join("backup.db");
    m.devs[0].exec(&format!("VACUUM INTO '{}'", snapshot.display()));
    m.devs[0].exec(
        "INSERT INTO tags(uuid, canonical_name) VALUES ('t2', 'two'), ('t3', 'three');
         UPDATE tags SET color = 'red' WHERE uuid = 't1'",
    );
    m.link(0, 1);
    assert_eq!(m.devs[1].count("tags"), 3);
    m.unlink(0, 1);
    m.restore(0, &snapshot);
    assert_eq!(m.devs[0].count("tags"), 1);
    // Written after the restore: reuses sequence number 2, which B holds.
    m.devs[0].exec(
        "INSERT INTO tags(uuid, canonical_name) VALUES ('t4', 'four');
         UPDATE tags SET icon = 'i' WHERE uuid = 't1'",
    );
    m.link(0, 1);
    m.advance(10_000);
    let restored = |e: &Event| {
        matches!(
            e,
            Event::Restored {
                held: 4,
                had: 3,
                ..
            }
        )
    };
    assert_eq!(m.count_events(0, restored), 1, "{:?}", m.events);
    assert_eq!(
        m.devs[0].store.lib.digest().unwrap(),
        m.devs[1].store.lib.digest().unwrap()
    );
    assert_eq!(m.devs[1].count("tags"), 4);
    let t1 = m.devs[1]
        .store
        .lib
        .conn
        .query_row(
            "SELECT color || icon FROM tags WHERE uuid = 't1'",
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap();
    assert_eq!(t1, "redi", "the lost update and the new one both hold");
}

/// A restored device takes its lost changes back from every peer, not only
/// the one that told it: here B holds one lost change and C another, and B
/// and C never meet. Both come back to A, and through A to each other (A
/// renumbers what it took back, so peers whose watermarks already cover the
/// old numbers take it too).
#[test]
fn a_restored_database_takes_its_changes_back_from_every_peer() {
    let mut m = Mesh::new("restore-all", 3);
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one')");
    let snapshot = m.devs[0].dir.join("backup.db");
    m.devs[0].exec(&format!("VACUUM INTO '{}'", snapshot.display()));
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t2', 'two')");
    m.link(0, 1);
    assert_eq!(m.devs[1].count("tags"), 2);
    m.unlink(0, 1);
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t3', 'three')");
    m.link(0, 2);
    assert_eq!(m.devs[2].count("tags"), 3);
    m.unlink(0, 2);
    m.restore(0, &snapshot);
    assert_eq!(m.devs[0].count("tags"), 1);
    m.link(0, 1);
    m.advance(10_000);
    assert_eq!(m.devs[0].count("tags"), 2, "t2 back from B");
    m.link(0, 2);
    m.advance(10_000);
    let restored = |e: &Event| matches!(e, Event::Restored { .. });
    assert_eq!(m.count_events(0, restored), 1, "{:?}", m.events);
    for d in 0..3 {
        assert_eq!(m.devs[d].count("tags"), 3, "device {d}");
    }
    m.assert_identical();
    assert_eq!(m.devs[0].quarantined(), 0);
    assert_eq!(m.devs[2].quarantined(), 0);
}

/// The same, but the restored device writes more than the backup lacked, so no
/// peer holds more of it than it does: the syncer itself sees the database went
/// back (a change of its own at or below the sequence it last saw is newer than
/// its clock then) and recovers the same way.
#[test]
fn a_restored_database_that_wrote_more_than_it_lost_is_noticed_by_its_syncer() {
    let mut m = Mesh::new("restore-more", 2);
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one')");
    let snapshot = m.devs[0].dir.join("backup.db");
    m.devs[0].exec(&format!("VACUUM INTO '{}'", snapshot.display()));
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t2', 'two'), ('t3', 'three')");
    m.link(0, 1);
    assert_eq!(m.devs[1].count("tags"), 3);
    m.unlink(0, 1);
    m.restore(0, &snapshot);
    for i in 4..10 {
        m.devs[0].exec(&format!(
            "INSERT INTO tags(uuid, canonical_name) VALUES ('t{i}', 'n{i}')"
        ));
    }
    m.link(0, 1);
    m.advance(10_000);
    let restored = |e: &Event| matches!(e, Event::Restored { held: 3, .. });
    assert_eq!(m.count_events(0, restored), 1, "{:?}", m.events);
    assert_eq!(m.devs[0].count("tags"), 9);
    assert_eq!(m.devs[1].count("tags"), 9);
    assert_eq!(
        m.devs[0].store.lib.digest().unwrap(),
        m.devs[1].store.lib.digest().unwrap()
    );
}

/// A peer may leave a change out of a page because a change of its own
/// superseded it; if a restore then loses that change of its own before
/// anyone took it, the device that took the page holds neither, and its
/// watermark covers both. Here C serves A B's origin without B's delete of t1
/// (C re-created t1), then C is restored from a copy older than both: when C
/// comes back and pulls its own origin, A stops vouching for what it took and
/// pulls B's origin again, so t1 ends deleted everywhere (simulation seed
/// 2817).
#[test]
fn a_peer_restored_after_serving_pages_makes_its_peers_pull_again() {
    let mut m = Mesh::new("restore-taint", 3);
    let snapshot = gap_served_by_c(&mut m, &[0]);
    assert_eq!(m.devs[0].count("tags"), 1, "A never got B's delete");
    // C's re-creation is lost with the restore.
    m.restore(2, &snapshot);
    m.link(0, 2);
    m.link(1, 2);
    m.link(0, 1);
    m.advance(10_000);
    let again = |e: &Event| matches!(e, Event::PeerRestored { .. });
    assert_eq!(m.count_events(0, again), 1, "{:?}", m.events);
    for d in 0..3 {
        assert_eq!(m.devs[d].count("tags"), 0, "device {d}");
    }
    m.assert_identical();
}

/// The same gap the other way round (the relay gap, simulation seed 397):
/// C, restored, pulls B's origin from A before it has taken its own
/// changes back from A. A's claim rests on pages C served before the
/// restore, which left out B's delete for a re-creation the restore lost:
/// believed, C would hold B's origin complete without the delete, and once
/// A pulls B's origin again (C's reclaim resets it) nothing would ever
/// bring the delete to C. Until C has taken its changes back from a peer,
/// that peer's pages of other origins count only as far as they run
/// without a gap. Fails without it: C alone ends with t1.
#[test]
fn a_restored_device_takes_no_gap_from_a_peer_it_has_not_reclaimed_from() {
    let mut m = Mesh::new("restore-relay-gap", 4);
    let (idb, idc) = (m.devs[1].id.clone(), m.devs[2].id.clone());
    let snapshot = gap_served_by_c(&mut m, &[0]);
    m.restore(2, &snapshot);
    // C starts taking its own changes back from D (its pages held up), and
    // meanwhile takes B's origin from A, whose turn to reclaim is to come.
    // A does not hear of the restore meanwhile either (C's Hellos to it are
    // lost), so A serves the gap and only C's doubt stands in its way.
    let held_up = |from: usize, to: usize, env: &Envelope| {
        (from != 2 && Mesh::page_of(env, &idc)) || (from == 2 && to == 0 && is_hello(env))
    };
    m.link_dropping(2, 3, held_up);
    m.link_dropping(0, 2, held_up);
    assert_eq!(m.devs[2].holds(&idb), 1, "C takes no gap from A yet");
    m.unlink(2, 3);
    m.unlink(0, 2);
    for (a, b) in [(0, 2), (2, 3), (0, 1), (0, 3)] {
        m.link(a, b);
    }
    m.advance(10_000);
    m.link(1, 2);
    m.advance(10_000);
    for d in 0..4 {
        assert_eq!(m.devs[d].count("tags"), 0, "device {d}");
    }
    m.assert_identical();
}

/// The gap passed on by a relay (four devices): D took B's origin from A
/// after C's restore, after C had taken its changes back from D (so D's
/// reset is over) and before C took them back from A (so A still vouches
/// for what C's lost self served it). D meets neither the restored device
/// again nor B's pages, so only hearing of the restore from A tells it:
/// each Hello names the restores its sender verified its claims after, and
/// a device takes another peer's claims beyond what its pages carry
/// without a gap only from a peer that names every restore it knows of;
/// hearing of a restore it did not know, it pulls everything again. Fails
/// without it: D takes the gap from A.
#[test]
fn a_gap_passed_on_by_a_relay_before_its_reset_is_pulled_again() {
    let mut m = Mesh::new("restore-relay-on", 4);
    let idb = m.devs[1].id.clone();
    // D, too, heard B report its delete's number but took no page from it.
    let snapshot = gap_served_by_c(&mut m, &[0, 3]);
    m.restore(2, &snapshot);
    // C takes its changes back from D (D starts over), then D takes B's
    // origin from A, which has not heard of the restore (D's Hellos to it
    // are lost): only as far as it runs unbroken.
    m.link(2, 3);
    m.unlink(2, 3);
    m.link_dropping(0, 3, |from, _, env| from == 3 && is_hello(env));
    m.unlink(0, 3);
    assert_eq!(m.devs[3].holds(&idb), 1, "D takes no gap from A");
    m.link(0, 2);
    m.unlink(0, 2);
    for (a, b) in [(0, 3), (0, 1), (2, 3)] {
        m.link(a, b);
    }
    for _ in 0..3 {
        m.advance(10_000);
    }
    for d in 0..4 {
        assert_eq!(m.devs[d].count("tags"), 0, "device {d}");
    }
    m.assert_identical();
}

/// The same gap after a whole folder restored elsewhere (`sync.db` with
/// it): C's re-creation of t1 reached no one, and C sent A no Hello after
/// it, so nothing A holds names C's lost history, and C would never know it
/// was restored (A would keep t1 for good). A relayed page carries its
/// sender's clock, which A keeps as announced and sends back in its Hello
/// (`your_clock`): restored, C finds its clock below it, takes its changes
/// back, and A pulls B's origin again. Fails without it: A keeps t1.
#[test]
fn a_page_tells_the_clock_of_a_whole_folder_restored_after_serving_it() {
    let mut m = Mesh::new("restore-page-clock", 3);
    let (idb, idc) = (m.devs[1].id.clone(), m.devs[2].id.clone());
    m.devs[1].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one')");
    for (a, b) in [(0, 1), (1, 2)] {
        m.link(a, b);
        m.unlink(a, b);
    }
    // B deletes t1: C takes the delete, A hears its number only.
    m.devs[1].exec("DELETE FROM tags WHERE uuid = 't1'");
    m.link(1, 2);
    m.unlink(1, 2);
    m.link_dropping(0, 1, |from, _, env| from == 1 && Mesh::page_of(env, &idb));
    m.unlink(0, 1);
    let (db, sync) = (
        m.devs[2].dir.join("backup.db"),
        m.devs[2].dir.join("backup-sync.db"),
    );
    m.devs[2].exec(&format!("VACUUM INTO '{}'", db.display()));
    rusqlite::Connection::open(m.devs[2].dir.join("sync.db"))
        .and_then(|c| c.execute_batch(&format!("VACUUM INTO '{}'", sync.display())))
        .expect("copy sync.db");
    // C's Hello reaches A (its clock as the backup has it); A's pull of B's
    // origin is lost. Then C re-creates t1, and A's pull, sent again, is
    // served after it; C tells A nothing more of itself.
    let pull_of_b =
        |env: &Envelope| matches!(&env.payload, Payload::Pull { origin, .. } if *origin == idb);
    m.link_dropping(0, 2, |from, _, env| from == 0 && pull_of_b(env));
    m.devs[2].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one')");
    m.advance_dropping(10_000, |from, _, env| {
        from == 2 && (Mesh::page_of(env, &idc) || is_hello(env))
    });
    m.unlink(0, 2);
    assert_eq!(m.devs[0].holds(&idb), 2, "A vouches for B's delete");
    assert_eq!(m.devs[0].count("tags"), 1, "but never got it");
    m.restore_folder(2, &db, &sync);
    for (a, b) in [(0, 2), (1, 2), (0, 1)] {
        m.link(a, b);
    }
    for _ in 0..3 {
        m.advance(10_000);
    }
    for d in 0..3 {
        assert_eq!(m.devs[d].count("tags"), 0, "device {d}");
    }
    m.assert_identical();
}

/// A change a restore lost can reach a peer only after the restored device
/// took its changes back from that peer: here A's t13 went A → B → C, B was
/// restored (losing it) before A took its changes back from B, then B took
/// A's origin from C again under t2's old number, and C was restored in turn
/// before A took its changes back from C. Every watermark covers that number
/// and only B holds t13, so nothing else would ever bring it to A and C:
/// B's Hello names the range of A's changes it took from another device
/// since A pulled its own changes from it (`relayed`: t1 to t13, twelve of
/// them held by A's backup, and A wrote t14 under t13's number after the
/// restore), which starts below where A's restore renumbered its changes,
/// and A takes its changes back from B again (simulation seed 333). Fails
/// without it: B alone ends with t13.
#[test]
fn a_change_relayed_after_its_origin_took_its_changes_back_is_taken_back_again() {
    let mut m = Mesh::new("restore-relay", 3);
    let ida = m.devs[0].id.clone();
    let empty_b = m.devs[1].dir.join("backup.db");
    m.devs[1].exec(&format!("VACUUM INTO '{}'", empty_b.display()));
    let empty_c = m.devs[2].dir.join("backup.db");
    m.devs[2].exec(&format!("VACUUM INTO '{}'", empty_c.display()));
    // Twelve changes the backup keeps, so B takes more of A's changes that
    // A holds from the relay than the one it lacks.
    let kept: Vec<String> = (1..=12).map(|i| format!("('t{i}', 'n{i}')")).collect();
    m.devs[0].exec(&format!(
        "INSERT INTO tags(uuid, canonical_name) VALUES {}",
        kept.join(", ")
    ));
    let snapshot = m.devs[0].dir.join("backup.db");
    m.devs[0].exec(&format!("VACUUM INTO '{}'", snapshot.display()));
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t13', 'lost')");
    m.link(0, 1);
    m.unlink(0, 1);
    m.link(1, 2);
    m.unlink(1, 2);
    assert_eq!(m.devs[2].count("tags"), 13, "C took t13 from B");
    m.restore(1, &empty_b);
    m.restore(0, &snapshot);
    // A writes at once, under the number t13 had: what the restored copy
    // held no longer bounds what it lost.
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t14', 'new')");
    // A takes its changes back from B, which lost t13; B takes none of A's
    // pages meanwhile, so it pulls A's origin from C next, t13 with it.
    m.link_dropping(0, 1, |from, _, env| from == 0 && Mesh::page_of(env, &ida));
    m.unlink(0, 1);
    m.link(1, 2);
    m.unlink(1, 2);
    assert_eq!(m.devs[1].count("tags"), 13, "B took t13 from C");
    m.restore(2, &empty_c);
    m.link(0, 2);
    m.link(0, 1);
    m.link(1, 2);
    m.advance(10_000);
    for d in 0..3 {
        assert_eq!(m.devs[d].count("tags"), 14, "device {d}");
    }
    m.assert_identical();
    let again = |e: &Event| matches!(e, Event::Retaking { .. });
    assert_eq!(m.count_events(0, again), 1, "{:?}", m.events);
}

/// A whole folder (`sync.db` with it) restored from a copy older than its
/// last change, where that change was superseded on the peer since and the
/// clock the device last announced to the peer predates it: nothing the peer
/// holds names the lost change, and the restored device's next write reuses
/// its number. The peer keeps the last change it took from each origin itself
/// and sends it back (`yours`), so A sees its number held under another HLC
/// and renumbers (simulation seeds 151 and 683 with whole-folder restores).
/// Fails without it: B never takes t3.
#[test]
fn a_whole_folder_restored_elsewhere_is_told_by_the_last_change_taken_from_it() {
    let mut m = Mesh::new("restore-taken", 2);
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one')");
    m.link(0, 1);
    let (db, sync) = (
        m.devs[0].dir.join("backup.db"),
        m.devs[0].dir.join("backup-sync.db"),
    );
    m.devs[0].exec(&format!("VACUUM INTO '{}'", db.display()));
    rusqlite::Connection::open(m.devs[0].dir.join("sync.db"))
        .and_then(|c| c.execute_batch(&format!("VACUUM INTO '{}'", sync.display())))
        .expect("copy sync.db");
    // A's change 2 reaches B pushed (no Hello announces it), and B's own
    // write supersedes it there.
    m.devs[0].exec("UPDATE tags SET color = 'red' WHERE uuid = 't1'");
    m.committed(0);
    m.unlink(0, 1);
    m.devs[1].exec("UPDATE tags SET color = 'blue' WHERE uuid = 't1'");
    m.restore_folder(0, &db, &sync);
    m.devs[0].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t3', 'three')");
    m.link(0, 1);
    m.advance(10_000);
    for d in 0..2 {
        assert_eq!(m.devs[d].count("tags"), 2, "device {d}");
    }
    m.assert_identical();
    let restored = |e: &Event| {
        matches!(
            e,
            Event::Restored {
                reused: Some(2),
                ..
            }
        )
    };
    assert_eq!(m.count_events(0, restored), 1, "{:?}", m.events);
}

/// Whether `env` is a Hello.
fn is_hello(env: &Envelope) -> bool {
    matches!(env.payload, Payload::Hello { .. })
}

/// Devices A (0), B (1) and C (2) of `m`: A holds B's origin complete
/// without B's delete of t1, which C left out of its pages as superseded by
/// its own re-creation of t1 (not yet taken by anyone). Each device of
/// `hear` (A first) heard B report the delete's number but took no page
/// from B. Returns C's snapshot from before both (its restore loses the
/// re-creation).
fn gap_served_by_c(m: &mut Mesh, hear: &[usize]) -> std::path::PathBuf {
    let (idb, idc) = (m.devs[1].id.clone(), m.devs[2].id.clone());
    m.devs[1].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one')");
    for (a, b) in [(0, 1), (1, 2)] {
        m.link(a, b);
        m.unlink(a, b);
    }
    let snapshot = m.devs[2].dir.join("backup.db");
    m.devs[2].exec(&format!("VACUUM INTO '{}'", snapshot.display()));
    // B deletes t1; C takes the delete, then re-creates t1 (supersedes it).
    m.devs[1].exec("DELETE FROM tags WHERE uuid = 't1'");
    m.link(1, 2);
    m.unlink(1, 2);
    m.devs[2].exec("INSERT INTO tags(uuid, canonical_name) VALUES ('t1', 'one')");
    for &d in hear {
        m.link_dropping(d, 1, |from, _, env| from == 1 && Mesh::page_of(env, &idb));
        m.unlink(d, 1);
    }
    // A takes B's origin from C, which leaves the delete out; not C's own.
    m.link_dropping(0, 2, |_, to, env| to == 0 && Mesh::page_of(env, &idc));
    m.unlink(0, 2);
    assert_eq!(m.devs[0].holds(&idb), 2, "A vouches for B's delete");
    snapshot
}
