//! Restores told on: every Hello names the restores its sender verified its
//! claims again after, so a gap a restored device's lost self left in pages
//! it served is not passed on by relays that have not started over yet.
//!
//! ```ignore
//! // node.rs, after a Hello from `peer` naming `told`:
//! out.extend(self.on_restores(&peer, told, now, store)?);
//! // pages.rs, a page of another origin relayed by `peer`:
//! let doubted = self.doubted_after_restores(peer, page.restores, store)?;
//! ```
//!
//! A restore is named `(device, base)`: `base` is where the restored device
//! renumbered its changes, which only grows from one restore to the next.
//! The restored device names its own; a device that pulled everything again
//! after it (asked by the restored device's own pull, or hearing of it in a
//! Hello) names it too. A peer that does not name every restore this device
//! knows of may still vouch for pages the restored device served before it
//! lost a change that superseded another (the relay gap, README "Backup and
//! restore"): its claims count only as far as its pages carry them without
//! a gap, until its Hello names them.

use std::collections::BTreeMap;

use super::{Node, Out};
use crate::proto::event::{Event, Output};
use crate::proto::store::{Store, StoreError};

impl Node {
    /// The restores this device's claims are verified after: its own last
    /// one, and those of other devices it pulled everything again after.
    pub(super) fn restores(&self, store: &dyn Store) -> Result<Vec<(String, i64)>, StoreError> {
        let mut all = store.restores()?;
        if let Some(base) = store.renumbered()? {
            all.retain(|(device, _)| *device != self.me);
            all.push((self.me.clone(), base));
        }
        Ok(all)
    }

    /// `peer`'s Hello named `told`. Remembered for the pages `peer` relays
    /// (its doubted claims are pulled for again once what it names
    /// changes). Restores named here for the first time make this device
    /// pull everything again, once for all of them, as the restored
    /// device's own pull does ([`Node::peer_restored`]); any device's,
    /// paired here or not (one removed since, or not known yet, may have
    /// served the pages a peer relays; a false name costs a pass, never a
    /// change). `peer`'s own restore, named just before the pull of its
    /// own changes that follows it, spares that pull the same work once:
    /// the mark lasts until that pull or the link goes (clearing it at each
    /// Hello of the peer made the pull start over a second time, and
    /// whole-folder seed 1120 diverged: not understood yet, see the README).
    pub(super) fn on_restores(
        &mut self,
        peer: &str,
        told: Vec<(String, i64)>,
        now: u64,
        store: &dyn Store,
    ) -> Out {
        let known: BTreeMap<String, i64> = store.restores()?.into_iter().collect();
        let told: BTreeMap<String, i64> = told.into_iter().collect();
        let new: Vec<(String, i64)> = told
            .iter()
            .filter(|(device, base)| {
                **device != self.me && known.get(*device).is_none_or(|k| k < *base)
            })
            .map(|(device, base)| (device.clone(), *base))
            .collect();
        let mut out = Vec::new();
        if let Some((first, _)) = new.first() {
            let itself = new.iter().any(|(device, _)| device == peer);
            let kept = if itself {
                peer.to_string()
            } else {
                first.clone()
            };
            out.extend(self.peer_restored(&kept, now, store)?);
            for (device, base) in &new {
                store.note_restore(device, *base)?;
                if *device != kept {
                    out.push(Output::Event(Event::PeerRestored {
                        peer: device.clone(),
                    }));
                }
            }
            if itself {
                self.started_over.insert(peer.into());
            }
        }
        if let Some(p) = self.peers.get_mut(peer)
            && p.restores != told
        {
            p.restores = told;
            self.unverified.retain(|(q, _), _| q != peer);
        }
        Ok(out)
    }

    /// `peer` pulls its own changes from the start (a restore's reclaim):
    /// pulls everything again, unless its Hello naming that restore just
    /// made this device do so. A restore is not always named anew (one
    /// whose lost changes reached no one renumbers where the last did), so
    /// the pull itself counts.
    pub(super) fn own_pull_from_start(&mut self, peer: &str, now: u64, store: &dyn Store) -> Out {
        if self.started_over.remove(peer) {
            return Ok(Vec::new());
        }
        let out = self.peer_restored(peer, now, store)?;
        if let Some(&base) = self.peers.get(peer).and_then(|p| p.restores.get(peer)) {
            store.note_restore(peer, base)?;
        }
        Ok(out)
    }

    /// Whether `peer`'s claims on origins other than its own and this
    /// device's, in a page read when it named `named`, count only as far as
    /// the page carries them without a gap: `named` lacks a restore this
    /// device knows of (a restored device names its own), or this device,
    /// restored, has not taken its own changes back from `peer` yet (a
    /// restore whose lost changes reached no one renumbers where the last
    /// one did, so only the reclaim tells that the peer started over after
    /// it).
    pub(super) fn doubted_after_restores(
        &self,
        peer: &str,
        named: &[(String, i64)],
        store: &dyn Store,
    ) -> Result<bool, StoreError> {
        let behind = self.restores(store)?.iter().any(|(device, base)| {
            device != peer && !named.iter().any(|(d, b)| d == device && b >= base)
        });
        Ok(behind || store.reclaims_from(peer)?)
    }
}
