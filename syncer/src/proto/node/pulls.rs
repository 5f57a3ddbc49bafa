//! The node's pulls: starting one, retrying it with backoff, giving up.
//!
//! ```ignore
//! out.push(self.start_pull(peer, origin, have, now)); // one in flight per origin
//! out.extend(self.retry(origin, now, store)?);        // past its deadline
//! out.extend(node.repull(now, store)?);                // after a link went down
//! ```
//!
//! A pull whose stream stalls (no page continuing it for
//! `pull_timeout_ms + backoff_ms·2^attempt`) is re-sent from where it stands;
//! after `max_attempts` it is recorded as a dead letter and the next Hello starts
//! over, possibly with another peer.

use std::collections::BTreeMap;

use super::{Node, Pending};
use crate::proto::event::{Event, Output};
use crate::proto::message::Payload;
use crate::proto::store::{Store, StoreError};

type Out = Result<Vec<Output>, StoreError>;

impl Node {
    /// A page from `peer` could not be applied at all: its pull ends in a
    /// dead letter, and the next Hello starts over.
    pub(super) fn failed(
        &mut self,
        peer: &str,
        origin: &str,
        after: i64,
        reason: String,
        store: &dyn Store,
    ) -> Out {
        self.pulls.remove(origin);
        self.failing.insert((peer.into(), origin.into()));
        if origin == self.me {
            self.reclaiming.remove(peer);
        }
        store.dead_letter(
            peer,
            &format!("page of origin {origin} not applied"),
            &format!("page of origin {origin} after {after}"),
            &reason,
        )?;
        Ok(vec![Output::Event(Event::ApplyFailed {
            peer: peer.into(),
            reason,
        })])
    }

    /// A pull whose deadline passed: sent again with a growing backoff, or,
    /// after `max_attempts`, given up as a dead letter.
    pub(super) fn retry(&mut self, origin: &str, now: u64, store: &dyn Store) -> Out {
        let Some(p) = self.pulls.get(origin).cloned() else {
            return Ok(vec![]);
        };
        let connected = self.peers.get(&p.peer).is_some_and(|x| x.connected);
        if p.attempts >= self.cfg.max_attempts || !connected {
            self.pulls.remove(origin);
            let what = format!("pull of origin {origin} after {}", p.after);
            if !connected {
                return Ok(vec![]);
            }
            store.dead_letter(
                &p.peer,
                &format!("pull of origin {origin} unanswered"),
                &what,
                &format!("no answer after {} attempts", p.attempts),
            )?;
            return Ok(vec![Output::Event(Event::DeadLetter {
                peer: p.peer,
                what,
            })]);
        }
        let backoff = self.cfg.backoff_ms.saturating_mul(1 << p.attempts.min(16));
        self.pulls.insert(
            origin.into(),
            Pending {
                deadline: now + self.cfg.pull_timeout_ms + backoff,
                attempts: p.attempts + 1,
                ..p.clone()
            },
        );
        Ok(vec![self.send(
            &p.peer,
            Payload::Pull {
                origin: origin.into(),
                after: p.after,
            },
        )])
    }

    /// A page of the pull of `origin` arrived and it continues after `next`:
    /// the stall deadline and the attempts start over.
    pub(super) fn advance(&mut self, origin: &str, next: i64, now: u64) {
        let timeout = self.cfg.pull_timeout_ms;
        if let Some(p) = self.pulls.get_mut(origin) {
            p.after = next;
            p.deadline = now + timeout;
            p.attempts = 1;
        }
    }

    /// Pulls whose link went down go to another connected peer that said
    /// it holds more of their origin, at once: waiting for a peer's next
    /// Hello (every `anti_entropy_ms`) left a receiver idle for 8 s after its
    /// sender was killed mid-backfill while a caught-up device could serve
    /// it (a user's trial, session 25). The same as that Hello arriving now.
    pub fn repull(&mut self, now: u64, store: &dyn Store) -> Out {
        if self.orphaned.is_empty() {
            return Ok(vec![]);
        }
        let ours: BTreeMap<String, i64> = store.watermarks()?.into_iter().collect();
        let mut out = Vec::new();
        for origin in std::mem::take(&mut self.orphaned) {
            let have = ours.get(&origin).copied().unwrap_or(0);
            let best = self
                .peers
                .iter()
                .filter(|(_, p)| p.connected && p.hello_seen && p.refused.is_none())
                .filter_map(|(peer, p)| Some((*p.acks.get(&origin)?, peer)))
                .filter(|&(seq, peer)| self.may_pull(peer, &origin, seq, have))
                .max()
                .map(|(_, peer)| peer.clone());
            if let Some(peer) = best {
                out.push(self.start_pull(&peer, &origin, have, now));
            }
        }
        Ok(out)
    }

    /// Whether `peer`'s claim to hold `origin` up to `claim` starts a pull
    /// from it, this device holding it up to `have`: another origin than
    /// this device's own (taken back only by `reclaim`), more than it holds,
    /// no pull of it in flight already, not a claim it could not verify
    /// before (not pulled for again until it changes), and not from a peer
    /// whose page of it could not be applied (until that peer's next Hello,
    /// which clears it). The one rule of a Hello and of [`Node::repull`].
    pub(super) fn may_pull(&self, peer: &str, origin: &str, claim: i64, have: i64) -> bool {
        let key = (peer.to_string(), origin.to_string());
        origin != self.me
            && claim > have
            && !self.pulls.contains_key(origin)
            && self.unverified.get(&key).is_none_or(|&c| c < claim)
            && !self.failing.contains(&key)
    }

    /// Whether a pull of `origin` is in flight (a backfill or a gap being
    /// fetched; a live peer's own changes come pushed, without one).
    pub fn pulling(&self, origin: &str) -> bool {
        self.pulls.contains_key(origin)
    }

    /// Asks `peer` for `origin` above `after`: one pull in flight per origin.
    pub(super) fn start_pull(&mut self, peer: &str, origin: &str, after: i64, now: u64) -> Output {
        self.pulls.insert(
            origin.into(),
            Pending {
                peer: peer.into(),
                after,
                deadline: now + self.cfg.pull_timeout_ms,
                attempts: 1,
            },
        );
        self.send(
            peer,
            Payload::Pull {
                origin: origin.into(),
                after,
            },
        )
    }
}
