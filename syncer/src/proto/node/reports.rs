//! The node's handling of what peers report about themselves (their quarantine
//! summaries, their tables, their own last sequence, what they hold of this
//! device's own origin after a restore) and of pages that found the database busy.

use super::{Node, Pending};
use crate::proto::event::{Event, Output};
use crate::proto::message::QuarantineSummary;
use crate::proto::schema::{TableLayout, mismatches};
use crate::proto::store::{Store, StoreError};

/// How far above the highest claim a restored device renumbers its changes:
/// room for what peers it has not heard from yet hold of its lost self (its
/// sequence numbers run to 2^53, so a million per renumbering costs nothing).
const RESTORE_GAP: i64 = 1 << 20;

/// How many of the newest changes of a peer's own origin a Hello carries
/// back to it (see [`reused`]): more samples catch more reuses whose newest
/// change this device holds was superseded on the restored one.
pub(super) const YOURS: usize = 4;

type Out = Result<Vec<Output>, StoreError>;

/// A peer holds a change of this device's own origin that contradicts this
/// device's own history (see [`Store::reuses`]): the first such number. That
/// is two histories under one origin: the whole folder (`sync.db` with it,
/// which hides the restore from [`Store::restored`]) was restored from an
/// older copy and then written more than it lost, or a copy of the folder
/// ran while this one did not. A number above `had` (this device's own
/// sequence) is proof as well: a peer may hold changes above its watermark.
/// So is an HLC above this device's clock, a sample's or the one this
/// device announced to the peer: the clock never goes back, and every change
/// a device issued is at or below it (lost changes stamped by a clock that
/// peers had pushed ahead). And so is a change of its own numbered at or
/// below the sequence it announced with that clock, but issued after it
/// ([`Store::outran`]: the restored folder's first write, where the peer
/// superseded every lost change). Those two name this device's own sequence.
pub(super) fn reused(
    (yours, (your_seq, your_hlc)): (&[(i64, i64)], (i64, i64)),
    had: i64,
    store: &dyn Store,
) -> Result<Option<i64>, StoreError> {
    let clock = store.hlc()?;
    if your_seq > had || your_hlc > clock || store.outran(your_seq, your_hlc)? {
        return Ok(Some(had));
    }
    for &(seq, hlc) in yours {
        // A change under a number this device has not issued (a peer can
        // hold one above its watermark) proves the history went back.
        if seq > had || hlc > clock || store.reuses(seq, hlc)? {
            return Ok(Some(seq));
        }
    }
    Ok(None)
}

impl Node {
    /// A page found the database busy (an app holding the write lock): nothing
    /// was applied; pull it again after a backoff that grows while it lasts. Not
    /// a dead letter and not a quarantine: the page itself is fine.
    pub(super) fn deferred(
        &mut self,
        peer: &str,
        origin: &str,
        have: i64,
        e: &StoreError,
        now: u64,
    ) -> Vec<Output> {
        let busy = self.busy.entry(origin.into()).or_default();
        *busy = busy.saturating_add(1);
        let wait = self.cfg.backoff_ms.saturating_mul(1 << (*busy).min(6));
        let mine = self.pulls.get(origin).is_none_or(|p| p.peer == peer);
        if mine {
            let after = self.pulls.get(origin).map_or(have, |p| p.after);
            self.pulls.insert(
                origin.into(),
                Pending {
                    peer: peer.into(),
                    after,
                    deadline: now + wait,
                    attempts: 0,
                },
            );
        }
        vec![Output::Event(Event::Deferred {
            peer: peer.into(),
            origin: origin.into(),
            reason: e.to_string(),
        })]
    }

    /// `origin` says (in its Hello or its own page) it issued up to `issued`.
    pub(super) fn origin_reports(&mut self, origin: &str, issued: i64, store: &dyn Store) -> Out {
        if self.reported.get(origin).is_some_and(|&r| r >= issued) {
            return Ok(vec![]);
        }
        self.reported.insert(origin.into(), issued);
        Ok(store
            .report(origin, issued)?
            .map(|vouched| {
                Output::Event(Event::WatermarkCut {
                    origin: origin.into(),
                    vouched,
                    issued,
                })
            })
            .into_iter()
            .collect())
    }

