//! A page arrives: apply it, acknowledge it, and move (or end) the pull it
//! continues.
//!
//! ```ignore
//! // node.rs dispatches: Payload::Page { .. } => self.on_page(&peer, &origin, …)
//! ```
//!
//! The rules that matter: a page moves a pull only if it continues it exactly
//! (same peer, same position); a page beyond a gap applies only as part of
//! the pull that fetches it; what a page vouches for depends on who sent it
//! (the origin itself, or a relay up to what it carries and the origin last
//! reported).

use super::{Node, Out};
use crate::library::Change;
use crate::proto::event::{Event, Output};
use crate::proto::message::Payload;
use crate::proto::store::Store;

/// What a page of one origin carries (see [`Payload::Page`]).
pub(super) struct Page<'a> {
    pub(super) after: i64,
    pub(super) complete_to: i64,
    pub(super) changes: &'a [Change],
    pub(super) more: bool,
    pub(super) restores: &'a [(String, i64)],
    pub(super) clock: (i64, i64),
}

impl Node {
    pub(super) fn on_page(
        &mut self,
        peer: &str,
        origin: &str,
        Page {
            after,
            complete_to,
            changes,
            more,
            restores,
            clock,
        }: Page<'_>,
        now: u64,
        store: &dyn Store,
    ) -> Out {
        let _page =
            tracing::debug_span!("page", %origin, after, changes = changes.len(), more).entered();
        if origin == self.me && !self.reclaiming.contains(peer) {
            return Ok(vec![]);
        }
        if peer == origin {
            self.origin_holds(peer, clock.0);
        }
        let mut out = Vec::new();
        if let Some(c) = changes.iter().find(|c| c.origin != origin) {
            let reason = format!(
                "page of origin {origin} holds a change of origin {}",
                c.origin
            );
            return self.failed(peer, origin, after, reason, store);
        }
        let have = store
            .watermarks()?
            .into_iter()
            .find(|(o, _)| o == origin)
            .map_or(0, |(_, s)| s);
        // What this page can vouch for: the origin knows what it issued; another
        // peer's claim counts up to the last change it carries, or up to what the
        // origin itself last reported.
        let vouched = if peer == origin {
            out.extend(self.origin_reports(origin, complete_to, store)?);
            complete_to
        } else if origin != self.me && self.doubted_after_restores(peer, restores, store)? {
            // A peer that has not pulled everything again since a restore
            // this device knows of may vouch for pages the restored device
            // served before it lost a change that superseded one they left
            // out: its claim counts only as far as its page runs without a
            // gap (the relay gap, simulation seed 397; `restores.rs`).
            complete_to.min(gapless(after, changes))
        } else {
            let last = changes.last().map_or(0, |c| c.seq);
            complete_to.min(last.max(store.reported(origin)?))
        };
        let complete = (have >= after).then_some((origin, vouched));
        // The page that continues this origin's pull exactly (the stream goes
        // on by itself; a page never starts another pull). Any other page (an
        // older stream's, one overtaken on the way) may apply but does not move
        // the pull, and cannot end it: had a later page ended it, an earlier
        // one still on its way would be ignored (a restored device's own
        // changes are taken only while it pulls them). A pull left waiting for
        // a page that will not come is retried from where it stands.
        let mine = self
            .pulls
            .get(origin)
            .is_some_and(|p| p.peer == peer && p.after == after);
        // Beyond a gap that a pull is already fetching: that pull brings it.
        // The pull's own pages apply even beyond a gap: their sender may lack
        // what lies between (it holds changes above its watermark), and the
        // pull must go on past it.
        if complete.is_none() && self.pulls.contains_key(origin) && !mine {
            return Ok(out);
        }
        if origin != self.me {
            store.note_points(peer, origin, changes)?;
        }
        if peer != origin && origin != self.me && clock != (0, 0) {
            store.note_page_clock(peer, clock.0, clock.1)?;
        }
        let quarantined = match store.apply(peer, changes, complete) {
            Ok(q) => q,
            Err(e) if e.is_transient() => return Ok(self.deferred(peer, origin, have, &e, now)),
            Err(e) => return self.failed(peer, origin, after, e.to_string(), store),
        };
        self.busy.remove(origin);
        if let Some(hlc) = changes.iter().map(|c| c.hlc).max() {
            let newest = self.newest.entry(origin.into()).or_insert(hlc);
            *newest = (*newest).max(hlc);
        }
        if vouched < complete_to && !more {
            self.unverified
                .insert((peer.to_string(), origin.to_string()), complete_to);
        }
        for q in quarantined {
            out.push(Output::Event(Event::Quarantined {
                peer: peer.into(),
                origin: origin.into(),
                seq: q.seq,
                reason: q.reason,
            }));
        }
        if !changes.is_empty() {
            let mut tables: Vec<(String, usize)> = Vec::new();
            for c in changes {
                match tables.iter_mut().find(|(t, _)| *t == c.tbl) {
                    Some((_, n)) => *n += 1,
                    None => tables.push((c.tbl.clone(), 1)),
                }
            }
            out.push(Output::Event(Event::Applied {
                peer: peer.into(),
                origin: origin.into(),
                tables,
                count: changes.len(),
            }));
        }
        let held = complete.map_or(have, |_| have.max(vouched));
        tracing::debug!(held, mine, "page applied");
        out.push(self.send(
            peer,
            Payload::Ack {
                origin: origin.into(),
                to: held,
            },
        ));
        if origin == self.me && mine && !more {
            self.reclaimed(peer, store)?;
        }
        let next = changes.last().map_or(complete_to, |c| c.seq);
        if mine && more {
            self.advance(origin, next, now);
        } else if mine {
            self.pulls.remove(origin);
            // After a reclaim, the peer's answer says what it vouches for now.
            out.push(self.hello(peer, origin == self.me, store)?);
            // Caught up with an origin through another peer: the origin opens
            // its push stream to this device only once it hears so (it waited
            // for a Pull that went elsewhere); otherwise its commits would wait
            // for the next anti-entropy round.
            let origin_connected = self.peers.get(origin).is_some_and(|p| p.connected);
            if origin != peer && origin_connected {
                out.push(self.hello(origin, false, store)?);
            }
        } else if complete.is_none() && !self.failing.contains(&(peer.into(), origin.into())) {
            // A pushed page beyond a gap: fetch the gap (not from a stream
            // whose page could not be applied: the next Hello starts over).
            out.push(self.start_pull(peer, origin, have, now));
        }
        Ok(out)
    }
}

/// The highest number up to which `changes` (in order of number) leave none
/// out above `after`.
fn gapless(after: i64, changes: &[Change]) -> i64 {
    let mut end = after;
    for c in changes {
        if c.seq > end + 1 {
            break;
        }
        end = end.max(c.seq);
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: i64) -> Change {
        Change {
            tbl: "tags".into(),
            pk: crate::library::Pk::Text("t".into()),
            op: "upsert".into(),
            data: None,
            origin: "b".into(),
            seq,
            hlc: seq,
            creates: 0,
        }
    }

    #[test]
    fn a_page_counts_up_to_its_first_gap() {
        let page = |seqs: &[i64]| seqs.iter().copied().map(change).collect::<Vec<_>>();
        assert_eq!(gapless(4, &page(&[])), 4);
        assert_eq!(gapless(4, &page(&[5, 6, 7])), 7);
        assert_eq!(gapless(4, &page(&[5, 6, 8, 9])), 6);
        assert_eq!(gapless(4, &page(&[6, 7])), 4);
        assert_eq!(gapless(4, &page(&[3, 5])), 5);
    }
}
