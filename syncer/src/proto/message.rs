//! Protocol messages and their binary encoding.
//!
//! ```
//! use sdsync_syncer::proto::message::{Envelope, Payload, decode, encode};
//! let env = Envelope::new("lib", "dev-a", Payload::Pull { origin: "dev-b".into(), after: 7 });
//! let bytes = encode(&env);
//! assert_eq!(decode(&bytes).unwrap(), env);
//! assert!(decode(&bytes[..bytes.len() - 1]).is_err());
//! ```
//!
//! Every message travels in a versioned [`Envelope`] (protocol version, library id,
//! sender device, payload), encoded with postcard: compact, no schema negotiation,
//! and decoding is bounds-checked (it returns an error on any malformed input and
//! never panics). Frames above [`MAX_FRAME`] and trailing bytes are refused.

use serde::{Deserialize, Serialize};

use crate::library::Change;
use crate::proto::schema::TableLayout;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 9;

/// The most bytes of changes a page carries beyond its first change: a node
/// never asks for more (its configured `page_bytes` is capped at this).
pub const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// The largest frame accepted: a page of [`MAX_PAGE_BYTES`] plus one change of
/// the largest row capture accepts ([`MAX_ROW_BYTES`], whose JSON is at most
/// twice its size plus a few bytes per column), with room for the envelope. A
/// page always carries at least its first change, however large, so a row of
/// any accepted size arrives. 80 MiB; a frame is read into memory whole.
///
/// [`MAX_ROW_BYTES`]: sdsync_core::limits::MAX_ROW_BYTES
pub const MAX_FRAME: usize = 2 * (sdsync_core::limits::MAX_ROW_BYTES as usize) + 2 * MAX_PAGE_BYTES;

/// What every message carries around its payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version of the sender.
    pub version: u16,
    /// The library both devices sync.
    pub library: String,
    /// The sending device.
    pub sender: String,
    /// The message.
    pub payload: Payload,
}

impl Envelope {
    /// An envelope of the current protocol version.
    pub fn new(library: &str, sender: &str, payload: Payload) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            library: library.into(),
            sender: sender.into(),
            payload,
        }
    }
}

