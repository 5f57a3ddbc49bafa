//! `sdsync demo`: three devices edit one library and converge through the protocol.
//!
//! ```no_run
//! let ext = sdsync_syncer::library::extension_path(None).unwrap();
//! assert!(sdsync_syncer::demo::run("/tmp/demo".as_ref(), &ext, 300).unwrap());
//! ```
//!
//! Each device is a library file plus its `sync.db`, and runs a protocol [`Node`].
//! The demo carries their messages in-process (encoded and decoded, as a
//! transport would); the QUIC transport is the next step.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use rusqlite::Connection;
use sdsync_core::hlc::wall_millis;

use crate::library::{Library, LibraryError, fingerprint};
use crate::proto::message::{Payload, encode};
use crate::proto::node::{Config, Event, Node, Output};
use crate::proto::store::{SqlStore, Store, StoreError};

/// A named device.
struct Device {
    name: &'static str,
    store: SqlStore,
    node: Node,
}

impl Device {
    fn lib(&self) -> &Library {
        &self.store.lib
    }
}

/// Carries messages between the devices' nodes.
#[derive(Default)]
struct Wire {
    queue: VecDeque<(usize, usize, Vec<u8>)>,
    sent: BTreeMap<&'static str, usize>,
    applied: usize,
}

/// Runs the demonstration; returns whether every device ended identical.
pub fn run(dir: &Path, ext: &Path, entries: usize) -> Result<bool, StoreError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|source| LibraryError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    println!("sdsync demo: 3 devices, libraries in {}\n", dir.display());
    let mut devices = Vec::new();
    for name in ["laptop", "phone", "nas"] {
        let lib = Library::create(&dir.join(format!("{name}.db")), ext)?;
        let sync = Connection::open(dir.join(format!("{name}.sync.db")))?;
        let store = SqlStore::new(lib, sync)?;
        let id = store.device()?;
        println!("  {name:<7} device {id}");
        devices.push(Device {
            name,
            node: Node::new(&id, "demo-library", Config::default()),
            store,
        });
    }
    let ids: Vec<String> = devices
        .iter()
        .map(|d| d.store.device())
        .collect::<Result<_, _>>()?;
    for d in &mut devices {
        for id in &ids {
            d.node.add_peer(id);
        }
    }
    let mut wire = Wire::default();
    let (laptop, phone, nas) = (0, 1, 2);

    step("laptop indexes a location (device-owned rows with integer foreign keys)");
    devices[laptop].lib().exec(&index_sql(entries))?;
    println!(
        "  laptop: {} entries under location Photos",
        devices[laptop].lib().count("entries")?
    );

    step("phone and nas create tags offline; 'Vacation' gets the same uuid on both");
    devices[phone].lib().exec(
        "INSERT INTO tags(uuid, canonical_name, color) VALUES (sdsync_uuid_v5('tag','Vacation'), 'Vacation', 'green');
         INSERT INTO tags(uuid, canonical_name) VALUES (sdsync_uuid_v5('tag','Family'), 'Family');
         INSERT INTO collections(uuid, name) VALUES (sdsync_uuid_v5('album','Best of 2026'), 'Best of 2026');",
    )?;
    devices[nas].lib().exec("INSERT INTO tags(uuid, canonical_name, icon) VALUES (sdsync_uuid_v5('tag','Vacation'), 'Vacation', 'beach');")?;

    step("laptop and phone connect: Hello, Pulls, Pages");
    link(&mut devices, &mut wire, laptop, phone, true)?;
    pump(&mut devices, &mut wire)?;
    table(&devices)?;

    step(
        "offline again, laptop and phone both recolour 'Vacation'; phone also sets its icon and fills the album",
    );
    link(&mut devices, &mut wire, laptop, phone, false)?;
    devices[laptop]
        .lib()
        .exec("UPDATE tags SET color = 'blue' WHERE canonical_name = 'Vacation'")?;
    devices[phone]
        .lib()
        .exec("UPDATE tags SET color = 'orange', icon = 'sun' WHERE canonical_name = 'Vacation'")?;
    devices[phone].lib().exec(
        "INSERT INTO collection_entries(uuid, collection_id, entry_id)
         SELECT sdsync_uuid_v5('collection_entry', c.uuid || '/' || e.uuid), c.id, e.id
         FROM collections c, entries e WHERE e.kind = 'file' ORDER BY e.uuid LIMIT 3;",
    )?;
    link(&mut devices, &mut wire, laptop, phone, true)?;
    pump(&mut devices, &mut wire)?;

    step("nas was offline the whole time; it connects to phone only and backfills everything");
    link(&mut devices, &mut wire, phone, nas, true)?;
    pump(&mut devices, &mut wire)?;
    link(&mut devices, &mut wire, laptop, nas, true)?;
    pump(&mut devices, &mut wire)?;
    for d in &devices {
        let v: String = d
            .lib()
            .conn
            .query_row(
                "SELECT canonical_name || ': color=' || coalesce(color, '-') || ' icon=' || coalesce(icon, '-') FROM tags WHERE canonical_name = 'Vacation'",
                [],
                |r| r.get(0),
            )
            .map_err(StoreError::Sync)?;
        println!("  {:<7} {v}", d.name);
    }

    step("live: laptop renames a file; the push reaches both peers");
    devices[laptop]
        .lib()
        .exec("UPDATE entries SET name = 'IMG_1_edited.jpg' WHERE uuid = 'entry-1'")?;
    let d = &mut devices[laptop];
    let out = d.node.committed(&d.store)?;
    queue(&mut wire, laptop, &devices, out);
    pump(&mut devices, &mut wire)?;

    step("ownership: phone tries to rename one of laptop's entries");
    match devices[phone]
        .lib()
        .exec("UPDATE entries SET name = 'mine.jpg' WHERE uuid = 'entry-1'")
    {
        Err(e) => println!("  refused: {e}"),
        Ok(()) => println!("  UNEXPECTED: the write went through"),
    }

    step("result");
    table(&devices)?;
    let now = wall_millis();
    for d in &devices {
        println!(
            "  {:<7} shared log (own changes not yet acknowledged): {}",
            d.name,
            d.node.log_size(now, &d.store)?
        );
    }
    let prints: Vec<String> = devices
        .iter()
        .map(|d| d.lib().digest().map(|g| fingerprint(&g)))
        .collect::<Result<_, _>>()?;
    let same = prints.windows(2).all(|w| w[0] == w[1]);
    println!(
        "\n{} ({} messages: {})",
        if same {
            "all devices converged: identical table digests"
        } else {
            "DIVERGED"
        },
        wire.sent.values().sum::<usize>(),
        wire.sent
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(same)
}

