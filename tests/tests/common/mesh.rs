//! Devices as library folders with protocol nodes, messages delivered in process
//! (shared by `quarantine.rs` and `watermarks.rs`).

#![allow(dead_code)] // each test file uses a part

use sdsync_core::hlc::wall_millis;
use sdsync_syncer::home::Home;
use sdsync_syncer::proto::message::{Envelope, Payload, encode};
use sdsync_syncer::proto::node::{Config, Event, Node, Output};
use sdsync_syncer::proto::store::{SqlStore, Store};
use sdsync_tests::{extension_path, temp_dir};

/// One device: its folder, store and node.
pub struct Dev {
    pub dir: std::path::PathBuf,
    pub home: Home,
    pub store: SqlStore,
    pub node: Node,
    pub id: String,
}

impl Dev {
    /// Runs SQL on the device's database as an app would.
    pub fn exec(&self, sql: &str) {
        self.store.lib.exec(sql).expect(sql);
    }

    pub fn count(&self, table: &str) -> i64 {
        self.store.lib.count(table).expect("count")
    }

    pub fn status(&self) -> String {
        self.home.status().expect("status").to_string()
    }

    pub fn quarantined(&self) -> i64 {
        self.store
            .lib
            .conn
            .query_row("SELECT count(*) FROM sdsync_quarantine", [], |r| r.get(0))
            .expect("quarantine")
    }

    pub fn kept(&self) -> i64 {
        self.store
            .lib
            .conn
            .query_row("SELECT count(*) FROM sdsync_kept", [], |r| r.get(0))
            .expect("kept")
    }

    pub fn dead_letters(&self) -> i64 {
        self.store
            .sync
            .query_row("SELECT count(*) FROM dead_letters", [], |r| r.get(0))
            .expect("dead letters")
    }

    /// The effective watermark of `origin` (what this device claims).
    pub fn holds(&self, origin: &str) -> i64 {
        self.store
            .watermarks()
            .expect("watermarks")
            .into_iter()
            .find(|(o, _)| o == origin)
            .map_or(0, |m| m.1)
    }
}

/// The devices of one library, every one paired with every other.
pub struct Mesh {
    pub devs: Vec<Dev>,
    /// Events by device index.
    pub events: Vec<(usize, Event)>,
    /// The protocol's time (ahead of the wall clock, never behind).
    pub now: u64,
}

impl Mesh {
    pub fn new(name: &str, n: usize) -> Self {
        let mut devs = Vec::new();
        for i in 0..n {
            let dir = temp_dir(&format!("{name}-{i}"));
            let home = Home::init(&dir, &extension_path(), Some("lib")).expect("init");
            let (store, _, _) = home.syncer_parts().expect("store");
            let id = store.device().expect("device");
            let node = Node::new(&id, "lib", Config::default());
            devs.push(Dev {
                dir,
                home,
                store,
                node,
                id,
            });
        }
        let ids: Vec<String> = devs.iter().map(|d| d.id.clone()).collect();
        for d in &mut devs {
            for id in ids.iter().filter(|id| **id != d.id) {
                d.node.add_peer(id);
            }
        }
        Self {
            devs,
            events: Vec::new(),
            now: wall_millis(),
        }
    }

    fn index(&self, id: &str) -> usize {
        self.devs
            .iter()
            .position(|d| d.id == id)
            .expect("known device")
    }

    /// Replaces device `i`'s database with the file at `snapshot` (a restore
    /// from a backup, the syncer stopped), and starts its syncer again.
    pub fn restore(&mut self, i: usize, snapshot: &std::path::Path) {
        self.restore_files(i, &[("database.db", snapshot)]);
    }

    /// Restores the whole folder of device `i`: its database from `db` and
    /// `sync.db` from `sync` (copies taken together).
    pub fn restore_folder(&mut self, i: usize, db: &std::path::Path, sync: &std::path::Path) {
        self.restore_files(i, &[("database.db", db), ("sync.db", sync)]);
    }

