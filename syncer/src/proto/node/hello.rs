//! A Hello arrives (handshake and anti-entropy): what the peer holds, what it
//! knows of this device's own history, and the pulls and reclaims that
//! follow; and the Hello this device sends.
//!
//! ```ignore
//! // node.rs dispatches: Payload::Hello { .. } => self.on_hello(&peer, holds, hlc, reply, now, store)
//! ```
//!
//! The order of the checks on this device's own history matters: a restore
//! the store noticed itself, then a peer holding more of it, then a peer
//! holding changes its history contradicts, then (nothing contradicted) a
//! retake of changes a peer took from relays, and the next reclaim due.

use std::collections::BTreeMap;

use sdsync_core::hlc::Hlc;
use sdsync_core::ids::MAX_SEQ;

use super::reports::{YOURS, reused};
use super::{Node, Out};
use crate::proto::event::{Event, Output};
use crate::proto::message::Payload;
use crate::proto::store::{Store, StoreError};

impl Node {
    pub(super) fn on_hello(
        &mut self,
        peer: &str,
        Holds {
            marks,
            yours,
            your_clock,
            relayed,
        }: Holds,
        hlc: i64,
        reply: bool,
        now: u64,
        store: &dyn Store,
    ) -> Out {
        let theirs = Hlc::from_i64(hlc).unwrap_or_default();
        if theirs.ahead_of(now) > self.cfg.max_drift_ms {
            let reason = format!(
                "clock of device {peer} is {} ms ahead (HLC {theirs}; allowed drift {} ms)",
                theirs.ahead_of(now),
                self.cfg.max_drift_ms
            );
            self.pulls.retain(|_, pending| pending.peer != peer);
            return Ok(vec![
                Output::Event(Event::Refused {
                    peer: peer.into(),
                    reason: reason.clone(),
                }),
                self.send(peer, Payload::Refused { reason }),
            ]);
        }
        let acks: BTreeMap<String, i64> = marks.into_iter().collect();
        store.note_announced(peer, acks.get(peer).copied().unwrap_or(0), hlc)?;
        let mut out = Vec::new();
        let stale = self.newest.get(peer).is_some_and(|&newest| newest > hlc);
        if let Some(&issued) = acks.get(peer).filter(|_| !stale) {
            out.extend(self.origin_reports(peer, issued, store)?);
        }
        let ours: BTreeMap<String, i64> = store.watermarks()?.into_iter().collect();
        self.failing.retain(|(p, _)| p != peer);
        let p = self.peers.entry(peer.into()).or_default();
        p.refused = None;
        let their_of_me = acks.get(&self.me).copied().unwrap_or(0);
        let first = !p.hello_seen;
        p.hello_seen = true;
        p.acks = acks.clone();
        let had = ours.get(&self.me).copied().unwrap_or(0);
        self.open_push(peer, their_of_me, first, their_of_me >= had);
        // A reclaim moves the clock past everything the peer knows of it,
        // or the next Hello would find the clock below that again.
        let above = yours
            .iter()
            .map(|&(_, h)| h)
            .fold(hlc.max(your_clock.1), i64::max);
        if let Some(floor) = store.restored()? {
            out.extend(self.reclaim(peer, (floor, had), None, above, now, store)?);
        } else if their_of_me > had && their_of_me <= MAX_SEQ / 2 {
            out.extend(self.reclaim(peer, (their_of_me, had), None, above, now, store)?);
        } else if let Some(reused) = reused((&yours, your_clock), had, store)? {
            let held = (their_of_me.max(reused), had);
            out.extend(self.reclaim(peer, held, Some(reused), above, now, store)?);
        } else {
            out.extend(self.retake(peer, relayed, now, store)?);
            out.extend(self.reclaim_next(peer, now, store)?);
        }
        if reply {
            out.push(self.hello(peer, false, store)?);
        }
        for (origin, seq) in acks {
            let have = ours.get(&origin).copied().unwrap_or(0);
            if self.may_pull(peer, &origin, seq, have) {
                out.push(self.start_pull(peer, &origin, have, now));
            }
        }
        Ok(out)
    }

    pub(super) fn hello(
        &self,
        peer: &str,
        reply: bool,
        store: &dyn Store,
    ) -> Result<Output, StoreError> {
        let payload = Payload::Hello {
            watermarks: store.watermarks()?,
            hlc: store.hlc()?,
            reply,
            quarantined: store.quarantine_summary()?,
            schema: store.schema()?,
            incarnation: self.incarnation,
            yours: store.newest_of(peer, YOURS)?,
            your_clock: store.announced(peer)?,
            relayed: store.relayed(peer)?,
            restores: self.restores(store)?,
        };
        Ok(self.send(peer, payload))
    }
}

/// What a Hello says its sender holds (see [`Payload::Hello`]).
pub(super) struct Holds {
    /// `(origin, seq)` it holds completely.
    pub(super) marks: Vec<(String, i64)>,
    /// The newest changes of the receiver's own origin, `(seq, hlc)`, and
    /// the last it took from the receiver itself.
    pub(super) yours: Vec<(i64, i64)>,
    /// The highest clock the receiver announced to it.
    pub(super) your_clock: (i64, i64),
    /// The lowest number of the receiver's changes it took from other
    /// devices since the receiver pulled its own changes from it.
    pub(super) relayed: Option<i64>,
}
