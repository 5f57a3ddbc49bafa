//! QUIC links to paired devices: one endpoint, a connection per peer, one
//! unidirectional stream per frame, frames in order.
//!
//! ```no_run
//! # async fn f(link: sdsync_syncer::net::link::Link, conn: sdsync_syncer::net::link::Conn) {
//! link.dial("127.0.0.1:4433".parse().unwrap()); // an Inbound::Up follows once paired
//! conn.send(b"frame".to_vec()); // queued; frames arrive in the order sent
//! # }
//! ```
//!
//! A frame is a whole stream (its end delimits it), read up to
//! [`MAX_FRAME`](crate::proto::message::MAX_FRAME) bytes: no length prefix to
//! trust. Each connection has one writer task, which opens the streams one
//! after another, and one reader, which takes them in stream order: frames
//! arrive in the order they were sent. The protocol tolerates any order, but
//! pages arriving second-first would be fetched twice. Each connection's peer
//! is the paired device whose pinned certificate it presented; anything else
//! fails the handshake.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::net::NetError;
use crate::net::identity::Identity;
use crate::net::tls::{Pins, client_config, server_config};
use crate::proto::message::MAX_FRAME;

/// What the link reports.
#[derive(Debug)]
pub enum Inbound {
    /// A connection to a paired device is up (dialed or accepted).
    Up {
        /// The device.
        peer: String,
        /// The connection, to send on.
        conn: Conn,
        /// The certificate it presented (DER): a member admitted by its
        /// fingerprint gets it pinned, a rotated certificate replaces the old.
        cert: Vec<u8>,
        /// Where it connected from: its endpoint's address, the one it listens
        /// on (on a LAN; behind a NAT, the translated one: one more address to try).
        addr: SocketAddr,
    },
    /// A frame from a paired device.
    Message {
        /// The device (authenticated by its certificate).
        peer: String,
        /// The frame.
        bytes: Vec<u8>,
    },
    /// A connection ended.
    Down {
        /// The device.
        peer: String,
        /// Which connection (a newer one to the same peer may be up).
        id: usize,
        /// Why.
        reason: String,
    },
    /// A frame that could not be read (larger than the limit, or cut off).
    Malformed {
        /// The device.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A dial or handshake failed (unpaired device, nobody listening, …).
    Failed {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// A device's QUIC endpoint: it accepts paired devices and dials them.
pub struct Link {
    endpoint: quinn::Endpoint,
    /// How this device dials (its certificate changes on rotation).
    client: RwLock<quinn::ClientConfig>,
    pins: Pins,
    inbound: mpsc::UnboundedSender<Inbound>,
    linked: Linked,
}

/// Open connections per device, counted as the handshakes complete and the
/// connections end (ahead of the daemon, which hears of them in its queue
/// behind the frames it has yet to apply), and the dials still under way.
#[derive(Clone, Default)]
struct Linked(Arc<Mutex<Open>>);

#[derive(Default)]
struct Open {
    devices: BTreeMap<String, usize>,
    /// Dials under way (or ended since the address was last dialed) per address.
    dials: BTreeMap<SocketAddr, Vec<AbortHandle>>,
}

impl Linked {
    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, device: &str, delta: isize) {
        let mut open = self.open();
        let n = open.devices.entry(device.to_string()).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            open.devices.remove(device);
        }
    }

    fn contains(&self, device: &str) -> bool {
        self.open().devices.contains_key(device)
    }

    /// Counts a connection this device dialed, unless `device` is linked
    /// already (two dials completed at once): then it is not wanted.
    fn add_dialed(&self, device: &str) -> bool {
        let mut open = self.open();
        if open.devices.contains_key(device) {
            return false;
        }
        open.devices.insert(device.to_string(), 1);
        true
    }

    /// A connection with `addr` is up: dials to it still under way would
    /// make second connections (a dial sent while the peer was not listening
    /// yet completes on QUIC's retransmission, seconds later), each
    /// restarting the streams when it comes up. They are called off (the dial
    /// whose connection this is, if any, ends without another await, so
    /// aborting it too changes nothing).
    fn call_off_dials(&self, addr: SocketAddr) {
        for dial in self.open().dials.remove(&addr).unwrap_or_default() {
            dial.abort();
        }
    }

    fn dial_started(&self, addr: SocketAddr, dial: AbortHandle) {
        let mut open = self.open();
        let under_way = open.dials.entry(addr).or_default();
        under_way.retain(|d| !d.is_finished());
        under_way.push(dial);
    }
}

impl Link {
    /// Opens the endpoint on `addr` (port 0 picks one) and starts accepting.
    /// Must run inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        me: &Identity,
        pins: &Pins,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Inbound>), NetError> {
        let endpoint = quinn::Endpoint::server(server(me, pins)?, addr)
            .map_err(|source| NetError::Bind { addr, source })?;
        let client = client(me, pins)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Self {
            endpoint,
            client: RwLock::new(client),
            pins: pins.clone(),
            inbound: tx,
            linked: Linked::default(),
        };
        link.accept_loop();
        Ok((link, rx))
    }

