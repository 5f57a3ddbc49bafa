//! A device-owned row claimed by two devices (both built the same uuid for their
//! own row, or one of them is wrong) ends the same on every device that owns
//! neither claim, whatever order the claims arrive in: the smaller device id's
//! claim holds the row, the other is quarantined (never dropped). Each claiming
//! device keeps its own row and quarantines the other's.

use rusqlite::Connection;

use sdsync_syncer::sqlstore::quarantine;
use sdsync_tests::{Change, Lib, digest, temp_dir};

const SMALL: &str = "00000000-0000-4000-8000-000000000001";
const LARGE: &str = "00000000-0000-4000-8000-000000000002";

fn device(dir: &str, name: &str, id: &str) -> Lib {
    let lib = Lib::create(&temp_dir(dir).join(format!("{name}.db")));
    lib.exec(&format!("SELECT sdsync_reidentify('{id}')"));
    lib
}

/// Applies `from`'s own changes to `to` the way the syncer does: change by
/// change, quarantining those refused.
fn deliver(to: &Lib, from: &Lib) {
    deliver_some(to, &own_changes(from));
}

fn own_changes(from: &Lib) -> Vec<Change> {
    let me = from.device();
    from.changes()
        .into_iter()
        .filter(|c| c.origin == me)
        .collect()
}

fn deliver_some(to: &Lib, changes: &[Change]) {
    let tx = to.conn.unchecked_transaction().expect("begin");
    quarantine::apply_each(&tx, "peer", changes).expect("apply");
    tx.commit().expect("commit");
}

/// Two third devices: the first gets `c`'s changes then `d`'s, the second the
/// other way round.
fn in_both_orders(dir: &str, c: &Lib, d: &Lib) -> (Lib, Lib) {
    let first = device(dir, "h1", "00000000-0000-4000-8000-00000000000a");
    deliver(&first, c);
    deliver(&first, d);
    let second = device(dir, "h2", "00000000-0000-4000-8000-00000000000b");
    deliver(&second, d);
    deliver(&second, c);
    (first, second)
}

/// `(origin, seq, op)` of every quarantined change.
fn quarantined(conn: &Connection) -> Vec<(String, i64, String)> {
    let mut stmt = conn
        .prepare(
            "SELECT origin, seq, json_extract(change, '$.op') FROM sdsync_quarantine ORDER BY origin, seq",
        )
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("read")
}

/// Two claims on location `loc-u`: `creator` keeps it, `deleter` created and
/// deleted its own (a tombstone is a claim too). Returns the two devices.
fn claims(dir: &str, creator: &str, deleter: &str) -> (Lib, Lib) {
    claims_with(
        dir,
        creator,
        deleter,
        "DELETE FROM locations WHERE uuid = 'loc-u'",
    )
}

fn claims_with(dir: &str, creator: &str, deleter: &str, then: &str) -> (Lib, Lib) {
    let c = device(dir, "creator", creator);
    let d = device(dir, "deleter", deleter);
    c.exec("INSERT INTO locations(uuid, name, path) VALUES ('loc-u', 'mine', '/c')");
    c.exec(
        "INSERT INTO entries(uuid, name, location_id) SELECT 'e1', 'child', id FROM locations WHERE uuid = 'loc-u'",
    );
    d.exec(&format!(
        "INSERT INTO locations(uuid, name) VALUES ('loc-u', 'theirs'); {then}"
    ));
    (c, d)
}

#[test]
fn two_claims_on_an_owned_row_end_the_same_whatever_the_arrival_order() {
    for (creator, deleter) in [(SMALL, LARGE), (LARGE, SMALL)] {
        let dir = format!("own-{}", &creator[creator.len() - 1..]);
        let (c, d) = claims(&dir, creator, deleter);
        let (first, second) = in_both_orders(&dir, &c, &d);
        assert_eq!(
            digest(&first.conn),
            digest(&second.conn),
            "creator {creator}"
        );
        assert_eq!(quarantined(&first.conn), quarantined(&second.conn));
        let alive = first.count("locations");
        if creator == SMALL {
            assert_eq!(alive, 1, "the smaller id's row holds");
            assert_eq!(first.text("SELECT name FROM locations"), "mine");
            assert_eq!(quarantined(&first.conn)[0].2, "delete");
        } else {
            assert_eq!(alive, 0, "the smaller id's delete holds");
            assert_eq!(quarantined(&first.conn)[0].0, LARGE);
            // The creator's child entry waits for its location, kept too.
            assert_eq!(first.count("entries"), 0);
        }
        // Retrying changes nothing: the losing claim stays quarantined.
        for h in [&first, &second] {
            let before = quarantined(&h.conn);
            let tx = h.conn.unchecked_transaction().expect("begin");
            let r = quarantine::retry_in(&tx, None, 100).expect("retry");
            tx.commit().expect("commit");
            assert_eq!((r.applied, r.kept), (0, before.len()));
            assert_eq!(quarantined(&h.conn), before);
            let reasons = h.text("SELECT group_concat(reason, ' | ') FROM sdsync_quarantine");
            assert!(
                reasons.contains("claimed by device") || reasons.contains("owned by device"),
                "{reasons}"
            );
        }
    }
}

