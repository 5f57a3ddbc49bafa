//! The node's handling of what peers report about themselves (their quarantine
//! summaries, their tables, their own last sequence, what they hold of this
//! device's own origin after a restore) and of pages that found the database busy.

use super::{Node, Pending};
use crate::library::Change;
use crate::proto::event::{Event, Output};
use crate::proto::message::QuarantineSummary;
use crate::proto::schema::{TableLayout, mismatches};
use crate::proto::store::{Store, StoreError};

type Out = Result<Vec<Output>, StoreError>;

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

    /// `peer` says it holds this device's origin up to `held`, more than the
    /// `had` it holds itself: the database was restored from an older copy (and
    /// what it wrote since reused sequence numbers peers hold), or the peer's
    /// claim is wrong. Pull this device's own origin back from it to tell.
    pub(super) fn reclaim(&mut self, peer: &str, held: i64, had: i64, now: u64) -> Output {
        self.reclaiming.insert(peer.into(), (held, had, false));
        let me = self.me.clone();
        self.start_pull(peer, &me, 0, now)
    }

    /// The store found its database restored (its sequence went back since the
    /// syncer last saw it, or its own changes at or below that sequence are
    /// newer than the clock then): peers may hold up to `floor`. Renumbers at
    /// once and takes its own origin back from `peer`.
    pub(super) fn restored_here(
        &mut self,
        peer: &str,
        floor: i64,
        had: i64,
        now: u64,
        store: &dyn Store,
    ) -> Result<Vec<Output>, StoreError> {
        let renumbered = store.restamp(floor)?;
        self.reclaiming.insert(peer.into(), (floor, had, true));
        let me = self.me.clone();
        Ok(vec![
            Output::Event(Event::Restored {
                peer: peer.into(),
                held: floor,
                had,
                renumbered,
            }),
            self.start_pull(peer, &me, 0, now),
        ])
    }

    /// A page of this device's own origin: `None` unless it is reclaiming from
    /// `peer`. The first change above what it held proves the restore: its own
    /// changes are renumbered above what peers hold (so they take the ones
    /// written since the restore), then the page applies like any other.
    pub(super) fn reclaimed(
        &mut self,
        peer: &str,
        changes: &[Change],
        store: &dyn Store,
    ) -> Result<Option<Vec<Output>>, StoreError> {
        let Some((held, had, renumbered)) = self.reclaiming.get_mut(peer) else {
            return Ok(None);
        };
        let (held, had) = (*held, *had);
        if *renumbered || !changes.iter().any(|c| c.seq > had) {
            return Ok(Some(Vec::new()));
        }
        *renumbered = true;
        let renumbered = store.restamp(held)?;
        Ok(Some(vec![Output::Event(Event::Restored {
            peer: peer.into(),
            held,
            had,
            renumbered,
        })]))
    }
}