    fn restore_files(&mut self, i: usize, files: &[(&str, &std::path::Path)]) {
        let Dev { dir, id, .. } = self.devs.remove(i);
        // Every connection to the old files is gone with the old store.
        for (name, snapshot) in files {
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(dir.join(format!("{name}{suffix}")));
            }
            std::fs::copy(snapshot, dir.join(name)).expect("restore the copy");
        }
        let home = Home::open(&dir, &extension_path()).expect("open");
        let (store, _, _) = home.syncer_parts().expect("store");
        let mut node = Node::new(&id, "lib", Config::default());
        for other in &self.devs {
            node.add_peer(&other.id);
        }
        self.devs.insert(
            i,
            Dev {
                dir,
                home,
                store,
                node,
                id,
            },
        );
    }

    /// Links devices `a` and `b` and delivers until nothing is left to send.
    pub fn link(&mut self, a: usize, b: usize) {
        self.link_dropping(a, b, |_, _, _| false);
    }

    /// Like [`Mesh::link`], but the messages `drop(from, to, envelope)` picks
    /// are lost on the way.
    pub fn link_dropping(
        &mut self,
        a: usize,
        b: usize,
        drop: impl Fn(usize, usize, &Envelope) -> bool,
    ) {
        let idb = self.devs[b].id.clone();
        let ida = self.devs[a].id.clone();
        let now = self.now;
        let d = &mut self.devs[a];
        let oa = d.node.connect(&idb, now, &d.store).expect("connect");
        let d = &mut self.devs[b];
        let ob = d.node.connect(&ida, now, &d.store).expect("connect");
        let mut out: Vec<(usize, Output)> = oa.into_iter().map(|o| (a, o)).collect();
        out.extend(ob.into_iter().map(|o| (b, o)));
        self.deliver_dropping(out, drop);
    }

    /// Takes the link between `a` and `b` down; pulls it carried go to
    /// other peers, as the daemon does.
    pub fn unlink(&mut self, a: usize, b: usize) {
        let (ida, idb) = (self.devs[a].id.clone(), self.devs[b].id.clone());
        let now = self.now;
        let mut out = Vec::new();
        for (i, other) in [(a, &idb), (b, &ida)] {
            let d = &mut self.devs[i];
            d.node.disconnect(other);
            let o = d.node.repull(now, &d.store).expect("repull");
            out.extend(o.into_iter().map(|o| (i, o)));
        }
        self.deliver_dropping(out, |_, _, _| false);
    }

    /// Lets time pass by `ms` (anti-entropy, retries) and delivers everything.
    pub fn advance(&mut self, ms: u64) {
        self.advance_dropping(ms, |_, _, _| false);
    }

    /// Like [`Mesh::advance`], but the messages `drop` picks are lost.
    pub fn advance_dropping(&mut self, ms: u64, drop: impl Fn(usize, usize, &Envelope) -> bool) {
        self.now = self.now.max(wall_millis()) + ms;
        let now = self.now;
        let mut out = Vec::new();
        for (i, d) in self.devs.iter_mut().enumerate() {
            let o = d.node.tick(now, &d.store).expect("tick");
            out.extend(o.into_iter().map(|o| (i, o)));
        }
        self.deliver_dropping(out, drop);
    }

    /// A local commit on device `i`: push.
    pub fn committed(&mut self, i: usize) {
        let d = &mut self.devs[i];
        let out = d.node.committed(&d.store).expect("committed");
        self.deliver(out.into_iter().map(|o| (i, o)).collect());
    }

    /// Delivers messages (and the answers they cause) until none is left.
    pub fn deliver(&mut self, queue: Vec<(usize, Output)>) {
        self.deliver_dropping(queue, |_, _, _| false);
    }

    /// Like [`Mesh::deliver`], but the messages `drop` picks are lost.
    pub fn deliver_dropping(
        &mut self,
        mut queue: Vec<(usize, Output)>,
        drop: impl Fn(usize, usize, &Envelope) -> bool,
    ) {
        let mut steps = 0;
        while let Some((from, o)) = (!queue.is_empty()).then(|| queue.remove(0)) {
            steps += 1;
            assert!(steps < 100_000, "messages never stop");
            match o {
                Output::Event(e) => self.events.push((from, e)),
                Output::Send { to, env } => {
                    let i = self.index(&to);
                    if drop(from, i, &env) {
                        continue;
                    }
                    let now = self.now;
                    let from_id = self.devs[from].id.clone();
                    let d = &mut self.devs[i];
                    let out = d
                        .node
                        .receive_from(&from_id, &encode(&env), now, &d.store)
                        .expect("receive");
                    queue.extend(out.into_iter().map(|o| (i, o)));
                }
            }
        }
    }

    /// Whether `env` is a page of `origin`.
    pub fn page_of(env: &Envelope, origin: &str) -> bool {
        matches!(&env.payload, Payload::Page { origin: o, .. } if o == origin)
    }

    /// Asserts that every device holds the same library.
    pub fn assert_identical(&self) {
        let first = self.devs[0].store.lib.digest().expect("digest");
        for (i, d) in self.devs.iter().enumerate().skip(1) {
            assert_eq!(first, d.store.lib.digest().expect("digest"), "device {i}");
        }
    }

    /// Events of device `i` matching `f`.
    pub fn count_events(&self, i: usize, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|(d, e)| *d == i && f(e)).count()
    }
}
