//! The sync protocol: messages (`message`), the state machine without I/O
//! (`node`) and what it needs from storage (`store`).
//!
//! ```no_run
//! use sdsync_syncer::proto::message::{Envelope, Payload, encode};
//! let hello = Envelope::new("library", "me", Payload::Hello { watermarks: vec![], hlc: 0, reply: true, quarantined: vec![], schema: vec![], incarnation: Default::default(), yours: vec![], your_clock: (0, 0), relayed: None, restores: vec![] });
//! let bytes = encode(&hello); // what a transport sends
//! ```

pub mod event;
pub mod message;
pub mod node;
pub mod schema;
pub mod store;
