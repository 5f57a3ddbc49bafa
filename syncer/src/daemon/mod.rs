//! The syncer process's loop: the protocol [`Node`] driven by a QUIC [`Link`],
//! the clock and the library's commits.
//!
//! ```no_run
//! # async fn f(store: sdsync_syncer::proto::store::SqlStore) -> Result<(), sdsync_syncer::daemon::DaemonError> {
//! use sdsync_syncer::daemon::{Daemon, Directory};
//! use sdsync_syncer::net::{identity::Identity, tls::Pins};
//! let me = Identity::generate("me")?;
//! let (pins, directory) = (Pins::default(), Directory::default());
//! let daemon = Daemon::start(store, "library", &me, &pins, &directory, "127.0.0.1:0".parse().unwrap())?;
//! let (_stop, stopped) = tokio::sync::watch::channel(false);
//! if let Some(reason) = daemon.run(stopped).await {
//!     eprintln!("told to stop: {reason}"); // another copy of this folder runs
//! }
//! # Ok(()) }
//! ```
//!
//! One task owns the node and the store; everything reaches it as an event:
//! a frame or a link going up or down (from the [`Link`]), a timer the node asked
//! for, or a commit by anyone else on the library, noticed by looking at
//! `PRAGMA data_version` (a header read, no I/O when nothing changed) when
//! the library's WAL file is written and every few milliseconds besides
//! ([`commits`]). The node's answers go out as frames, in order per
//! connection; sends that fail are logged and left to the protocol (pulls are
//! retried; pushes may be lost).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use sdsync_core::hlc::wall_millis;
use tokio::sync::{mpsc, watch};

use crate::lag::Behind;
use crate::metrics::Metrics;
use crate::net::NetError;
use crate::net::identity::Identity;
use crate::net::link::{Conn, Inbound, Link};
use crate::net::tls::Pins;
use crate::observe::Observer;
use crate::proto::message::{DecodeError, Envelope, Payload, decode, encode};
use crate::proto::node::{Config, Event, Node, Output, PeerState};
use crate::proto::store::{SqlStore, Store, StoreError};
use crate::sqlstore::syncdb;

pub use background::Background;
pub use directory::{Directory, discover};

mod background;
mod commits;
mod directory;
mod membership;
mod pace;
mod recorded;

/// Frames from this size on are applied without the watch on the folder
/// (a page of about 100 changes and more; a single commit's push is smaller).
const MUTE_FROM: usize = 16 * 1024;
/// How often unconnected peers are dialed again (and the peers' state is
/// recorded for `status`, if it changed).
const REDIAL: Duration = Duration::from_millis(500);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The network side failed to start.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The library or sync.db failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The async runtime could not be started.
    #[error("starting the runtime: {0}")]
    Runtime(String),
}

/// A running device: node, store, link.
pub struct Daemon {
    node: Node,
    store: SqlStore,
    me: String,
    link: Link,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    pins: Pins,
    directory: Directory,
    /// Open connections per peer, newest last (sends use the newest; two
    /// copies of one device's folder each have their own).
    conns: BTreeMap<String, Vec<Conn>>,
    /// Redial rounds each unconnected peer has waited.
    waited: BTreeMap<String, u32>,
    data_version: i64,
    events: Option<mpsc::UnboundedSender<(String, Event)>>,
    /// Why a peer told this copy of the folder to stop, once one did.
    stop_reason: Option<String>,
    /// The peers' state as last recorded in `sync.db`.
    recorded: Vec<PeerState>,
    /// What the last run recorded of each peer: one not heard from since
    /// this start keeps its last contact and what it held in `status`,
    /// instead of "never heard from" and lacking everything.
    earlier: BTreeMap<String, PeerState>,
    /// Progress lines and metrics.
    seen: Observer,
    /// What the gathered pages led to, sent once they committed.
    held: Vec<Output>,
    /// The peers the gathered pages came from.
    gathered_from: BTreeSet<String>,
    /// `sync.db`'s `PRAGMA data_version` when its pinned peers were last read
    /// (it moves when another process, `peer-add` or pairing, commits).
    pins_seen: Option<i64>,
    /// Since when this device lags on each origin (for `status`).
    behind: Behind,
    /// Whether it is catching up on some origin (a backfill): then it paces
    /// no app writer (`pace.rs`).
    catching_up: bool,
    /// Each member's addresses as its `devices` row last listed them.
    listed: BTreeMap<String, String>,
    /// Each member's certificate fingerprint as its row lists it now.
    listed_certs: BTreeMap<String, String>,
    /// This device's fingerprint as its own row lists it.
    own_listed: Option<String>,
    /// A rotated certificate is in its files but not yet presented.
    identity_stale: bool,
    /// The next certificate's fingerprint and how far this device held its
    /// own origin when its row first named it (what peers must hold).
    rotation_at: Option<(String, i64)>,
    /// The library folder, where a rotated certificate is put in place
    /// (none for daemons of tests that have no folder).
    folder: Option<std::path::PathBuf>,
    /// Backpressure on app writers while a live peer falls behind.
    pacer: pace::Pacer,
}

