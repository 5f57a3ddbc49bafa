//! What the protocol node returns: messages to send and events to report.
//!
//! ```
//! use sdsync_syncer::proto::node::{Event, Output};
//! let e = Output::Event(Event::Retried { applied: 1, kept: 0 });
//! assert!(matches!(e, Output::Event(Event::Retried { .. })));
//! ```

use crate::proto::message::Envelope;

/// What the node asks its driver to do or report.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send a message to a peer.
    Send {
        /// Peer device.
        to: String,
        /// The message.
        env: Envelope,
    },
    /// Something worth reporting.
    Event(Event),
}

/// Reportable events.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Changes from a peer were applied.
    Applied {
        /// Peer.
        peer: String,
        /// Origin of the changes.
        origin: String,
        /// How many per table (for metrics by table class).
        tables: Vec<(String, usize)>,
        /// How many.
        count: usize,
    },
    /// A peer or message was refused (bad envelope, clock, unknown sender).
    Refused {
        /// Peer (or sender as claimed).
        peer: String,
        /// Why.
        reason: String,
    },
    /// This copy of the library folder must stop: `peer` hears another copy
    /// running as this device at the same time (the daemon stops).
    Stopped {
        /// The peer that told.
        peer: String,
        /// Why, naming what to do.
        reason: String,
    },
    /// `peer` runs from two copies of its library folder at once; the newer
    /// copy was told to stop.
    TwoCopies {
        /// The device.
        peer: String,
        /// What happened, naming what to do.
        reason: String,
    },
    /// A peer refused us.
    RefusedBy {
        /// Peer.
        peer: String,
        /// Its reason.
        reason: String,
    },
    /// Bytes that are not a message.
    Malformed {
        /// The decoder's reason.
        reason: String,
    },
    /// A page could not be applied; kept as a dead letter.
    ApplyFailed {
        /// Peer.
        peer: String,
        /// The error.
        reason: String,
    },
    /// A request gave up after its retries; kept as a dead letter.
    DeadLetter {
        /// Peer.
        peer: String,
        /// What.
        what: String,
    },
    /// A change could not be applied and was quarantined; its page applied.
    Quarantined {
        /// Peer that delivered it.
        peer: String,
        /// Its origin.
        origin: String,
        /// Its sequence.
        seq: i64,
        /// Why.
        reason: String,
    },
    /// A page found the database busy; it is pulled again after a backoff.
    /// On the sending side: reading the next page of a stream failed; the
    /// pages read stand, and the stream resumes from where it stopped.
    Deferred {
        /// Peer.
        peer: String,
        /// Origin of the page.
        origin: String,
        /// The error.
        reason: String,
    },
    /// Quarantined changes were retried.
    Retried {
        /// How many applied (or were superseded) and left the quarantine.
        applied: usize,
        /// How many are still quarantined.
        kept: usize,
    },
    /// A peer syncs tables or columns this device does not, or the reverse
    /// (devices on different app versions). Nothing stops; worth a WARN.
    SchemaMismatch {
        /// Peer.
        peer: String,
        /// What differs, in words.
        detail: String,
    },
    /// A peer holds more of this device's own changes than this device, or
    /// other ones under its numbers: its database was restored from an older
    /// copy. Its own changes since were
    /// renumbered above what peers hold, and it takes back the rest from `peer`.
    Restored {
        /// The peer that told.
        peer: String,
        /// How far the peer holds this device's origin.
        held: i64,
        /// How far this device held it.
        had: i64,
        /// A number the peer holds for another change than this device does
        /// (a whole folder restored, then written more than it lost; or a
        /// copy of the folder that ran in between), when that told it.
        reused: Option<i64>,
        /// How many of its changes were renumbered.
        renumbered: i64,
    },
    /// `peer` took changes of this device's own origin from other devices
    /// after this device pulled its own changes from it, under numbers from
    /// before its restore renumbered them: one may be a change it lacks,
    /// which reached `peer` only later (a relay held it). This device takes
    /// its changes back from `peer` again.
    Retaking {
        /// The peer that holds them.
        peer: String,
        /// Just below the lowest number `peer` took from relays: where the
        /// pull starts, unless it waits behind other reclaims (then from the
        /// start).
        after: i64,
    },
    /// `peer` was restored from an older copy (it pulls its own origin back,
    /// or a Hello named a restore of it this device did not know of): this
    /// device stopped vouching for other origins and pulls them again.
    PeerRestored {
        /// The restored peer.
        peer: String,
    },
    /// We vouched for more of `origin` than it says it issued: cut back.
    WatermarkCut {
        /// The origin.
        origin: String,
        /// What we vouched for.
        vouched: i64,
        /// What the origin itself reports.
        issued: i64,
    },
}

impl Event {
    /// What `sdsync status` keeps saying after the syncer recovered by
    /// itself from this event: `(kind, detail)`, the last of each kind.
    pub fn notice(&self) -> Option<(&'static str, String)> {
        match self {
            Self::Restored {
                peer,
                held,
                had,
                renumbered,
                ..
            } => Some((
                "restored",
                format!(
                    "this device's library went back to an older copy (peer {peer} held its \
                     changes up to seq {held}, it had {had}): its {renumbered} current \
                     change(s) renumbered above, the lost ones taken back from peers"
                ),
            )),
            Self::PeerRestored { peer } => Some((
                "peer restored",
                format!(
                    "peer {peer} went back to an older copy of its library: this device \
                     pulled everything again from its peers"
                ),
            )),
            Self::TwoCopies { reason, .. } => Some(("two copies", reason.clone())),
            _ => None,
        }
    }

    /// Whether a person should look at it (logged at WARN): what stays wrong
    /// until someone acts, and a restore, seen from either side (the
    /// protocol recovers the data, but two histories met: both devices say
    /// so), as opposed to what the protocol handles itself.
    pub fn needs_attention(&self) -> bool {
        matches!(
            self,
            Self::SchemaMismatch { .. }
                | Self::Restored { .. }
                | Self::Retaking { .. }
                | Self::PeerRestored { .. }
                | Self::Quarantined { .. }
                | Self::ApplyFailed { .. }
                | Self::DeadLetter { .. }
                | Self::RefusedBy { .. }
                | Self::Stopped { .. }
                | Self::TwoCopies { .. }
        )
    }
}
