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
//! Today it holds the storage side (`library`: everything through the extension's
//! SQL contract), the demonstration (`demo`) and the benchmark (`bench`). The
//! network protocol (a state machine without I/O, QUIC transport) is the next
//! issue; it will use `library` for all storage.

pub mod bench;
pub mod daemon;
pub mod demo;
pub mod home;
pub mod library;
pub mod net;
pub mod proto;