#[test]
fn two_creates_of_an_owned_row_end_the_same_whatever_the_arrival_order() {
    for (one, other) in [(SMALL, LARGE), (LARGE, SMALL)] {
        let dir = format!("own-both-{}", &one[one.len() - 1..]);
        let (c, d) = claims_with(&dir, one, other, "UPDATE locations SET path = '/d'");
        let (first, second) = in_both_orders(&dir, &c, &d);
        assert_eq!(digest(&first.conn), digest(&second.conn), "first {one}");
        assert_eq!(quarantined(&first.conn), quarantined(&second.conn));
        let winner = if one == SMALL { "mine" } else { "theirs" };
        assert_eq!(first.text("SELECT name FROM locations"), winner);
        assert_eq!(quarantined(&first.conn).len(), 1);
    }
}

#[test]
fn each_claiming_device_keeps_its_own_row_and_shows_the_other_claim() {
    let (c, d) = claims("own-claimants", LARGE, SMALL);
    deliver(&c, &d);
    deliver(&d, &c);
    assert_eq!(
        c.text("SELECT name FROM locations WHERE uuid = 'loc-u'"),
        "mine"
    );
    assert_eq!(d.count("locations"), 0);
    assert_eq!(
        quarantined(&c.conn).len(),
        1,
        "the deleter's claim on the creator"
    );
    assert_eq!(
        quarantined(&d.conn)[0].0,
        LARGE,
        "the creator's claim on the deleter"
    );
    // The user ends it by deleting one of the rows: the creator's.
    c.exec("DELETE FROM locations WHERE uuid = 'loc-u'");
    deliver(&d, &c);
    let tx = c.conn.unchecked_transaction().expect("begin");
    quarantine::retry_in(&tx, None, 100).expect("retry");
    tx.commit().expect("commit");
    assert_eq!(digest(&c.conn), digest(&d.conn));
}

/// The winning claim arrives while its parent is missing (so it waits, parked)
/// and the losing device then deletes its own row: the parked claim still holds,
/// the loser's create and delete are both quarantined, exactly as when the
/// winner arrives first.
#[test]
fn a_parked_winning_claim_holds_against_the_losers_later_changes() {
    let dir = "own-parked";
    let winner = device(dir, "winner", SMALL);
    let loser = device(dir, "loser", LARGE);
    winner.exec(
        "INSERT INTO locations(uuid, name) VALUES ('lw', 'w');
         INSERT INTO entries(uuid, name, location_id) SELECT 'u', 'w-entry', id FROM locations WHERE uuid = 'lw'",
    );
    loser.exec(
        "INSERT INTO locations(uuid, name) VALUES ('ll', 'l');
         INSERT INTO entries(uuid, name, location_id) SELECT 'u', 'l-entry', id FROM locations WHERE uuid = 'll'",
    );
    let loser_created = own_changes(&loser);
    loser.exec("DELETE FROM entries WHERE uuid = 'u'");
    let loser_deleted = own_changes(&loser);
    let won = own_changes(&winner);
    let (location, entry): (Vec<_>, Vec<_>) = won.into_iter().partition(|c| c.tbl == "locations");

    let first = device(dir, "h1", "00000000-0000-4000-8000-00000000000a");
    deliver_some(&first, &loser_created);
    deliver_some(&first, &entry);
    assert_eq!(
        first.int("SELECT count(*) FROM sdsync_parked"),
        1,
        "waits for lw"
    );
    deliver_some(&first, &loser_deleted);
    deliver_some(&first, &location);

    let second = device(dir, "h2", "00000000-0000-4000-8000-00000000000b");
    deliver(&second, &winner);
    deliver_some(&second, &loser_created);
    deliver_some(&second, &loser_deleted);

    assert_eq!(digest(&first.conn), digest(&second.conn));
    assert_eq!(
        first.text("SELECT name FROM entries WHERE uuid = 'u'"),
        "w-entry"
    );
    let seqs = |h: &Lib| -> Vec<(String, i64)> {
        quarantined(&h.conn)
            .into_iter()
            .map(|(o, s, _)| (o, s))
            .collect()
    };
    assert_eq!(seqs(&first), seqs(&second));
    assert_eq!(first.int("SELECT count(*) FROM sdsync_parked"), 0);
}
