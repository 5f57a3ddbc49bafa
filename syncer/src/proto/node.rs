//! The sync protocol as a state machine without I/O.
//!
//! ```no_run
//! # use sdsync_syncer::proto::{node::{Config, Node, Output}, store::SqlStore};
//! # fn store() -> SqlStore { unimplemented!() }
//! let store = store();
//! let mut node = Node::new("my-device", "library", Config::default());
//! node.add_peer("peer");
//! let now = 1_000;
//! for out in node.connect("peer", now, &store).unwrap() {
//!     if let Output::Send { to, env } = out { /* hand to the transport */ }
//! }
//! ```
//!
//! The node is fed messages, "a local commit happened" and the time, and returns
//! messages to send and events; it never touches a socket or a clock (quinn-proto
//! and automerge's sync module are the models), so a deterministic simulation can
//! run many of them over a simulated network. Storage goes through [`Store`].
//!
//! Protocol, per pair of devices:
//! - **Hello** on connect and every `anti_entropy_ms`: the sender's watermarks
//!   (which double as its ACK) and HLC. The receiver refuses a clock beyond the
//!   allowed drift; otherwise, for every origin where the sender holds more, it
//!   sends a **Pull** (one in flight per origin, to whichever peer showed it).
//! - **Pull** `(origin, after)` starts a stream of **Pages**: each at most
//!   `page_rows` changes (and about `page_bytes`) of that origin, in sequence
//!   order, continuing where the previous one ended, and up to which sequence
//!   it makes the receiver complete. The receiver applies each page in one
//!   transaction together with that watermark and answers with an **Ack**,
//!   which lets the sender send one more: at most `window` pages are on their
//!   way, so the sender reads ahead while the receiver applies, and neither
//!   side queues more than that (`streams.rs`). An interruption resumes from
//!   the watermark. A page answers a pull only if it continues exactly where
//!   the pull stands, so pages of older streams never start new ones.
//! - **Push**: the stream of a device's own origin to each connected peer stays
//!   open after it caught up: later commits go out on it as Pages (never
//!   anything of another origin, so nothing goes back where it came from), as
//!   credit allows, so a burst of commits leaves as full pages. Pushes may be
//!   lost; pulls guarantee convergence.
//! - **Retry**: a Pull whose stream stalls is re-sent with exponential backoff; after
//!   `max_attempts` it becomes a dead letter (durable, visible, one counted record
//!   per peer and cause) and a later Hello starts over, possibly from another peer.
//!   A page that finds the database busy is pulled again after a backoff: busy is
//!   never a dead letter.
//! - **Quarantine**: a change of a page that cannot be applied here is kept aside
//!   by the store in the page's transaction; the rest applies and the watermark
//!   advances. Hellos carry a summary of what the sender holds in quarantine, so
//!   the origin of those changes can show it. Quarantined changes are retried on
//!   anti-entropy rounds when the database changed since the last try.
//! - **Claims are verified**: a page vouches for its origin only up to the last
//!   change it carries, or up to what the origin itself reported (its own Hello
//!   or its own page), whichever is higher; an origin reporting less than we vouch
//!   for cuts our claim. So one wrong watermark (a bug, an app's
//!   `sdsync_mark_complete`) does not make anyone skip the origin's changes.
//! - **ACK / log**: a peer's Hello says what it holds of our origin. Our "log" is
//!   the own changes some active peer has not acknowledged; peers unseen for
//!   `horizon_ms` stop holding it back (they catch up from state).

use std::collections::{BTreeMap, BTreeSet};

use crate::proto::message::{
    DecodeError, Envelope, Incarnation, PROTOCOL_VERSION, Payload, QuarantineSummary, decode,
};
use crate::proto::store::{Store, StoreError};
use hello::Holds;

pub use crate::proto::event::{Event, Output};
pub use peers::PeerState;

mod copies;
mod hello;
mod pages;
mod peers;
mod pulls;
mod reports;
mod restores;
mod streams;