/// The messages of the protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// Handshake and anti-entropy: what the sender holds of each origin (this is
    /// also its acknowledgement) and its clock. `reply` asks for a Hello back.
    Hello {
        /// `(origin, seq)`: the sender holds every change of `origin` up to `seq`.
        watermarks: Vec<(String, i64)>,
        /// The sender's HLC.
        hlc: i64,
        /// Whether the receiver should answer with its own Hello.
        reply: bool,
        /// Changes the sender holds in quarantine, per origin, so the device they
        /// came from can show them (`sdsync status`) although it cannot see them.
        quarantined: Vec<QuarantineSummary>,
        /// The tables the sender syncs, so both sides can name a mismatch
        /// (devices on different app versions; see `proto::schema`).
        schema: Vec<TableLayout>,
        /// Which running copy of the sender's library folder this is, so a
        /// peer hearing two at once can stop one (see `proto::node::copies`).
        incarnation: Incarnation,
        /// The newest changes of the receiver's own origin the sender holds,
        /// `(seq, hlc)`: the receiver checks they are its own history (a
        /// restored or copied folder reuses numbers; see `Node::on_hello`).
        yours: Vec<(i64, i64)>,
        /// The clock the receiver announced to the sender in its Hello with
        /// the highest HLC, `(seq, hlc)`: its own sequence and HLC then. A
        /// device's clock never goes back, and nothing it issues later is
        /// numbered at or below that sequence, so a clock below it now, or a
        /// change of its own under those numbers with a later HLC, means its
        /// folder was restored or copied, even when every change the sender
        /// holds of the lost history was superseded there.
        your_clock: (i64, i64),
        /// The lowest number of the receiver's own changes the sender took
        /// from other devices since the receiver last pulled its own
        /// changes from the sender (only for a receiver that ever did: a
        /// restored one). At or below where the receiver's last restore
        /// renumbered its changes, the sender may hold one the receiver
        /// lost, and the receiver takes its changes back again
        /// (`sqlstore::points`, `Node::retake`).
        relayed: Option<i64>,
        /// The restores the sender verified its claims again after, `(device,
        /// base)`: its own last (`base` where it renumbered its changes),
        /// and every other device's it heard of. A receiver that knows of a
        /// restore the sender does not name counts the sender's claims only
        /// as far as its pages carry them without a gap (they may rest on
        /// pages the restored device served before it lost what superseded
        /// them), and one that hears of a restore it did not know pulls
        /// everything again (`Node::on_restores`; version 9).
        restores: Vec<(String, i64)>,
    },
    /// Asks for the changes of `origin` above sequence `after`: starts (or
    /// restarts there) a stream of pages, paced by [`Payload::Ack`]s.
    Pull {
        /// Origin device.
        origin: String,
        /// Lowest sequence excluded.
        after: i64,
    },
    /// A bounded page of changes of one origin, as an answer to a Pull or pushed
    /// by the origin itself. With what the receiver holds up to `after`, it makes
    /// the receiver complete for `origin` up to `complete_to`.
    Page {
        /// Origin device of every change in the page.
        origin: String,
        /// The page continues from this sequence.
        after: i64,
        /// Completeness the page grants (see above).
        complete_to: i64,
        /// The changes, in sequence order (parents before children).
        changes: Vec<Change>,
        /// More pages follow for this origin.
        more: bool,
        /// For a page of another origin than the sender's own: the restores
        /// the sender had verified its claims after when it read the page
        /// (as in its Hello). A page read before its sender started over
        /// may arrive after the Hello that says it did (version 9).
        restores: Vec<(String, i64)>,
        /// The sender's own clock `(seq, hlc)` when it read the page. For a
        /// page of another origin the receiver keeps it as announced
        /// (Hello's `your_clock`): the page may leave out changes superseded
        /// by the sender's own, and if the sender's folder goes back to
        /// before those, this clock tells the restore even when none of them
        /// reached anyone (version 9). For a page of the sender's own
        /// changes it tells how far they go (the receiver's lag while a
        /// burst streams in); senders before session 25 sent `(0, 0)` there,
        /// and receivers before it ignore it, so no version change.
        clock: (i64, i64),
    },
    /// The sender applied a page of `origin` and now holds it up to `to`: the
    /// stream that page came from may send one more page.
    Ack {
        /// Origin of the page.
        origin: String,
        /// What the sender holds of that origin now (its watermark).
        to: i64,
    },
    /// A refusal, with the reason, so the other side can report it.
    Refused {
        /// Why.
        reason: String,
    },
    /// The copy of the receiver's library folder running as `incarnation`
    /// must stop: another copy runs as the same device (the receiver ignores
    /// it when it is another incarnation; the sender tells every connection).
    Stop {
        /// The copy that must stop.
        incarnation: Incarnation,
        /// Why, naming what to do.
        reason: String,
    },
}

impl Payload {
    /// What the message is and where it stands, for trace logs (no contents).
    pub fn kind(&self) -> String {
        match self {
            Payload::Hello { .. } => "Hello".into(),
            Payload::Pull { origin, after } => format!("Pull {origin} after {after}"),
            Payload::Page {
                origin,
                after,
                complete_to,
                changes,
                more,
                ..
            } => format!(
                "Page {origin} after {after} to {complete_to}: {} changes{}",
                changes.len(),
                if *more { ", more" } else { "" }
            ),
            Payload::Ack { origin, to } => format!("Ack {origin} to {to}"),
            Payload::Refused { .. } => "Refused".into(),
            Payload::Stop { .. } => "Stop".into(),
        }
    }
}

/// One running copy of a device's library folder: when it first ran from the
/// file it runs from (a copied or moved database file is a new one), and a
/// random number. Later copies compare greater. Zero: unknown (in-memory
/// databases, simulations), never compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Incarnation {
    /// Wall-clock milliseconds when this copy first ran.
    pub since_ms: u64,
    /// Random, so two copies started in the same millisecond differ.
    pub id: u64,
}

impl Incarnation {
    /// Whether this is the unknown incarnation.
    pub fn is_unknown(&self) -> bool {
        *self == Self::default()
    }
}

/// What a device holds in quarantine of one origin: compact enough for every Hello.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QuarantineSummary {
    /// The origin whose changes are quarantined.
    pub origin: String,
    /// How many.
    pub count: i64,
    /// The reason of the oldest one (truncated).
    pub reason: String,
}

