//! Dependency-aware paging (issue 9): a page carries, first, the later
//! changes of its origin that its rows refer to, so the receiver never parks a
//! child for a parent the sender holds.

use sdsync_syncer::proto::message::Payload;
use sdsync_syncer::proto::store::Store;
use sdsync_tests::wire::{NOW, Wire, sends, two};

/// An indexer's order: a location, a directory tree and files, then the
/// directories' sizes and the location's totals, each after the rows below
/// them. Pages are served in order of each row's latest version, so every
/// file's parents come last; without parents first, B parks every file (and
/// every directory below the top) until they arrive.
#[test]
fn parents_updated_after_their_children_never_make_them_wait() {
    let (a, b, mut na, mut nb) = two("parents", 7, 2);
    let (ida, idb) = (a.device().unwrap(), b.device().unwrap());
    a.lib
        .exec(
            "BEGIN;
             INSERT INTO locations(uuid, name, path) VALUES ('loc', 'Home', '/home/me');
             INSERT INTO content_identities(uuid, content_hash, size, kind)
               VALUES ('c1', 'h1', 1, 'file'), ('c2', 'h2', 2, 'file');
             INSERT INTO entries(uuid, location_id, name, kind) VALUES ('top', 1, 'top', 'dir');
             WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 3)
             INSERT INTO entries(uuid, location_id, parent_id, name, kind)
               SELECT 'd' || value, 1, 1, 'dir' || value, 'dir' FROM s;
             WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 40)
             INSERT INTO entries(uuid, location_id, parent_id, content_id, name, kind, size)
               SELECT 'f' || value, 1, 2 + value % 3, 1 + value % 2, 'f' || value, 'file', value
               FROM s;
             COMMIT;",
        )
        .unwrap();
    // Bottom up: the directories' sizes, the top's, then the location's totals.
    a.lib
        .exec(
            "UPDATE entries SET size = (SELECT sum(size) FROM entries f WHERE f.parent_id = entries.id)
               WHERE kind = 'dir' AND parent_id IS NOT NULL;
             UPDATE entries SET size = (SELECT sum(size) FROM entries d WHERE d.parent_id = entries.id)
               WHERE uuid = 'top';
             UPDATE content_identities SET kind = 'image';
             UPDATE locations SET total_file_count = 40, scan_state = 'done';",
        )
        .unwrap();

    let mut wire = Wire::default();
    wire.to_b.extend(sends(&na.connect(&idb, NOW, &a).unwrap()));
    wire.to_a.extend(sends(&nb.connect(&ida, NOW, &b).unwrap()));
    let mut pages = 0;
    let mut ahead = 0;
    while !(wire.to_a.is_empty() && wire.to_b.is_empty()) {
        if let Some(Payload::Page { changes, .. }) = wire.to_b.front().map(|e| &e.payload) {
            pages += 1;
            // Brought forward: the changes before the page's in-order run.
            let last = changes.last().map_or(0, |c| c.seq);
            ahead += changes.iter().take_while(|c| c.seq > last).count();
        }
        wire.step((&mut na, &a), (&mut nb, &b));
        let parked: i64 = b
            .lib
            .conn
            .query_row("SELECT count(*) FROM sdsync_parked", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            parked, 0,
            "after page {pages}, B parked a row whose parent A holds"
        );
    }
    assert!(pages > 5, "several pages: {pages}");
    assert!(ahead > 0, "some page carried a later parent first");
    assert_eq!(b.lib.count("entries").unwrap(), 44);
    assert_eq!(a.lib.digest().unwrap(), b.lib.digest().unwrap());
    let mark = |s: &dyn Store| {
        s.watermarks()
            .unwrap()
            .into_iter()
            .find(|(o, _)| *o == ida)
            .map(|m| m.1)
    };
    assert_eq!(mark(&b), mark(&a), "B is complete up to what A issued");
}
