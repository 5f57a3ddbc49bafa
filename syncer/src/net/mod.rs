//! The network side: device identities, pinned mutual TLS and QUIC links.
//!
//! ```no_run
//! # async fn f() -> Result<(), sdsync_syncer::net::NetError> {
//! use sdsync_syncer::net::{identity::Identity, link::Link, tls::Pins};
//! let me = Identity::generate("me")?;
//! let pins = Pins::default();
//! let (link, mut inbound) = Link::bind("127.0.0.1:0".parse().unwrap(), &me, &pins)?;
//! link.dial("127.0.0.1:4433".parse().unwrap());
//! while let Some(event) = inbound.recv().await { /* Up, Message, Down */ }
//! # Ok(()) }
//! ```
//!
//! Nothing here knows the protocol: a [`link::Link`] delivers authenticated
//! frames from paired devices, and sends frames to them. The daemon
//! (`crate::daemon`) feeds them to the protocol state machine.

pub mod discovery;
pub mod identity;
pub mod link;
pub mod pair;
pub mod tls;

use std::path::PathBuf;

/// What can go wrong on the network side.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A device certificate could not be made.
    #[error("generating the device certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The identity files could not be read or written.
    #[error("device identity {path}: {reason}")]
    Identity {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// TLS refused the configuration (a key it cannot use, say).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The QUIC layer refused the TLS configuration.
    #[error("QUIC TLS configuration: {0}")]
    QuicTls(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The UDP socket could not be opened.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A connection could not be set up or failed.
    #[error("connection to {addr}: {reason}")]
    Connect {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// Announcing or browsing on the local network failed.
    #[error("discovery on the local network (mDNS): {0}")]
    Discovery(String),
    /// A frame could not be sent to a peer.
    #[error("sending to {peer}: {reason}")]
    Send {
        /// The device.
        peer: String,
        /// Why.
        reason: String,
    },
}