fn step(title: &str) {
    println!("\n== {title}");
}

/// Brings the link between two devices up (Hello both ways) or down.
fn link(
    devices: &mut [Device],
    wire: &mut Wire,
    a: usize,
    b: usize,
    up: bool,
) -> Result<(), StoreError> {
    for (x, y) in [(a, b), (b, a)] {
        let peer = devices[y].store.device()?;
        if up {
            let d = &mut devices[x];
            let out = d.node.connect(&peer, wall_millis(), &d.store)?;
            queue(wire, x, devices, out);
        } else {
            devices[x].node.disconnect(&peer);
        }
    }
    Ok(())
}

fn queue(wire: &mut Wire, from: usize, devices: &[Device], out: Vec<Output>) {
    for o in out {
        match o {
            Output::Send { to, env } => {
                let Some(to) = devices
                    .iter()
                    .position(|d| d.store.device().ok().as_deref() == Some(&to))
                else {
                    continue;
                };
                let kind = match env.payload {
                    Payload::Hello { .. } => "hello",
                    Payload::Pull { .. } => "pull",
                    Payload::Page { .. } => "page",
                    Payload::Refused { .. } => "refused",
                };
                *wire.sent.entry(kind).or_default() += 1;
                wire.queue.push_back((from, to, encode(&env)));
            }
            Output::Event(Event::Applied { count, .. }) => wire.applied += count,
            Output::Event(e) => println!("  event at {}: {e:?}", devices[from].name),
        }
    }
}

/// Delivers messages until none are left, then reports what moved.
fn pump(devices: &mut [Device], wire: &mut Wire) -> Result<(), StoreError> {
    let before: usize = wire.sent.values().sum();
    let applied = wire.applied;
    while let Some((_, to, bytes)) = wire.queue.pop_front() {
        let d = &mut devices[to];
        let out = d.node.receive(&bytes, wall_millis(), &d.store)?;
        queue(wire, to, devices, out);
    }
    println!(
        "  {} messages, {} changes applied",
        wire.sent.values().sum::<usize>() - before,
        wire.applied - applied
    );
    Ok(())
}

fn table(devices: &[Device]) -> Result<(), StoreError> {
    println!(
        "\n  {:<7} {:>8} {:>5} {:>7} {:>8}  digest",
        "device", "entries", "tags", "albums", "members"
    );
    for d in devices {
        let lib = d.lib();
        println!(
            "  {:<7} {:>8} {:>5} {:>7} {:>8}  {}",
            d.name,
            lib.count("entries")?,
            lib.count("tags")?,
            lib.count("collections")?,
            lib.count("collection_entries")?,
            fingerprint(&lib.digest()?)
        );
    }
    Ok(())
}

fn index_sql(entries: usize) -> String {
    format!(
        "BEGIN;
         INSERT INTO locations(uuid, name, path) VALUES (sdsync_uuid(), 'Photos', '/home/me/Photos');
         INSERT INTO entries(uuid, name, kind, location_id) VALUES ('entry-root', 'Photos', 'dir', (SELECT id FROM locations));
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {entries})
         INSERT INTO entries(uuid, name, kind, size, location_id, parent_id)
         SELECT 'entry-' || i, 'IMG_' || i || '.jpg', 'file', 1000 + i, (SELECT id FROM locations),
                (SELECT id FROM entries WHERE uuid = 'entry-root') FROM n;
         COMMIT;"
    )
}
