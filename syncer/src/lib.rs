//! The sdsync syncer: one process per device that exchanges captured changes with
//! the device's peers.
//!
//! ```no_run
//! use sdsync_syncer::library::{Library, extension_path};
//! let ext = extension_path(None).unwrap();
//! let laptop = Library::create("laptop.db".as_ref(), &ext).unwrap();
//! let phone = Library::create("phone.db".as_ref(), &ext).unwrap();
//! phone.apply(&laptop.changes().unwrap(), &laptop.watermarks().unwrap()).unwrap();
//! ```
//!
//! Storage goes through `library` (everything via the extension's SQL contract);
//! `proto` is the protocol as a state machine without I/O; `sqlstore` its storage
//! over SQLite (quarantine, verified watermarks, dead letters); `net` has the device
//! identity, pinned mutual TLS and QUIC links; `daemon` drives a node over a link;
//! `home` is the library folder on disk; `runlock` keeps it to one syncer;
//! `members` is membership through the library's `devices` table (introduction,
//! removal, rotation), `net::discovery` finding devices by mDNS, `lag` and
//! `status` what `sdsync status` tells. The `sdsync` binary adds its showcases
//! (`demo`, `bench`).

pub mod bars;
pub mod daemon;
pub mod home;
pub mod lag;
pub mod library;
pub mod members;
pub mod metrics;
pub mod net;
pub mod observe;
pub mod progress;
pub mod proto;
pub mod room;
pub mod runlock;
pub mod settings;
pub mod sqlstore;
pub mod status;
