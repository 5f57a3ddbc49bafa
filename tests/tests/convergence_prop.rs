//! Property: whatever 2–4 devices write, and in whatever order (with duplicates)
//! they exchange changes, they end with identical tables.
//!
//! `PROPTEST_CASES=2000 cargo test --release -p sdsync-tests --test convergence_prop`
//! runs a longer search than CI's default.

use proptest::prelude::*;
use sdsync_tests::{Change, Lib, apply, copy_all, temp_dir};

#[derive(Clone, Debug)]
enum Op {
    /// Create (if needed) a tag with a deterministic uuid and set one column.
    TagSet {
        db: usize,
        name: u8,
        col: u8,
        val: u8,
    },
    TagDelete {
        db: usize,
        name: u8,
    },
    /// Device-owned entries: `d{db}-e{key}`, children of a root entry or roots.
    EntryInsert {
        db: usize,
        key: u8,
        parent: Option<u8>,
    },
    EntryUpdate {
        db: usize,
        key: u8,
        size: u16,
    },
    EntryDelete {
        db: usize,
        key: u8,
    },
    /// Add or remove a membership of some device's entry in an album.
    Member {
        db: usize,
        album: u8,
        owner: usize,
        key: u8,
        add: bool,
    },
    /// Move a device's own entry under one of its top-level entries.
    EntryMove {
        db: usize,
        key: u8,
        parent: u8,
    },
    /// Move a membership to another entry (maybe another device's, maybe one
    /// being deleted meanwhile).
    MemberMove {
        db: usize,
        album: u8,
        owner: usize,
        key: u8,
        to: (usize, u8),
    },
    /// Send `from`'s changes to `to`, shuffled, maybe twice.
    Sync {
        from: usize,
        to: usize,
        seed: u64,
        dup: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let db = 0usize..4;
    prop_oneof![
        3 => (db.clone(), 0u8..4, 0u8..3, 0u8..4).prop_map(|(db, name, col, val)| Op::TagSet { db, name, col, val }),
        1 => (db.clone(), 0u8..4).prop_map(|(db, name)| Op::TagDelete { db, name }),
        3 => (db.clone(), 0u8..6, proptest::option::of(0u8..3)).prop_map(|(db, key, parent)| Op::EntryInsert { db, key, parent }),
        2 => (db.clone(), 0u8..6, any::<u16>()).prop_map(|(db, key, size)| Op::EntryUpdate { db, key, size }),
        1 => (db.clone(), 0u8..6).prop_map(|(db, key)| Op::EntryDelete { db, key }),
        2 => (db.clone(), 0u8..2, 0usize..4, 0u8..6, any::<bool>()).prop_map(|(db, album, owner, key, add)| Op::Member { db, album, owner, key, add }),
        1 => (db.clone(), 0u8..6, 0u8..3).prop_map(|(db, key, parent)| Op::EntryMove { db, key, parent }),
        1 => (db.clone(), 0u8..2, 0usize..4, 0u8..6, (0usize..4, 0u8..6)).prop_map(|(db, album, owner, key, to)| Op::MemberMove { db, album, owner, key, to }),
        4 => (db.clone(), db, any::<u64>(), any::<bool>()).prop_map(|(from, to, seed, dup)| Op::Sync { from, to, seed, dup }),
    ]
}

/// A narrow space of device 0's entries, memberships of them, moves and
/// deletes, where a move to a row deleted meanwhile is likely (the whole
/// space above rarely builds one: 2,000 cases on session 19's extension,
/// which diverges there, all passed).
fn moves() -> impl Strategy<Value = Op> {
    let db = 0usize..3;
    prop_oneof![
        2 => (0u8..2, proptest::option::of(0u8..2)).prop_map(|(key, parent)| Op::EntryInsert { db: 0, key, parent }),
        1 => (0u8..2).prop_map(|key| Op::EntryDelete { db: 0, key }),
        1 => (0u8..2, 0u8..2).prop_map(|(key, parent)| Op::EntryMove { db: 0, key, parent }),
        2 => (db.clone(), 0u8..2).prop_map(|(db, key)| Op::Member { db, album: 0, owner: 0, key, add: true }),
        2 => (db.clone(), 0u8..2, 0u8..2).prop_map(|(db, key, to)| Op::MemberMove { db, album: 0, owner: 0, key, to: (0, to) }),
        5 => (db.clone(), db, any::<u64>(), any::<bool>()).prop_map(|(from, to, seed, dup)| Op::Sync { from, to, seed, dup }),
    ]
}

fn run(libs: &[Lib], op: &Op) {
    let n = libs.len();
    match *op {
        Op::TagSet { db, name, col, val } => {
            let col = ["color", "icon", "description"][col as usize];
            libs[db % n].exec(&format!(
                "INSERT OR IGNORE INTO tags(uuid, canonical_name) VALUES (sdsync_uuid_v5('tag', 'tag{name}'), 'tag{name}');
                 UPDATE tags SET {col} = 'v{val}-{db}' WHERE uuid = sdsync_uuid_v5('tag', 'tag{name}');"
            ));
        }
        Op::TagDelete { db, name } => {
            libs[db % n].exec(&format!(
                "DELETE FROM tags WHERE uuid = sdsync_uuid_v5('tag', 'tag{name}')"
            ));
        }
        Op::EntryInsert { db, key, parent } => {
            let db = db % n;
            let parent = parent.map_or("NULL".to_string(), |p| {
                format!("(SELECT id FROM entries WHERE uuid = 'd{db}-e{p}' AND parent_id IS NULL)")
            });
            libs[db].exec(&format!(
                "INSERT OR IGNORE INTO entries(uuid, name, parent_id) VALUES ('d{db}-e{key}', 'n{key}', {parent})"
            ));
        }
        Op::EntryUpdate { db, key, size } => {
            let db = db % n;
            libs[db].exec(&format!(
                "UPDATE entries SET size = {size} WHERE uuid = 'd{db}-e{key}'"
            ));
        }
        Op::EntryDelete { db, key } => {
            let db = db % n;
            libs[db].exec(&format!("DELETE FROM entries WHERE uuid = 'd{db}-e{key}'"));
        }
        Op::Member {
            db,
            album,
            owner,
            key,
            add,
        } => {
            let lib = &libs[db % n];
            let entry = format!("d{}-e{key}", owner % n);
            if add {
                lib.exec(&format!(
                    "INSERT OR IGNORE INTO collections(uuid, name) VALUES (sdsync_uuid_v5('album', 'a{album}'), 'a{album}');
                     INSERT OR IGNORE INTO collection_entries(uuid, collection_id, entry_id)
                       SELECT sdsync_uuid_v5('collection_entry', c.uuid || '/' || e.uuid), c.id, e.id
                       FROM collections c, entries e WHERE c.uuid = sdsync_uuid_v5('album', 'a{album}') AND e.uuid = '{entry}';"
                ));
            } else {
                lib.exec(&format!(
                    "DELETE FROM collection_entries WHERE uuid = sdsync_uuid_v5('collection_entry', sdsync_uuid_v5('album', 'a{album}') || '/' || '{entry}')"
                ));
            }
        }
        Op::EntryMove { db, key, parent } => {
            let db = db % n;
            libs[db].exec(&format!(
                "UPDATE entries SET parent_id = (SELECT id FROM entries WHERE uuid = 'd{db}-e{parent}' AND parent_id IS NULL)
                 WHERE uuid = 'd{db}-e{key}' AND uuid <> 'd{db}-e{parent}'"
            ));
        }
        Op::MemberMove {
            db,
            album,
            owner,
            key,
            to: (to_owner, to_key),
        } => {
            let (from, to) = (
                format!("d{}-e{key}", owner % n),
                format!("d{}-e{to_key}", to_owner % n),
            );
            libs[db % n].exec(&format!(
                "UPDATE collection_entries SET entry_id = (SELECT id FROM entries WHERE uuid = '{to}')
                 WHERE uuid = sdsync_uuid_v5('collection_entry', sdsync_uuid_v5('album', 'a{album}') || '/' || '{from}')"
            ));
        }
        Op::Sync {
            from,
            to,
            seed,
            dup,
        } => {
            let (from, to) = (from % n, to % n);
            if from == to {
                return;
            }
            let mut changes = libs[from].changes();
            shuffle(&mut changes, seed);
            apply(&libs[to].conn, &changes).expect("apply shuffled changes");
            if dup {
                changes.reverse();
                apply(&libs[to].conn, &changes).expect("apply duplicates");
            }
        }
    }
}

/// Fisher–Yates with a small LCG, so a failing case replays exactly.
fn shuffle(changes: &mut [Change], mut seed: u64) {
    for i in (1..changes.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = (seed >> 33) as usize % (i + 1);
        changes.swap(i, j);
    }
}

/// 48 cases in CI; `PROPTEST_CASES` for longer searches.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn devices_converge(devices in 2usize..=4, ops in proptest::collection::vec(op(), 1..60)) {
        converge(devices, &ops)?;
    }
}