impl Daemon {
    /// Opens the endpoint on `listen` and prepares the node; every device pinned
    /// in `pins` is a peer. Must run inside a tokio runtime.
    pub fn start(
        store: SqlStore,
        library: &str,
        me: &Identity,
        pins: &Pins,
        directory: &Directory,
        listen: SocketAddr,
    ) -> Result<Self, DaemonError> {
        let device = store.device()?;
        let (link, inbound) = Link::bind(listen, me, pins)?;
        directory.set(&device, link.local_addr()?);
        let data_version = commits::data_version(&store)?;
        let pacer = pace::Pacer::open(&store.lib.path, store.clock()?.0);
        let earlier = recorded::earlier(&store, &device);
        // Every paired device is a partner from the start (the log counts
        // what it has not acknowledged), connected or not.
        let mut node = Node::new(&device, library, Config::default());
        node.set_incarnation(store.incarnation(wall_millis())?);
        for peer in pins.devices().iter().filter(|p| **p != device) {
            node.add_peer(peer);
        }
        Ok(Self {
            node,
            store,
            me: device,
            link,
            inbound,
            pins: pins.clone(),
            directory: directory.clone(),
            conns: BTreeMap::new(),
            waited: BTreeMap::new(),
            data_version,
            events: None,
            stop_reason: None,
            recorded: Vec::new(),
            earlier,
            pins_seen: None,
            listed: BTreeMap::new(),
            listed_certs: BTreeMap::new(),
            own_listed: None,
            identity_stale: false,
            rotation_at: None,
            behind: Behind::default(),
            catching_up: false,
            folder: None,
            seen: Observer::new(wall_millis(), None),
            held: Vec::new(),
            gathered_from: BTreeSet::new(),
            pacer,
        })
    }

    /// Uses these protocol tunables (`config.toml`) instead of the defaults.
    pub fn with_config(mut self, config: Config) -> Self {
        self.node.set_config(config);
        self
    }

    /// Runs for the library folder `dir`: its certificate is rotated there
    /// (`sdsync device rotate`) once every peer knows the next one.
    pub fn with_folder(mut self, dir: &std::path::Path) -> Self {
        self.folder = Some(dir.to_path_buf());
        self
    }

    /// Also draws backfill progress bars on stderr (`sdsync run` in a terminal).
    pub fn with_progress_bars(mut self) -> Self {
        self.seen.show_bars();
        self
    }