/// Why bytes are not a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// Not a well-formed message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A well-formed message followed by extra bytes.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

/// Encodes a message.
pub fn encode(env: &Envelope) -> Vec<u8> {
    // Invariant: serializing plain data (strings, integers, vectors) into a Vec
    // cannot fail with postcard.
    postcard::to_stdvec(env).expect("postcard encodes plain data")
}

/// Decodes a message, refusing oversized frames and trailing bytes.
pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    if bytes.len() > MAX_FRAME {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let (env, rest) = postcard::take_from_bytes::<Envelope>(bytes)
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(env)
}

/// An approximate encoded size of a change, for bounding pages by bytes.
pub fn change_size(c: &Change) -> usize {
    32 + c.tbl.len()
        + c.pk.len()
        + c.op.len()
        + c.origin.len()
        + c.data.as_ref().map_or(0, String::len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::Pk;
    use proptest::prelude::*;

    fn change(i: i64) -> Change {
        Change {
            tbl: "tags".into(),
            pk: format!("t{i}").into(),
            op: "upsert".into(),
            data: Some(r#"{"color":"red"}"#.into()),
            origin: "o".into(),
            seq: i,
            hlc: i << 16,
            creates: 1,
        }
    }

    #[test]
    fn round_trip_every_payload() {
        let payloads = vec![
            Payload::Hello {
                watermarks: vec![("a".into(), 3)],
                hlc: 9,
                reply: true,
                quarantined: vec![QuarantineSummary {
                    origin: "a".into(),
                    count: 2,
                    reason: "UNIQUE constraint failed: tags.canonical_name".into(),
                }],
                incarnation: Incarnation { since_ms: 1, id: 2 },
                yours: vec![(7, 7 << 16)],
                your_clock: (9, 9 << 16),
                relayed: Some(3),
                restores: vec![("dev-c".into(), 1_000_040)],
                schema: vec![TableLayout {
                    table: "tags".into(),
                    class: "shared".into(),
                    columns: vec!["name".into()],
                }],
            },
            Payload::Pull {
                origin: "a".into(),
                after: 3,
            },
            Payload::Ack {
                origin: "a".into(),
                to: 5,
            },
            Payload::Page {
                origin: "a".into(),
                after: 3,
                complete_to: 5,
                changes: vec![change(4), change(5)],
                more: false,
                restores: vec![("dev-c".into(), 1_000_040)],
                clock: (7, 1_000),
            },
            Payload::Page {
                origin: "a".into(),
                after: 5,
                complete_to: 8,
                changes: [
                    Pk::Blob(vec![0, 0xff]),
                    Pk::RawText(vec![0xff, 0]),
                    Pk::Integer(i64::MIN),
                ]
                .into_iter()
                .zip(6..)
                .map(|(pk, i)| Change { pk, ..change(i) })
                .collect(),
                more: false,
                restores: vec![],
                clock: (0, 0),
            },
            Payload::Refused { reason: "x".into() },
            Payload::Stop {
                incarnation: Incarnation { since_ms: 3, id: 4 },
                reason: "y".into(),
            },
        ];
        for p in payloads {
            let env = Envelope::new("lib", "me", p);
            assert_eq!(decode(&encode(&env)), Ok(env));
        }
    }

    #[test]
    fn trailing_and_oversized_are_refused() {
        let mut bytes = encode(&Envelope::new(
            "l",
            "s",
            Payload::Refused { reason: "r".into() },
        ));
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(DecodeError::Trailing(1)));
        assert_eq!(
            decode(&vec![0; MAX_FRAME + 1]),
            Err(DecodeError::TooLarge(MAX_FRAME + 1))
        );
    }

    proptest! {
        // The fuzz target for the decoder (cargo fuzz needs nightly, which this
        // toolchain does not have): arbitrary bytes never panic.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decoding_mutated_messages_never_panics(flip in 0usize..200, byte in any::<u8>()) {
            let mut bytes = encode(&Envelope::new("lib", "me", Payload::Page {
                origin: "a".into(), after: 1, complete_to: 3, changes: vec![change(2), change(3)], more: true,
                restores: vec![], clock: (0, 0),
            }));
            let i = flip % bytes.len();
            bytes[i] = byte;
            let _ = decode(&bytes);
        }
    }
}
