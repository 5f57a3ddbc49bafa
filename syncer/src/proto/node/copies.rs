//! Copies of one library folder running at once: `cp -r` of a folder makes a
//! second device with the same identity, certificate and pairings, and both
//! issue the same sequence numbers for different changes.
//!
//! ```ignore
//! node.set_incarnation(Incarnation { since_ms, id }); // from the store, at start
//! // a Hello from `peer` carrying another incarnation than the one heard lately:
//! let (out, go_on) = node.on_incarnation(peer, theirs, now);
//! ```
//!
//! Every running copy has an [`Incarnation`]: when it first ran from the file
//! it runs from (the syncer keeps it in `sync.db` with the database file's
//! inode, so a copied or moved file starts a new one) and a random
//! number. A peer remembers the incarnation it last heard from each device; a
//! Hello from another one while the first is still heard from (within three
//! Hello intervals, and still connected) means two copies run at once. The
//! newer one is the copy: it is told to [`Payload::Stop`], its daemon stops
//! and `sdsync run` refuses to start it again until it is given an identity
//! of its own (`sdsync reidentify DIR`) or told to take over (`--take-over`).
//! A new incarnation after the old one fell silent is a folder moved (or
//! restored by copying the file back) and restarted: it is taken as the
//! device from then on.

use crate::proto::event::{Event, Output};
use crate::proto::message::{Incarnation, Payload};

use super::Node;

/// How many Hello intervals an incarnation counts as running after its last
/// Hello.
const ALIVE_HELLOS: u64 = 3;

impl Node {
    /// The incarnation this node's Hellos carry (unknown by default).
    pub fn set_incarnation(&mut self, incarnation: Incarnation) {
        self.incarnation = incarnation;
    }

    /// A Hello from `peer` said it runs as `theirs`. Returns what to send and
    /// report, and whether to go on with the Hello (not when it came from the
    /// copy that must stop).
    pub(super) fn on_incarnation(
        &mut self,
        peer: &str,
        theirs: Incarnation,
        now: u64,
    ) -> (Vec<Output>, bool) {
        if theirs.is_unknown() {
            return (Vec::new(), true);
        }
        let alive = ALIVE_HELLOS * self.cfg.anti_entropy_ms;
        let known = self.incarnations.get(peer).copied();
        let Some((current, heard)) =
            known.filter(|(cur, heard)| *cur != theirs && now.saturating_sub(*heard) <= alive)
        else {
            self.incarnations.insert(peer.into(), (theirs, now));
            return (Vec::new(), true);
        };
        let (copy, original) = if theirs > current {
            (theirs, current)
        } else {
            (current, theirs)
        };
        let heard = if original == theirs { now } else { heard };
        self.incarnations.insert(peer.into(), (original, heard));
        let reason = format!(
            "device {peer} runs from two copies of its library folder at once \
             (most likely `cp -r` of the folder): the one started at {} ms stops; \
             run `sdsync reidentify DIR` on the copy to make it a device of its own \
             (or `sdsync run --take-over DIR` if the other copy is gone for good)",
            copy.since_ms
        );
        let out = vec![
            Output::Event(Event::TwoCopies {
                peer: peer.into(),
                reason: reason.clone(),
            }),
            self.send(
                peer,
                Payload::Stop {
                    incarnation: copy,
                    reason,
                },
            ),
        ];
        (out, copy != theirs)
    }

    /// `peer` says the copy running as `incarnation` must stop: this one, or
    /// another copy of this folder (then it is not for us).
    pub(super) fn on_stop(
        &self,
        peer: &str,
        incarnation: Incarnation,
        reason: String,
    ) -> Vec<Output> {
        if incarnation.is_unknown() || incarnation != self.incarnation {
            return Vec::new();
        }
        vec![Output::Event(Event::Stopped {
            peer: peer.into(),
            reason,
        })]
    }

    /// The last link to `peer` went down: whatever copy it was, it no longer
    /// runs here, so a copy that shows up next is not a second one.
    pub(super) fn forget_incarnation(&mut self, peer: &str) {
        self.incarnations.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::node::Config;

    fn node() -> Node {
        let mut n = Node::new("me", "lib", Config::default());
        n.add_peer("p");
        n
    }

    const OLD: Incarnation = Incarnation {
        since_ms: 10,
        id: 1,
    };
    const NEW: Incarnation = Incarnation {
        since_ms: 20,
        id: 2,
    };

    fn stops(out: &[Output]) -> Vec<Incarnation> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { env, .. } => match &env.payload {
                    Payload::Stop { incarnation, .. } => Some(*incarnation),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    #[test]
    fn one_copy_is_heard_as_usual() {
        let mut n = node();
        assert_eq!(n.on_incarnation("p", OLD, 0), (vec![], true));
        assert_eq!(n.on_incarnation("p", OLD, 5_000), (vec![], true));
    }

    #[test]
    fn a_newer_copy_heard_beside_the_older_one_is_told_to_stop() {
        let mut n = node();
        n.on_incarnation("p", OLD, 0);
        let (out, go_on) = n.on_incarnation("p", NEW, 1_000);
        assert_eq!((stops(&out), go_on), (vec![NEW], false));
        // The older one goes on, and the newer one is told again if it goes on.
        assert_eq!(n.on_incarnation("p", OLD, 2_000), (vec![], true));
        let (out, go_on) = n.on_incarnation("p", NEW, 3_000);
        assert_eq!((stops(&out), go_on), (vec![NEW], false));
    }

    #[test]
    fn the_copy_that_spoke_first_is_still_the_one_stopped() {
        let mut n = node();
        n.on_incarnation("p", NEW, 0);
        let (out, go_on) = n.on_incarnation("p", OLD, 1_000);
        assert_eq!((stops(&out), go_on), (vec![NEW], true));
        assert_eq!(n.on_incarnation("p", OLD, 2_000), (vec![], true));
    }

    #[test]
    fn a_new_copy_after_the_old_one_fell_silent_is_the_device() {
        let mut n = node();
        n.on_incarnation("p", OLD, 0);
        let later = ALIVE_HELLOS * Config::default().anti_entropy_ms + 1;
        assert_eq!(n.on_incarnation("p", NEW, later), (vec![], true));
        // A link that went down forgets which copy it was.
        n.on_incarnation("p", OLD, later + 1);
        n.disconnect("p");
        assert_eq!(n.on_incarnation("p", NEW, later + 2), (vec![], true));
    }

    #[test]
    fn a_stop_is_for_one_copy_only() {
        let mut n = node();
        n.set_incarnation(NEW);
        assert!(n.on_stop("p", OLD, "r".into()).is_empty());
        assert!(
            n.on_stop("p", Incarnation::default(), "r".into())
                .is_empty()
        );
        assert!(matches!(
            &n.on_stop("p", NEW, "r".into())[..],
            [Output::Event(Event::Stopped { .. })]
        ));
        let mut unknown = node();
        assert!(
            unknown
                .on_stop("p", Incarnation::default(), "r".into())
                .is_empty()
        );
        unknown.set_incarnation(Incarnation::default());
    }
}
