//! What a node knows of its peers right now, for `sdsync status`.
//!
//! ```
//! use sdsync_syncer::proto::node::{Config, Node};
//! let mut node = Node::new("me", "library", Config::default());
//! node.add_peer("other");
//! let states = node.peer_states();
//! assert!(!states[0].connected && states[0].last_contact_ms == 0);
//! ```
//!
//! The daemon writes these to `sync.db` about once a second; `status` reads
//! them from there (a separate process), so it shows the running syncer's view.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Node;

/// One peer as this device sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerState {
    /// The peer's device id.
    pub device: String,
    /// Whether a link to it is up (and it has not refused this device).
    pub connected: bool,
    /// When a message last came from it, in ms since the epoch (0: never).
    pub last_contact_ms: u64,
    /// How far it holds each origin, as it last said (Hello, acknowledgements,
    /// and for its own origin the clock its pages carry).
    pub holds: BTreeMap<String, i64>,
    /// Why it refused this device's messages, if it did.
    pub refused: Option<String>,
}

impl Node {
    /// Every peer, by device id.
    pub fn peer_states(&self) -> Vec<PeerState> {
        self.peers
            .iter()
            .map(|(device, p)| PeerState {
                device: device.clone(),
                connected: p.connected && p.refused.is_none(),
                last_contact_ms: p.last_seen,
                holds: p.acks.clone(),
                refused: p.refused.clone(),
            })
            .collect()
    }

    /// A page of `peer`'s own changes came with its clock: it holds its own
    /// origin up to `seq`. Between its Hellos (every few seconds) this is
    /// how this device learns how far a burst of the peer's commits goes,
    /// so `status` shows the lag while the pages stream in.
    pub(super) fn origin_holds(&mut self, peer: &str, seq: i64) {
        if let Some(p) = self.peers.get_mut(peer) {
            let held = p.acks.entry(peer.into()).or_default();
            *held = (*held).max(seq);
        }
    }
}