    /// Also keeps `metrics` current (`sdsync run --metrics`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.seen = Observer::new(wall_millis(), Some(metrics));
        self
    }

    /// Also reports every protocol event on `events`, tagged with this device.
    pub fn with_events(mut self, events: mpsc::UnboundedSender<(String, Event)>) -> Self {
        self.events = Some(events);
        self
    }

    /// The address this device listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.link.local_addr()
    }

    /// Runs until `stop` turns true (or its sender is dropped), or until a peer
    /// tells this copy of the folder to stop: then returns why (also recorded
    /// in `sync.db`, so `sdsync run` does not start it again unawares).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Option<String> {
        let mut commits = commits::Commits::watch(&self.store.lib.path);
        let mut redial = tokio::time::interval(REDIAL);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // Before any connection is taken: a removal the library holds but
        // `sync.db` missed (a crash in between) applies from the start.
        self.reload_members();
        while self.stop_reason.is_none() {
            let due = self.node.next_timer().saturating_sub(wall_millis());
            let timer = tokio::time::sleep(Duration::from_millis(due));
            tokio::select! {
                event = self.inbound.recv() => match event {
                    Some(event) => {
                        // A large frame is a page to apply: its writes
                        // would only wake the watch (`Commits::muted`).
                        if matches!(&event, Inbound::Message { bytes, .. } if bytes.len() >= MUTE_FROM) {
                            commits.muted(|| self.take(event));
                            // What an app committed meanwhile was not heard.
                            self.poll_commits();
                        } else {
                            self.take(event);
                        }
                        // Let the connections' writers send what this produced
                        // (acknowledgements, the next page) before the next
                        // frame is applied: the peer reads ahead meanwhile.
                        tokio::task::yield_now().await;
                        let pause = self.store.room.borrow_mut().pause(Instant::now());
                        if let Some(gap) = pause {
                            tokio::time::sleep(gap).await;
                        }
                    }
                    None => break,
                },
                _ = timer => {
                    let out = self.node.tick(wall_millis(), &self.store);
                    self.handle(out);
                }
                () = commits.next() => self.poll_commits(),
                _ = redial.tick() => {
                    self.reload_pins();
                    self.reload_members();
                    self.rotate_when_ready();
                    self.redial();
                    self.record_peers(false);
                    self.track_lag();
                    self.pace(false);
                    self.seen.report(wall_millis(), &self.me, &self.store, &self.node);
                }
                changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
            }
        }
        if let Err(e) = self.store.note_final_clock() {
            tracing::warn!(device = %self.me, error = %e, "recording the clock in sync.db");
        }
        self.record_peers(true);
        self.link.close();
        self.link.closed(Duration::from_secs(1)).await;
        self.stop_reason
    }

    fn on_inbound(&mut self, event: Inbound) {
        let now = wall_millis();
        match event {
            Inbound::Up {
                peer,
                conn,
                cert,
                addr,
            } => {
                if !self.remember(&peer, cert, addr) {
                    conn.close("removed from the library");
                    return;
                }
                tracing::info!(device = %self.me, %peer, %addr, "link up");
                self.node.add_peer(&peer);
                self.conns.entry(peer.clone()).or_default().push(conn);
                let out = self.node.connect(&peer, now, &self.store);
                self.handle(out);
            }
            Inbound::Message { peer, bytes } => self.on_message(&peer, decode(&bytes)),
            Inbound::Down { peer, id, reason } => {
                let Some(open) = self.conns.get_mut(&peer) else {
                    return;
                };
                open.retain(|c| c.id() != id);
                if open.is_empty() {
                    tracing::info!(device = %self.me, %peer, %reason, "link down");
                    self.conns.remove(&peer);
                    self.node.disconnect(&peer);
                    let out = self.node.repull(now, &self.store);
                    self.handle(out);
                }
            }
            Inbound::Failed { addr, reason } => {
                tracing::debug!(device = %self.me, %addr, %reason, "no link");
            }
            Inbound::Malformed { peer, reason } => {
                tracing::warn!(device = %self.me, %peer, %reason, "frame refused");
            }
        }
    }

    /// Handles `first`, then the frames already waiting behind it while they
    /// are pages and the run leaves the app's writers room: their applies share
    /// one library transaction ([`SqlStore::gather`]), and nothing they lead to
    /// is sent before it committed ([`Daemon::settle`]).
    ///
    /// At most half a stream's window of pages joins one transaction: their
    /// acknowledgements leave at the commit, and the pages still queued keep
    /// this device busy while the sender reads the next ones. Gathering all
    /// that waited (the whole window) left the receiver of a backfill idle
    /// after every commit until the sender's next page arrived.
    fn take(&mut self, first: Inbound) {
        let from = Instant::now();
        let most = (self.node.config().window / 2).max(1);
        let mut pages = 0;
        let mut next = Some(first);
        while let Some(event) = next.take() {
            let Inbound::Message { peer, bytes } = event else {
                self.settle();
                self.on_inbound(event);
                break;
            };
            let decoded = decode(&bytes);
            // A device's own pages (taken back after a restore) apply alone:
            // the end of such a pull is recorded in `sync.db` at once.
            let page = matches!(&decoded, Ok(env)
                if matches!(&env.payload, Payload::Page { origin, .. } if *origin != self.me));
            if page {
                self.store.gather();
                self.gathered_from.insert(peer.clone());
                pages += 1;
            } else {
                self.settle();
            }
            self.on_message(&peer, decoded);
            if page
                && pages < most
                && self.store.gathers()
                && self.store.room.borrow().has_room(from, Instant::now())
            {
                next = self.inbound.try_recv().ok();
            }
        }
        self.settle();
    }

    fn on_message(&mut self, peer: &str, decoded: Result<Envelope, DecodeError>) {
        // Every line the frame leads to (applied, refused, …) names the link
        // it came on.
        let _link = tracing::info_span!("link", %peer).entered();
        let started = Instant::now();
        let wrote = self.store.lib.conn.total_changes();
        let out = self
            .node
            .receive_decoded(peer, decoded, wall_millis(), &self.store);
        self.timed(started, out);
        // Only writing holds the app's writers back (WAL readers do not).
        if self.store.lib.conn.total_changes() != wrote {
            self.store.room.borrow_mut().worked(started, Instant::now());
        }
    }

    /// Commits the pages gathered since [`Daemon::take`] began and sends what
    /// they led to. If the commit failed, none of them was kept, but the node
    /// moved on as if they were: it starts over with each peer they came from,
    /// from what the library holds ([`Node::resync`]).
    fn settle(&mut self) {
        let held = std::mem::take(&mut self.held);
        let peers = std::mem::take(&mut self.gathered_from);
        match self.store.settle() {
            Ok(()) => self.handle(Ok(held)),
            Err(e) => {
                tracing::warn!(device = %self.me, error = %e, "pages applied together were not kept");
                for peer in peers {
                    let out = self.node.resync(&peer, &self.store);
                    self.handle(out);
                }
            }
        }
    }

    /// Pushes when anyone else committed to the library since the last look.
    fn poll_commits(&mut self) {
        match commits::data_version(&self.store) {
            Ok(v) if v != self.data_version => {
                self.data_version = v;
                self.store.room.borrow_mut().app_committed(Instant::now());
                if let Err(e) = self.store.note_clock() {
                    tracing::warn!(device = %self.me, error = %e, "recording the clock in sync.db");
                }
                let started = Instant::now();
                let out = self.node.committed(&self.store);
                self.timed(started, out);
                self.pace(true);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(device = %self.me, error = %e, "reading data_version"),
        }
    }

    /// Takes the devices paired or re-addressed in `sync.db` since the last
    /// look (`sdsync peer-add`, `pair` while this syncer runs): pins their
    /// certificates, learns their addresses and makes them peers, without a
    /// restart. Cheap when nothing changed (a header read).
    fn reload_pins(&mut self) {
        let pinned = match syncdb::pinned_if_changed(&self.store.sync, &mut self.pins_seen) {
            Ok(Some(pinned)) => pinned,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(device = %self.me, error = %e, "reading the paired devices in sync.db");
                return;
            }
        };
        for (device, cert, addr) in pinned {
            if device == self.me || self.pins.is_revoked(&device) {
                continue;
            }
            let cert = CertificateDer::from(cert);
            if self.pins.device(&cert).as_deref() != Some(device.as_str()) {
                tracing::info!(device = %self.me, peer = %device, "paired device pinned");
                self.pins.pin(&device, cert);
            }
            match addr.map(|a| a.parse::<SocketAddr>()) {
                Some(Ok(addr)) => self.directory.give(&device, addr),
                Some(Err(e)) => {
                    tracing::warn!(device = %self.me, peer = %device, error = %e, "bad address in sync.db")
                }
                None => {}
            }
            self.node.add_peer(&device);
        }
    }

    /// Dials paired devices without a link. Of two devices, the one with the
    /// smaller id dials first; the other waits a few rounds before dialing too,
    /// so there is usually one connection per pair, and never none.
    fn redial(&mut self) {
        for (device, known) in self.directory.snapshot() {
            let paired = self.pins.is_pinned(&device);
            let linked = self.conns.contains_key(&device) || self.link.is_linked(&device);
            if device == self.me || !paired || linked {
                self.waited.remove(&device);
                continue;
            }
            let rounds = self.waited.entry(device.clone()).or_default();
            *rounds += 1;
            let first = if self.me < device { 1 } else { 4 };
            // Dialing every round while the `Up` waited in the daemon's queue
            // behind pages to apply stacked up five links to one peer, each
            // restarting the streams (pages sent again): so the link's own
            // count is asked too (above), and the link calls off the dials
            // still under way once one is up (a dial sent before the peer
            // listened completes seconds later, on QUIC's retransmission).
            if *rounds >= first {
                // Each round the next known address, newest first.
                let turn = (*rounds - first) as usize % known.len().max(1);
                if let Some(addr) = known.get(turn) {
                    self.link.dial(*addr);
                }
            }
        }
    }

    /// [`Daemon::handle`], after recording how long the node took.
    fn timed(&mut self, started: Instant, out: Result<Vec<Output>, StoreError>) {
        if let Ok(o) = &out {
            self.seen.timed(started.elapsed(), o);
        }
        match out {
            // Sent once the gathered transaction committed.
            Ok(o) if self.store.gathering() => self.held.extend(o),
            out => self.handle(out),
        }
    }

    fn handle(&mut self, out: Result<Vec<Output>, StoreError>) {
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(device = %self.me, error = %e, "storage");
                return;
            }
        };
        for o in out {
            match o {
                Output::Send { to, env } => {
                    let open = self.conns.get(&to).map(Vec::as_slice).unwrap_or_default();
                    // A stop is for one copy of the peer's folder, which may be
                    // on any connection: every one hears it.
                    let targets = match env.payload {
                        Payload::Stop { .. } => open,
                        _ => open.last().map(std::slice::from_ref).unwrap_or_default(),
                    };
                    self.seen.sent(&env.payload, &self.store);
                    let bytes = encode(&env);
                    tracing::trace!(device = %self.me, %to, payload = %env.payload.kind(), "send");
                    for conn in targets {
                        conn.send(bytes.clone());
                    }
                }

                Output::Event(e) => {
                    if let Event::Stopped { peer, reason } = &e {
                        self.stop(peer, reason);
                    }
                    self.seen.event(&e, &self.store);
                    if let Some((kind, detail)) = e.notice()
                        && let Err(err) = self.store.note(kind, &detail)
                    {
                        tracing::warn!(device = %self.me, error = %err, "recording a notice in sync.db");
                    }
                    if e.needs_attention() {
                        tracing::warn!(device = %self.me, event = ?e);
                    } else {
                        tracing::info!(device = %self.me, event = ?e);
                    }
                    if let Some(events) = &self.events {
                        let _ = events.send((self.me.clone(), e));
                    }
                }
            }
        }
    }

    /// A peer told this copy of the folder to stop: record it and end the loop.
    fn stop(&mut self, peer: &str, reason: &str) {
        tracing::error!(device = %self.me, %peer, %reason, "stopping: another copy of this library folder runs as this device");
        if let Err(e) = self.store.set_stopped(Some(reason)) {
            tracing::warn!(device = %self.me, error = %e, "recording the stop in sync.db");
        }
        self.stop_reason = Some(reason.to_string());
    }
}