    /// Presents `me` from the next handshake on (a rotated certificate);
    /// open connections keep the one they started with.
    pub fn set_identity(&self, me: &Identity) -> Result<(), NetError> {
        self.endpoint
            .set_server_config(Some(server(me, &self.pins)?));
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = client(me, &self.pins)?;
        Ok(())
    }

    /// The address peers dial.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.endpoint.local_addr().map_err(|source| NetError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })
    }

    /// Whether a connection to `device` is open (its `Up` may still be on
    /// its way to the daemon).
    pub fn is_linked(&self, device: &str) -> bool {
        self.linked.contains(device)
    }

    /// Dials `addr` in the background; `Up` or `Failed` follows.
    pub fn dial(&self, addr: SocketAddr) {
        let (endpoint, pins, tx, linked) = (
            self.endpoint.clone(),
            self.pins.clone(),
            self.inbound.clone(),
            self.linked.clone(),
        );
        let client = self
            .client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let task = tokio::spawn(async move {
            let result = match endpoint.connect_with(client, addr, "sdsync") {
                Ok(connecting) => connecting.await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(conn) => serve(conn, &pins, tx, linked, Side::Dialed),
                Err(reason) => {
                    let _ = tx.send(Inbound::Failed { addr, reason });
                }
            }
        });
        self.linked.dial_started(addr, task.abort_handle());
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutting down");
    }

    /// Waits (at most `limit`) until the peers were told the connections
    /// closed, so they see this device go at once rather than after the idle
    /// timeout (a restarted copy of this folder is not taken for a second one).
    pub async fn closed(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.endpoint.wait_idle()).await;
    }

    fn accept_loop(&self) {
        let (endpoint, pins, tx, linked) = (
            self.endpoint.clone(),
            self.pins.clone(),
            self.inbound.clone(),
            self.linked.clone(),
        );
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let (pins, tx, linked) = (pins.clone(), tx.clone(), linked.clone());
                tokio::spawn(async move {
                    let addr = incoming.remote_address();
                    match incoming.await {
                        Ok(conn) => serve(conn, &pins, tx, linked, Side::Accepted),
                        Err(e) => {
                            let _ = tx.send(Inbound::Failed {
                                addr,
                                reason: e.to_string(),
                            });
                        }
                    }
                });
            }
        });
    }
}

/// A connection to a paired device, with its writer: frames sent through it
/// leave, and arrive, in order.
#[derive(Clone, Debug)]
pub struct Conn {
    conn: quinn::Connection,
    outbox: mpsc::UnboundedSender<Vec<u8>>,
}

impl Conn {
    /// Starts the connection's writer task (inside a tokio runtime).
    fn new(conn: quinn::Connection, peer: String) -> Self {
        let (outbox, mut frames) = mpsc::unbounded_channel::<Vec<u8>>();
        let writer = conn.clone();
        tokio::spawn(async move {
            while let Some(bytes) = frames.recv().await {
                if let Err(e) = send(&writer, &peer, bytes).await {
                    tracing::debug!(error = %e, "send");
                    // The connection is gone (its Down event follows); a frame
                    // the peer refused (stopped its stream) loses that frame only.
                    if writer.close_reason().is_some() {
                        break;
                    }
                }
            }
        });
        Self { conn, outbox }
    }

    /// Queues a frame. The protocol bounds what it queues (pages wait for
    /// acknowledgements), so the queue is not bounded here; a frame queued on
    /// a connection that has ended is dropped, as the protocol allows.
    pub fn send(&self, bytes: Vec<u8>) {
        let _ = self.outbox.send(bytes);
    }

    /// Which connection this is (a newer one to the same peer may be up).
    pub fn id(&self) -> usize {
        self.conn.stable_id()
    }

    /// Ends the connection (a removed device, a rotated certificate); its
    /// `Down` follows.
    pub fn close(&self, why: &str) {
        self.conn.close(2u32.into(), why.as_bytes());
    }
}

/// Sends one frame on its own stream.
pub async fn send(conn: &quinn::Connection, peer: &str, bytes: Vec<u8>) -> Result<(), NetError> {
    let err = |e: &dyn std::fmt::Display| NetError::Send {
        peer: peer.to_string(),
        reason: e.to_string(),
    };
    let mut stream = conn.open_uni().await.map_err(|e| err(&e))?;
    stream.write_all(&bytes).await.map_err(|e| err(&e))?;
    stream.finish().map_err(|e| err(&e))?;
    Ok(())
}

/// How a device accepts: its certificate, pinned peers only.
fn server(me: &Identity, pins: &Pins) -> Result<quinn::ServerConfig, NetError> {
    let crypto = QuicServerConfig::try_from(server_config(me, pins)?)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport());
    Ok(server)
}

/// How a device dials: its certificate, pinned peers only.
fn client(me: &Identity, pins: &Pins) -> Result<quinn::ClientConfig, NetError> {
    let crypto = QuicClientConfig::try_from(client_config(me, pins)?)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport());
    Ok(client)
}