/// Tunables (milliseconds for times).
#[derive(Clone, Debug)]
pub struct Config {
    /// Rows per page.
    pub page_rows: usize,
    /// Approximate bytes per page (at most `MAX_PAGE_BYTES`; a page always
    /// carries its first change, whatever its size).
    pub page_bytes: usize,
    /// Interval between anti-entropy Hellos.
    pub anti_entropy_ms: u64,
    /// How long a Pull may go unanswered before it is retried.
    pub pull_timeout_ms: u64,
    /// Base of the exponential retry backoff.
    pub backoff_ms: u64,
    /// Attempts before a Pull becomes a dead letter.
    pub max_attempts: u32,
    /// A peer unseen this long no longer holds back the log.
    pub horizon_ms: u64,
    /// Refuse peers whose clock is this far ahead of ours.
    pub max_drift_ms: u64,
    /// Pages a stream may have sent but not had acknowledged: the sender reads
    /// ahead this far while the receiver applies, and no more.
    pub window: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            page_rows: 2_000,
            page_bytes: 1024 * 1024,
            anti_entropy_ms: 5_000,
            pull_timeout_ms: 2_000,
            backoff_ms: 250,
            max_attempts: 6,
            horizon_ms: 7 * 24 * 3600 * 1000,
            max_drift_ms: 300_000,
            window: 16,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Peer {
    connected: bool,
    hello_seen: bool,
    last_seen: u64,
    /// The peer's watermarks (its ACK).
    acks: BTreeMap<String, i64>,
    refused: Option<String>,
    /// The restores its last Hello named (`restores.rs`).
    restores: BTreeMap<String, i64>,
}

#[derive(Clone, Debug)]
struct Pending {
    peer: String,
    after: i64,
    deadline: u64,
    attempts: u32,
}

/// One device's protocol state.
pub struct Node {
    me: String,
    library: String,
    cfg: Config,
    peers: BTreeMap<String, Peer>,
    pulls: BTreeMap<String, Pending>,
    /// Pages being sent, per `(peer, origin)` (`streams.rs`).
    streams: BTreeMap<(String, String), streams::Stream>,
    next_hello: u64,
    /// What each peer last reported holding in quarantine (stored when it changes).
    peer_quarantine: BTreeMap<String, Vec<QuarantineSummary>>,
    /// Peers this device is pulling its own origin back from (see
    /// [`Node::reclaim`]): pages of its own origin are taken only from them.
    reclaiming: BTreeSet<String>,
    /// How each peer's tables last differed from ours (stored when it changes).
    peer_schema: BTreeMap<String, Vec<String>>,
    /// The highest sequence each origin reported itself (as stored).
    reported: BTreeMap<String, i64>,
    /// `(peer, origin)`: a claim of that peer we could not verify; not pulled
    /// for again until the peer claims something else.
    unverified: BTreeMap<(String, String), i64>,
    /// `(peer, origin)` whose page could not be applied at all: no gap pull
    /// from there until the peer's next Hello (or a bad page, pulled again at
    /// once, would fail in a loop).
    failing: BTreeSet<(String, String)>,
    /// Consecutive busy pages per origin (the backoff grows with it).
    busy: BTreeMap<String, u32>,
    /// The newest HLC among each origin's changes applied here: a Hello of that
    /// origin with an older clock was sent before those changes existed, so what
    /// it says the origin issued is stale, not a contradiction.
    newest: BTreeMap<String, i64>,
    /// Restored peers whose Hello naming the restore made this device pull
    /// everything again, before the pull of their own changes that follows
    /// (`restores.rs`).
    started_over: BTreeSet<String>,
    /// Which running copy of its folder this device is (`copies.rs`).
    incarnation: Incarnation,
    /// The incarnation each peer last ran as, and when it was last heard.
    incarnations: BTreeMap<String, (Incarnation, u64)>,
    /// Origins whose pull went down with its link, for [`Node::repull`].
    orphaned: BTreeSet<String>,
}

pub(super) type Out = Result<Vec<Output>, StoreError>;

impl Node {
    /// A node for device `me` in `library`.
    pub fn new(me: &str, library: &str, cfg: Config) -> Self {
        Self {
            me: me.into(),
            library: library.into(),
            cfg,
            peers: BTreeMap::new(),
            pulls: BTreeMap::new(),
            streams: BTreeMap::new(),
            next_hello: 0,
            peer_quarantine: BTreeMap::new(),
            peer_schema: BTreeMap::new(),
            reclaiming: BTreeSet::new(),
            reported: BTreeMap::new(),
            unverified: BTreeMap::new(),
            busy: BTreeMap::new(),
            failing: BTreeSet::new(),
            newest: BTreeMap::new(),
            started_over: BTreeSet::new(),
            incarnation: Incarnation::default(),
            incarnations: BTreeMap::new(),
            orphaned: BTreeSet::new(),
        }
    }

