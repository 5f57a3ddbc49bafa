//! The sending side: streams of pages, paced by the receiver's acknowledgements.
//!
//! ```ignore
//! out.extend(self.on_pull(peer, origin, after, store)?); // (re)starts a stream
//! out.extend(self.on_ack(peer, origin, to, store)?);     // one page of credit back
//! out.extend(self.pump(peer, &me, false, store)?);       // a commit: push if there is credit
//! ```
//!
//! A stream sends the pages of one origin to one peer, each continuing where
//! the last ended (its cursor: what the peer was *sent*, not what it
//! acknowledged, so nothing is sent twice while acknowledgements are on their
//! way). At most `window` pages may be unacknowledged: a writer faster than
//! the link or the peer waits in the database log, never in the syncer's
//! memory, and a burst of commits leaves as full pages rather than one page
//! per commit.
//!
//! - A **Pull** starts (or restarts, at its position) a stream with a full
//!   window. A stream of another origin ends with the page that has nothing
//!   more; the stream of this device's own origin stays open: it carries every
//!   later commit (the push).
//! - An **Ack** (the receiver applied a page) returns one page of credit.
//! - A peer's **Hello** opens its push stream at what it holds of this origin.
//!   A peer that is behind pulls, and its Pull gives the stream its window
//!   (pushing at the same time would send the same pages twice); a peer that
//!   is caught up gets a full window, so acknowledgements lost on the way
//!   never stop the pushes for good (pulls recover anything lost).

use super::Node;
use crate::proto::event::{Event, Output};
use crate::proto::message::{MAX_PAGE_BYTES, Payload};
use crate::proto::store::{Store, StoreError};

type Out = Result<Vec<Output>, StoreError>;

/// One stream of pages to a peer.
#[derive(Clone, Debug)]
pub(super) struct Stream {
    /// The last sequence sent (the next page continues above it).
    cursor: i64,
    /// Pages that may still be sent before an acknowledgement comes back.
    credit: usize,
}

impl Node {
    /// `peer` asks for `origin` above `after`: a stream starts there.
    pub(super) fn on_pull(
        &mut self,
        peer: &str,
        origin: &str,
        after: i64,
        store: &dyn Store,
    ) -> Out {
        let stream = Stream {
            cursor: after,
            credit: self.cfg.window,
        };
        self.streams.insert(key(peer, origin), stream);
        self.pump(peer, origin, true, store)
    }

    /// `peer` applied a page of `origin` and now holds it up to `to`.
    pub(super) fn on_ack(&mut self, peer: &str, origin: &str, to: i64, store: &dyn Store) -> Out {
        if origin == self.me
            && let Some(p) = self.peers.get_mut(peer)
        {
            let acked = p.acks.entry(origin.into()).or_default();
            *acked = (*acked).max(to);
        }
        let window = self.cfg.window;
        let Some(stream) = self.streams.get_mut(&key(peer, origin)) else {
            return Ok(vec![]);
        };
        stream.credit = (stream.credit + 1).min(window);
        self.pump(peer, origin, false, store)
    }

    /// `peer` said Hello and holds this device's own changes up to `held`:
    /// its push stream continues from there (or from what it was already
    /// sent), with a full window if the peer is `caught_up`.
    pub(super) fn open_push(&mut self, peer: &str, held: i64, first: bool, caught_up: bool) {
        let me = self.me.clone();
        let stream = self.streams.entry(key(peer, &me)).or_insert(Stream {
            cursor: held,
            credit: 0,
        });
        stream.cursor = if first { held } else { stream.cursor.max(held) };
        if caught_up {
            stream.credit = self.cfg.window;
        }
    }

    /// The peer's link is gone: its streams end (a new link starts over).
    pub(super) fn close_streams(&mut self, peer: &str) {
        self.streams.retain(|(p, _), _| p != peer);
    }

    /// Sends pages of `origin` to `peer` while its stream has credit and
    /// something to send. An `answer` to a Pull always sends its first page,
    /// even an empty one: it tells the puller how far it is complete.
    pub(super) fn pump(
        &mut self,
        peer: &str,
        origin: &str,
        mut answer: bool,
        store: &dyn Store,
    ) -> Out {
        let key = key(peer, origin);
        let mut out = Vec::new();
        while let Some(after) = self
            .streams
            .get(&key)
            .filter(|s| s.credit > 0)
            .map(|s| s.cursor)
        {
            let (page, next) = match self.page(origin, after, store) {
                Ok(read) => read,
                // The pages read so far stand (the cursor is past them): an
                // error here used to drop them with the cursor moved on, and
                // the peer saw a gap. The stream resumes from its cursor at
                // the next commit or acknowledgement, or the peer's next pull.
                // A lasting error with nothing read yet is the caller's.
                Err(e) if e.is_transient() || !out.is_empty() => {
                    out.push(Output::Event(Event::Deferred {
                        peer: peer.into(),
                        origin: origin.into(),
                        reason: e.to_string(),
                    }));
                    break;
                }
                Err(e) => return Err(e),
            };
            let more = matches!(page, Payload::Page { more: true, .. });
            if next <= after && !more && !answer {
                break;
            }
            answer = false;
            out.push(self.send(peer, page));
            if !more && origin != self.me {
                self.streams.remove(&key);
                break;
            }
            if let Some(s) = self.streams.get_mut(&key) {
                s.cursor = next;
                s.credit -= 1;
            }
            if !more {
                break;
            }
        }
        Ok(out)
    }

    /// A page of `origin` above `after`, and where the next page continues:
    /// after its last change, or, when it carries none, at what it completes.
    pub(super) fn page(
        &self,
        origin: &str,
        after: i64,
        store: &dyn Store,
    ) -> Result<(Payload, i64), StoreError> {
        // Capped so that a page plus one maximal row always fits a frame.
        let bytes = self.cfg.page_bytes.min(MAX_PAGE_BYTES);
        let slice = store.slice(origin, after, self.cfg.page_rows, bytes)?;
        let held = slice.held;
        let last = slice.changes.last().map_or(after, |c| c.seq);
        let complete_to = if slice.more {
            last.min(held)
        } else {
            held.max(after)
        };
        let next = slice.changes.last().map_or(complete_to, |c| c.seq);
        // Only a relayed page's claims are weighed by what its sender named.
        // Every page carries the sender's clock: a relayed one for restores
        // (`Payload::Page`), an own one so the receiver knows how far this
        // origin goes while a burst of commits streams to it (its lag in
        // `status`, its progress); Hellos say so only every few seconds.
        let restores = if origin == self.me {
            Vec::new()
        } else {
            self.restores(store)?
        };
        let clock = store.clock()?;
        let payload = Payload::Page {
            origin: origin.into(),
            after,
            complete_to,
            changes: slice.changes,
            more: slice.more,
            restores,
            clock,
        };
        Ok((payload, next))
    }
}

fn key(peer: &str, origin: &str) -> (String, String) {
    (peer.to_string(), origin.to_string())
}
