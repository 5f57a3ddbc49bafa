//! Protocol nodes over real library databases, with messages carried by hand
//! (no network, no time passing): the helpers of the protocol and paging tests.
//!
//! ```no_run
//! use sdsync_tests::wire::{NOW, Wire, sends, two};
//! use sdsync_syncer::proto::store::Store;
//! let (a, b, mut na, mut nb) = two("demo", 10, 2);
//! let (ida, idb) = (a.device().unwrap(), b.device().unwrap());
//! let mut wire = Wire::default();
//! wire.to_b.extend(sends(&na.connect(&idb, NOW, &a).unwrap()));
//! wire.to_a.extend(sends(&nb.connect(&ida, NOW, &b).unwrap()));
//! wire.settle((&mut na, &a), (&mut nb, &b));
//! ```

use rusqlite::Connection;
use sdsync_syncer::library::Library;
use sdsync_syncer::proto::message::{Envelope, encode};
use sdsync_syncer::proto::node::{Config, Event, Node, Output};
use sdsync_syncer::proto::store::{SqlStore, Store};

use crate::{extension_path, temp_dir};

/// The wall clock of every node and database here (fixed: no time passes).
pub const NOW: u64 = 1_795_305_600_000;

/// A new library at `name`'s own folder, its clock at [`NOW`], with an
/// in-memory `sync.db`.
pub fn store(name: &str) -> SqlStore {
    let lib =
        Library::create(&temp_dir(name).join("database.db"), &extension_path()).expect("library");
    lib.conn
        .query_row("SELECT sdsync_test_clock(?1)", [NOW as i64], |_| Ok(()))
        .expect("clock");
    SqlStore::new(lib, Connection::open_in_memory().expect("sync.db")).expect("store")
}

/// A node for `s`'s device with `peer` as its one peer.
pub fn node(s: &SqlStore, peer: &str, cfg: Config) -> Node {
    let mut n = Node::new(&s.device().expect("device"), "lib", cfg);
    n.add_peer(peer);
    n
}

/// The messages among a node's outputs.
pub fn sends(out: &[Output]) -> Vec<Envelope> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { env, .. } => Some(env.clone()),
            Output::Event(_) => None,
        })
        .collect()
}

/// The events among a node's outputs.
pub fn events(out: &[Output]) -> Vec<Event> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            Output::Send { .. } => None,
        })
        .collect()
}

/// Two devices' stores and nodes, paired, with pages of `rows` and a window.
pub fn two(name: &str, rows: usize, window: usize) -> (SqlStore, SqlStore, Node, Node) {
    let a = store(&format!("{name}-a"));
    let b = store(&format!("{name}-b"));
    let (ida, idb) = (a.device().unwrap(), b.device().unwrap());
    let cfg = Config {
        page_rows: rows,
        window,
        ..Config::default()
    };
    let (na, nb) = (node(&a, &idb, cfg.clone()), node(&b, &ida, cfg));
    (a, b, na, nb)
}

/// Messages between two nodes, delivered in order each way (as QUIC delivers
/// them), with no time passing.
#[derive(Default)]
pub struct Wire {
    pub to_a: std::collections::VecDeque<Envelope>,
    pub to_b: std::collections::VecDeque<Envelope>,
}

impl Wire {
    /// Delivers one message each way; returns how many changes B applied.
    pub fn step(&mut self, a: (&mut Node, &SqlStore), b: (&mut Node, &SqlStore)) -> usize {
        let mut applied = 0;
        if let Some(m) = self.to_b.pop_front() {
            let out = b.0.receive(&encode(&m), NOW, b.1).unwrap();
            applied += applied_count(&out);
            self.to_a.extend(sends(&out));
        }
        if let Some(m) = self.to_a.pop_front() {
            self.to_b
                .extend(sends(&a.0.receive(&encode(&m), NOW, a.1).unwrap()));
        }
        applied
    }

    /// Delivers until nothing is on its way; returns how many changes B applied.
    pub fn settle(&mut self, a: (&mut Node, &SqlStore), b: (&mut Node, &SqlStore)) -> usize {
        let mut applied = 0;
        while !(self.to_a.is_empty() && self.to_b.is_empty()) {
            applied += self.step((&mut *a.0, a.1), (&mut *b.0, b.1));
        }
        applied
    }
}

/// How many changes the outputs say were applied.
pub fn applied_count(out: &[Output]) -> usize {
    events(out)
        .iter()
        .map(|e| match e {
            Event::Applied { count, .. } => *count,
            _ => 0,
        })
        .sum()
}