    /// Replaces the tunables (before the node has talked to anyone).
    pub fn set_config(&mut self, cfg: Config) {
        self.cfg = cfg;
    }

    /// The protocol tunables in use.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Pairs a device: only paired devices are talked to.
    pub fn add_peer(&mut self, peer: &str) {
        self.peers.entry(peer.into()).or_default();
    }

    /// A link to `peer` is up: say Hello.
    pub fn connect(&mut self, peer: &str, now: u64, store: &dyn Store) -> Out {
        let Some(p) = self.peers.get_mut(peer) else {
            return Ok(vec![]);
        };
        p.connected = true;
        p.hello_seen = false;
        p.last_seen = now;
        self.started_over.remove(peer);
        Ok(vec![self.hello(peer, true, store)?])
    }

    /// The link to `peer` is down; its outstanding pulls are dropped, and
    /// [`Node::repull`] gives them to another peer that holds more of their
    /// origin (a later Hello from any peer starts them too).
    pub fn disconnect(&mut self, peer: &str) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.connected = false;
            p.hello_seen = false;
        }
        let dropped = self
            .pulls
            .iter()
            .filter(|(_, pending)| pending.peer == peer);
        self.orphaned
            .extend(dropped.map(|(origin, _)| origin.clone()));
        self.pulls.retain(|_, pending| pending.peer != peer);
        self.close_streams(peer);
        self.reclaiming.remove(peer);
        self.started_over.remove(peer);
        self.forget_incarnation(peer);
    }

    /// What this node believed `peer`'s last pages brought was not kept (the
    /// transaction they were applied in was rolled back): forgets the pulls
    /// from `peer` and what origins reported (the cuts they made were undone
    /// too), and asks for its Hello, from which pulls start again at what
    /// the library holds. Streams this device serves `peer` go on.
    pub fn resync(&mut self, peer: &str, store: &dyn Store) -> Out {
        self.pulls.retain(|_, pending| pending.peer != peer);
        self.reported.clear();
        Ok(vec![self.hello(peer, true, store)?])
    }

    /// `peer` left the library (removed): it no longer counts as a partner,
    /// so it holds nothing back and is sent nothing.
    pub fn remove_peer(&mut self, peer: &str) {
        self.disconnect(peer);
        self.peers.remove(peer);
    }

    /// How many pulls wait for an answer (each retried on its timeout).
    pub fn pending_pulls(&self) -> usize {
        self.pulls.len()
    }

    /// The earliest time `tick` has something to do.
    pub fn next_timer(&self) -> u64 {
        self.pulls
            .values()
            .map(|p| p.deadline)
            .fold(self.next_hello, u64::min)
    }

    /// Own changes some active peer has not acknowledged: the shared log's size.
    pub fn log_size(&self, now: u64, store: &dyn Store) -> Result<i64, StoreError> {
        let active = self.peers.values().filter(|p| {
            p.refused.is_none()
                && (p.connected || now.saturating_sub(p.last_seen) <= self.cfg.horizon_ms)
        });
        let Some(floor) = active
            .map(|p| p.acks.get(&self.me).copied().unwrap_or(0))
            .min()
        else {
            return Ok(0);
        };
        store.count_above(&self.me, floor)
    }

    /// Time passed: anti-entropy and retries.
    pub fn tick(&mut self, now: u64, store: &dyn Store) -> Out {
        let mut out = Vec::new();
        if now >= self.next_hello {
            self.next_hello = now + self.cfg.anti_entropy_ms;
            // Both write: with an app holding the write lock they wait for the
            // next round; the Hellos still go out.
            match store.sweep().and_then(|()| store.retry_quarantined()) {
                Ok(r) if r != Default::default() => out.push(Output::Event(Event::Retried {
                    applied: r.applied,
                    kept: r.kept,
                })),
                Ok(_) => {}
                Err(e) if e.is_transient() => {}
                // Recorded (and logged at WARN); anti-entropy goes on.
                Err(e) => {
                    let me = self.me.clone();
                    store.dead_letter(&me, "sweep failed", "sweep", &e.to_string())?;
                    out.push(Output::Event(Event::DeadLetter {
                        peer: me,
                        what: format!("sweep: {e}"),
                    }));
                }
            }
            let connected: Vec<String> = self.connected().collect();
            for peer in connected {
                out.push(self.hello(&peer, false, store)?);
            }
        }
        let due: Vec<String> = self
            .pulls
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(o, _)| o.clone())
            .collect();
        for origin in due {
            out.extend(self.retry(&origin, now, store)?);
        }
        Ok(out)
    }

    /// A local transaction committed: push own changes to connected peers
    /// (as far as their streams have credit; acknowledgements send the rest).
    pub fn committed(&mut self, store: &dyn Store) -> Out {
        let mut out = Vec::new();
        let peers: Vec<String> = self
            .connected()
            .filter(|p| self.peers[p].hello_seen)
            .collect();
        let me = self.me.clone();
        for peer in peers {
            out.extend(self.pump(&peer, &me, false, store)?);
        }
        Ok(out)
    }

    /// A message arrived over a link that authenticated `peer` (a TLS
    /// certificate pinned to that device): a message claiming another sender is
    /// refused, so one paired device cannot speak for another.
    pub fn receive_from(&mut self, peer: &str, bytes: &[u8], now: u64, store: &dyn Store) -> Out {
        self.receive_decoded(peer, decode(bytes), now, store)
    }

    /// [`Node::receive_from`] of a frame the caller decoded already (to see
    /// what it is first).
    pub fn receive_decoded(
        &mut self,
        peer: &str,
        decoded: Result<Envelope, DecodeError>,
        now: u64,
        store: &dyn Store,
    ) -> Out {
        let env = match decoded {
            Ok(env) => env,
            Err(e) => return Ok(vec![malformed(&e)]),
        };
        if env.sender != peer {
            let reason = format!("device {peer} sent a message as device {}", env.sender);
            return Ok(vec![
                Output::Event(Event::Refused {
                    peer: peer.into(),
                    reason: reason.clone(),
                }),
                self.send(peer, Payload::Refused { reason }),
            ]);
        }
        self.handle(env, now, store)
    }

    /// A message arrived; its sender is taken from the envelope (use
    /// [`Node::receive_from`] when the link authenticates peers).
    pub fn receive(&mut self, bytes: &[u8], now: u64, store: &dyn Store) -> Out {
        match decode(bytes) {
            Ok(env) => self.handle(env, now, store),
            Err(e) => Ok(vec![malformed(&e)]),
        }
    }

    fn handle(&mut self, env: Envelope, now: u64, store: &dyn Store) -> Out {
        let peer = env.sender.clone();
        if let Some(reason) = self.envelope_problem(&env) {
            // A refusal is never answered with one: two devices of different
            // libraries pinned to each other did so forever (a storm of logs).
            if let Payload::Refused { reason: theirs } = env.payload {
                return Ok(self.refused_by(peer, theirs));
            }
            let mut out = vec![Output::Event(Event::Refused {
                peer: peer.clone(),
                reason: reason.clone(),
            })];
            if self.peers.contains_key(&peer) {
                out.push(self.send(&peer, Payload::Refused { reason }));
            }
            return Ok(out);
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_seen = now;
        }
        match env.payload {
            Payload::Hello {
                watermarks,
                hlc,
                reply,
                quarantined,
                schema,
                incarnation,
                yours,
                your_clock,
                relayed,
                restores,
            } => {
                let (mut out, go_on) = self.on_incarnation(&peer, incarnation, now);
                if !go_on {
                    return Ok(out);
                }
                self.on_quarantine_report(&peer, quarantined, store)?;
                let holds = Holds {
                    marks: watermarks,
                    yours,
                    your_clock,
                    relayed,
                };
                out.extend(self.on_hello(&peer, holds, hlc, reply, now, store)?);
                let refused = out
                    .iter()
                    .any(|o| matches!(o, Output::Event(Event::Refused { .. })));
                if !refused {
                    out.extend(self.on_schema_report(&peer, &schema, store)?);
                    out.extend(self.on_restores(&peer, restores, now, store)?);
                }
                Ok(out)
            }
            Payload::Pull { origin, after } => {
                let own = if origin == peer {
                    self.own_pull(&peer, after, now, store)
                } else {
                    Ok(Vec::new())
                };
                let mut out = match own {
                    Ok(out) => out,
                    // Unanswered, the pull is retried, and this with it
                    // (seed 8557: the app changed the schema meanwhile).
                    Err(e) if e.is_transient() => {
                        return Ok(vec![Output::Event(Event::Deferred {
                            peer,
                            origin,
                            reason: e.to_string(),
                        })]);
                    }
                    Err(e) => return Err(e),
                };
                out.extend(self.on_pull(&peer, &origin, after, store)?);
                Ok(out)
            }
            Payload::Ack { origin, to } => self.on_ack(&peer, &origin, to, store),
            Payload::Page {
                origin,
                after,
                complete_to,
                changes,
                more,
                restores,
                clock,
            } => {
                let page = pages::Page {
                    after,
                    complete_to,
                    changes: &changes,
                    more,
                    restores: &restores,
                    clock,
                };
                let out = self.on_page(&peer, &origin, page, now, store);
                match out {
                    // Busy outside the apply too (the watermarks read before
                    // it, the Hello after it; seed 8557: the app changed the
                    // schema in between): the pull is retried from where it
                    // stands, and what applied applies again as a no-op.
                    Err(e) if e.is_transient() => Ok(self.deferred(&peer, &origin, after, &e, now)),
                    other => other,
                }
            }
            Payload::Stop {
                incarnation,
                reason,
            } => Ok(self.on_stop(&peer, incarnation, reason)),
            Payload::Refused { reason } => Ok(self.refused_by(peer, reason)),
        }
    }

    /// `peer` refused this device's messages: nothing more goes to it until
    /// it says Hello again.
    fn refused_by(&mut self, peer: String, reason: String) -> Vec<Output> {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.refused = Some(reason.clone());
        }
        self.pulls.retain(|_, pending| pending.peer != peer);
        self.close_streams(&peer);
        vec![Output::Event(Event::RefusedBy { peer, reason })]
    }

    fn envelope_problem(&self, env: &Envelope) -> Option<String> {
        if env.version != PROTOCOL_VERSION {
            return Some(format!(
                "unsupported protocol version {} (this device speaks {PROTOCOL_VERSION})",
                env.version
            ));
        }
        if env.library != self.library {
            return Some(format!(
                "wrong library {:?} (this device syncs {:?})",
                env.library, self.library
            ));
        }
        if !self.peers.contains_key(&env.sender) {
            return Some(format!(
                "device {} is not paired with this library",
                env.sender
            ));
        }
        None
    }

    /// `peer` pulls its own changes from here, above `after`: it was
    /// restored. The lowest of its changes taken from relays is forgotten
    /// (this pull serves what the peer may lack), and a pull from the
    /// start (a restore's reclaim, or a retake resumed) makes this device
    /// pull everything again.
    fn own_pull(&mut self, peer: &str, after: i64, now: u64, store: &dyn Store) -> Out {
        store.reclaiming_here(peer)?;
        if after == 0 {
            self.own_pull_from_start(peer, now, store)
        } else {
            Ok(Vec::new())
        }
    }

    fn send(&self, to: &str, payload: Payload) -> Output {
        Output::Send {
            to: to.into(),
            env: Envelope::new(&self.library, &self.me, payload),
        }
    }

    fn connected(&self) -> impl Iterator<Item = String> + '_ {
        self.peers
            .iter()
            .filter(|(_, p)| p.connected && p.refused.is_none())
            .map(|(k, _)| k.clone())
    }
}

fn malformed(e: &DecodeError) -> Output {
    Output::Event(Event::Malformed {
        reason: e.to_string(),
    })
}
