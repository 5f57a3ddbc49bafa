//! The node's pulls: starting one, retrying it with backoff, giving up.
//!
//! ```ignore
//! out.push(self.start_pull(peer, origin, have, now)); // one in flight per origin
//! out.extend(self.retry(origin, now, store)?);        // past its deadline
//! ```
//!
//! A pull whose stream stalls (no page continuing it for
//! `pull_timeout_ms + backoff_ms·2^attempt`) is re-sent from where it stands;
//! after `max_attempts` it is recorded as a dead letter and the next Hello starts
//! over, possibly with another peer.

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