    /// Stores what a peer holds in quarantine when it differs from its last report.
    /// A peer's Hello told its tables: a mismatch with ours is recorded and,
    /// when it changed, reported (the daemon logs it at WARN; both devices do).
    pub(super) fn on_schema_report(
        &mut self,
        peer: &str,
        theirs: &[TableLayout],
        store: &dyn Store,
    ) -> Result<Vec<Output>, StoreError> {
        let found = mismatches(&store.schema()?, theirs);
        if self.peer_schema.get(peer) == Some(&found) {
            return Ok(Vec::new());
        }
        store.peer_schema(peer, &found)?;
        self.peer_schema.insert(peer.into(), found.clone());
        Ok(found
            .into_iter()
            .map(|detail| {
                Output::Event(Event::SchemaMismatch {
                    peer: peer.into(),
                    detail,
                })
            })
            .collect())
    }

    pub(super) fn on_quarantine_report(
        &mut self,
        peer: &str,
        summary: Vec<QuarantineSummary>,
        store: &dyn Store,
    ) -> Result<(), StoreError> {
        if self.peer_quarantine.get(peer) != Some(&summary) {
            store.peer_quarantine(peer, &summary)?;
            self.peer_quarantine.insert(peer.into(), summary);
        }
        Ok(())
    }

    /// Peers hold this device's own origin up to `floor` (one says so in its
    /// Hello, or the store found the database went back since the syncer last
    /// saw it), more than the `had` it holds itself: the database was restored
    /// from an older copy, and what it wrote since reused sequence numbers the
    /// peers' watermarks cover. Renumbers its own changes above the highest
    /// claim any peer made (so peers take the ones written since; HLCs are kept,
    /// so they skip the rest), moves its clock to the peer's `hlc` (so it never
    /// reuses the HLC of a change it lost), and pulls its own origin back from
    /// `peer`, then from every other peer (each may hold changes the others
    /// lack; the list is durable, so a crash midway resumes it), to apply what
    /// the copy lacked. A paired peer's claim is believed: a wrong one costs a
    /// renumbering, never a change. `reused`: a change the peer holds
    /// contradicts this device's own history, or is numbered above what it
    /// issued (see [`reused`]); the same recovery applies.
    pub(super) fn reclaim(
        &mut self,
        peer: &str,
        (floor, had): (i64, i64),
        reused: Option<i64>,
        hlc: i64,
        now: u64,
        store: &dyn Store,
    ) -> Result<Vec<Output>, StoreError> {
        let peers: Vec<String> = self.peers.keys().cloned().collect();
        store.reclaim_all(&peers)?;
        // What this device vouches for went back with the database, maybe
        // to before it started over after other devices' restores: it names
        // none of them until it hears of them again (and starts over).
        store.forget_restores()?;
        let base = self.above_claims(floor);
        let renumbered = store.restamp(base, hlc)?;
        store.note_renumbered(base)?;
        self.reclaiming.insert(peer.into());
        let me = self.me.clone();
        // The Hello first: it names the restore, so the peer pulls
        // everything again once, before it serves the pull (`restores.rs`).
        Ok(vec![
            Output::Event(Event::Restored {
                peer: peer.into(),
                held: floor,
                had,
                reused,
                renumbered,
            }),
            self.hello(peer, false, store)?,
            self.start_pull(peer, &me, 0, now),
        ])
    }

    /// `peer` pulls its own origin from the start: it was restored from an
    /// older copy (see [`Node::reclaim`]). Pages it served before may have left
    /// out, as superseded, changes of other origins whose superseding change
    /// the restore lost before any peer took it: this device would hold
    /// neither, its watermarks covering both. (Simulation seed 2817: a delete
    /// left out because a create superseded it, the create left out because
    /// the peer's own delete superseded that, and that delete lost.) So this
    /// device vouches for no other origin any more and pulls each again, from
    /// the origin itself where it is connected (a peer that took pages from
    /// the restored one may lack the same changes); what it holds already
    /// applies as a no-op. A restore costs every peer one full pass.
    pub(super) fn peer_restored(
        &mut self,
        peer: &str,
        now: u64,
        store: &dyn Store,
    ) -> Result<Vec<Output>, StoreError> {
        store.reverify(peer)?;
        let me = self.me.clone();
        self.pulls
            .retain(|origin, _| *origin == me || origin == peer);
        self.unverified.clear();
        let mut out = vec![Output::Event(Event::PeerRestored { peer: peer.into() })];
        let connected: Vec<String> = self.connected().collect();
        for origin in connected.iter().filter(|o| **o != me && *o != peer) {
            out.push(self.start_pull(origin, origin, 0, now));
        }
        for p in &connected {
            out.push(self.hello(p, true, store)?);
        }
        Ok(out)
    }