/// Timeouts: a silent peer is noticed within the idle timeout; keep-alives keep a
/// quiet but healthy link open.
fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(2)));
    // Invariant: 10 s is far below QUIC's maximum idle timeout (2^62 ms).
    t.max_idle_timeout(Some(
        Duration::from_secs(10)
            .try_into()
            .expect("10 s fits a VarInt"),
    ));
    Arc::new(t)
}

/// The paired device behind an established connection and the certificate
/// it presented (the handshake already refused unpinned certificates; this
/// maps the certificate to its device).
fn peer_of(conn: &quinn::Connection, pins: &Pins) -> Option<(String, Vec<u8>)> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    let cert = certs.first()?;
    Some((pins.device(cert)?, cert.to_vec()))
}

/// How long an accepted connection may stay silent before its first frame
/// (a dialer says Hello as soon as its link is up; its daemon may be busy
/// applying a page first).
const FIRST_FRAME: Duration = Duration::from_secs(60);

/// Which end of a connection this device is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Dialed,
    Accepted,
}

/// Reports the connection and reads its frames until it ends.
///
/// An accepted connection is reported once the dialer has sent its first
/// frame (its Hello): a dialer that finds itself linked already closes the
/// connection as soon as its handshake completes, and this side's handshake
/// completes too, so reporting at once would restart the streams for a link
/// about to close (seen: three `link up` on one side, one on the other).
fn serve(
    conn: quinn::Connection,
    pins: &Pins,
    tx: mpsc::UnboundedSender<Inbound>,
    linked: Linked,
    side: Side,
) {
    let Some((peer, cert)) = peer_of(&conn, pins) else {
        conn.close(1u32.into(), b"not paired");
        let _ = tx.send(Inbound::Failed {
            addr: conn.remote_address(),
            reason: "the peer's certificate is not pinned".into(),
        });
        return;
    };
    match side {
        Side::Dialed if !linked.add_dialed(&peer) => {
            // Two of this device's dials completed at once: one link is enough.
            conn.close(0u32.into(), b"already linked");
            return;
        }
        Side::Dialed => {}
        Side::Accepted => linked.add(&peer, 1),
    }
    linked.call_off_dials(conn.remote_address());
    let up = Inbound::Up {
        peer: peer.clone(),
        conn: Conn::new(conn.clone(), peer.clone()),
        cert,
        addr: conn.remote_address(),
    };
    tokio::spawn(async move {
        let first = match side {
            Side::Dialed => None,
            Side::Accepted => match tokio::time::timeout(FIRST_FRAME, conn.accept_uni()).await {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "closed before its first frame");
                    linked.add(&peer, -1);
                    return;
                }
                Err(_) => {
                    // Keep-alives would hold it open for good, and this
                    // device would not dial a peer it counts as linked.
                    conn.close(3u32.into(), b"no Hello");
                    tracing::warn!(%peer, "a connection that sent nothing within {FIRST_FRAME:?} was closed");
                    linked.add(&peer, -1);
                    return;
                }
            },
        };
        let _ = tx.send(up);
        let reason = read_frames(&conn, &peer, first, &tx).await;
        linked.add(&peer, -1);
        let _ = tx.send(Inbound::Down {
            peer,
            id: conn.stable_id(),
            reason,
        });
    });
}

/// Reads the connection's frames (from `first`, if one was taken already)
/// until it ends; returns why it ended.
async fn read_frames(
    conn: &quinn::Connection,
    peer: &str,
    mut next: Option<quinn::RecvStream>,
    tx: &mpsc::UnboundedSender<Inbound>,
) -> String {
    // Streams are accepted in the order they were opened; reading each to
    // its end before the next keeps the frames in that order.
    loop {
        let mut stream = match next.take() {
            Some(stream) => stream,
            None => match conn.accept_uni().await {
                Ok(stream) => stream,
                Err(e) => return explained(&e.to_string()),
            },
        };
        let peer = peer.to_string();
        let event = match stream.read_to_end(MAX_FRAME).await {
            Ok(bytes) => Inbound::Message { peer, bytes },
            Err(e) => Inbound::Malformed {
                peer,
                reason: e.to_string(),
            },
        };
        let _ = tx.send(event);
    }
}

/// Why a link ended, as the log says it. A dialer's handshake completes
/// before the peer has checked its certificate, so a peer that has not
/// pinned this device shows as `link up`, then "invalid peer certificate",
/// which reads like an attack. It is almost always a pairing the peer has
/// not taken in yet (for a second or two after `pair`), or an introduction
/// it has not heard of; a device removed from the library is told so in
/// `status`.
fn explained(reason: &str) -> String {
    if reason.contains("invalid peer certificate") {
        format!(
            "the peer does not know this device's certificate yet (a pairing or an \
             introduction it has not taken in; retrying) [{reason}]"
        )
    } else {
        reason.to_string()
    }
}