proptest! {
    // Four times as many: on session 19's extension 48 cases found the
    // divergence in one run of three, 1,000 within 11 s.
    #![proptest_config(ProptestConfig { cases: cases() * 4, ..ProptestConfig::default() })]

    #[test]
    fn references_moved_and_deleted_converge(ops in proptest::collection::vec(moves(), 1..60)) {
        converge(3, &ops)?;
    }
}

/// Runs `ops` on `devices` fresh libraries, exchanges everything, and checks
/// identical digests and watermarks.
fn converge(devices: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = temp_dir("prop");
    let libs: Vec<Lib> = (0..devices)
        .map(|i| {
            let lib = Lib::create(&dir.join(format!("d{i}.db")));
            lib.exec("PRAGMA foreign_keys = ON");
            lib
        })
        .collect();
    for op in ops {
        run(&libs, op);
    }
    for _ in 0..2 {
        for i in 0..devices {
            for j in 0..devices {
                if i != j {
                    copy_all(&libs[i], &libs[j]);
                }
            }
        }
    }
    let first = libs[0].digest();
    for lib in &libs[1..] {
        prop_assert_eq!(&lib.digest(), &first);
    }
    // Every device's own changes survive: each holds the others' watermarks.
    let marks = sdsync_tests::watermarks(&libs[0].conn);
    for lib in &libs[1..] {
        prop_assert_eq!(sdsync_tests::watermarks(&lib.conn), marks.clone());
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