    /// Where renumbered changes start: above every claim a peer made, with a
    /// gap of [`RESTORE_GAP`] for what peers not heard from yet may hold (the
    /// restored copy cannot know how far its lost self went), so a renumbered
    /// change never takes a number a peer holds for a lost one.
    fn above_claims(&self, floor: i64) -> i64 {
        let held = self
            .peers
            .values()
            .filter_map(|p| p.acks.get(&self.me).copied())
            .fold(floor, i64::max);
        held.saturating_add(RESTORE_GAP)
    }

    /// This device took its own changes back from `peer` (applying them
    /// issued each again under a new number, so peers whose watermarks cover
    /// the old one take it too). The peer's claims on other origins, which
    /// counted only as far as its pages ran without a gap, count again: the
    /// reclaim made it verify them anew.
    pub(super) fn reclaimed(&mut self, peer: &str, store: &dyn Store) -> Result<(), StoreError> {
        self.reclaiming.remove(peer);
        self.unverified.retain(|(p, _), _| p != peer);
        store.reclaimed(peer)
    }

    /// `peer` took changes of this device's own origin numbered from
    /// `relayed` up from other devices since this device last pulled its own
    /// changes from it. A restore renumbered every change this device held
    /// above a base, so one numbered at or below the base (an old number)
    /// is either a copy of one it renumbered or one the restore lost that
    /// reached `peer` only later: a relay held it, or took it back from a
    /// device restored in turn (simulation seed 333). Every watermark covers
    /// its number, so only pulling its own changes from `peer` again brings
    /// it. (Not only above what the restored copy held: that count
    /// includes what the device wrote after the restore, under the very
    /// numbers it reused.) The peer is listed durably first (status shows
    /// it; a crash midway resumes from the start); the pull starts just
    /// below `relayed`, and `peer` forgets it when the pull arrives. One
    /// reclaim at a time: while another runs or waits (a restore's own,
    /// which must each reach its peer first: until then that peer's pages
    /// of other origins may lack what this device lost; simulation seed
    /// 397), this one waits in the list ([`Node::reclaim_next`]) and starts
    /// from the start, which makes `peer` pull everything again too.
    pub(super) fn retake(
        &mut self,
        peer: &str,
        relayed: Option<i64>,
        now: u64,
        store: &dyn Store,
    ) -> Out {
        let Some(lo) = relayed else {
            return Ok(Vec::new());
        };
        if self.reclaiming.contains(peer) || store.renumbered()?.is_none_or(|base| lo > base) {
            return Ok(Vec::new());
        }
        let mut list = store.reclaim_from()?;
        if list.iter().any(|p| p == peer) {
            return Ok(Vec::new());
        }
        let idle = list.is_empty() && !self.pulls.contains_key(&self.me);
        list.push(peer.into());
        store.reclaim_all(&list)?;
        let after = lo.saturating_sub(1).max(0);
        let mut out = vec![Output::Event(Event::Retaking {
            peer: peer.into(),
            after,
        })];
        if idle {
            self.reclaiming.insert(peer.into());
            let me = self.me.clone();
            out.push(self.start_pull(peer, &me, after, now));
        }
        Ok(out)
    }

    /// After a restore, takes this device's own changes back from `peer` if it
    /// has not yet (one such pull at a time: pulls are per origin).
    pub(super) fn reclaim_next(
        &mut self,
        peer: &str,
        now: u64,
        store: &dyn Store,
    ) -> Result<Vec<Output>, StoreError> {
        if self.pulls.contains_key(&self.me) || !store.reclaim_from()?.iter().any(|p| p == peer) {
            return Ok(Vec::new());
        }
        self.reclaiming.insert(peer.into());
        let me = self.me.clone();
        Ok(vec![
            self.hello(peer, false, store)?,
            self.start_pull(peer, &me, 0, now),
        ])
    }
}
