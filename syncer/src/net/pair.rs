//! Pairing two devices with a short code, safe against offline guessing.
//!
//! ```no_run
//! # async fn f(me: sdsync_syncer::net::identity::Identity, other: sdsync_syncer::net::identity::Identity) {
//! use sdsync_syncer::net::pair::{Offer, code, join, offer};
//! let code = code();
//! let offering = Offer { device: "laptop".into(), library: "lib".into(), advertise: None };
//! let addr = "127.0.0.1:7374".parse().unwrap();
//! let (a, b) = tokio::join!(
//!     // The last argument may refuse the joiner (say, an id already paired).
//!     offer(&me, &offering, addr, &code, &|_device, _cert| Ok(())),
//!     join(&other, "phone", None, addr, &code),
//! );
//! # }
//! ```
//!
//! The offering device shows a code (`1234-5678-9012`, about 40 bits) and waits
//! for one attempt on a pairing endpoint (its own ALPN). The joining device
//! connects; TLS proves each side holds the key of the certificate it shows, but
//! trusts neither yet. Over that connection both run SPAKE2 with the code as the
//! password: each derives the same key only if both used the same code, and an
//! eavesdropper or an impostor learns nothing to guess the code offline with (one
//! online guess per code, after which the offer ends). Each side then sends an
//! HMAC, under that key, of both certificates as *it* saw them in the TLS
//! handshake plus both device ids and the library id; a device in the middle
//! (two TLS sessions with different certificates) makes the MACs disagree. Only
//! after both MACs check out does each side pin the other's certificate; the
//! offering side may still refuse the joiner then, and says why.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use spake2::{Ed25519Group, Identity as SpakeId, Password, Spake2};

use crate::net::identity::Identity;
use crate::net::tls::{PAIR_ALPN, Trust, client_config_for, server_config_for};

/// How long an offer waits for its one attempt.
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(300);

/// The largest pairing message accepted.
const MAX_MESSAGE: usize = 64 * 1024;

/// Why pairing failed. Nothing is pinned in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// The endpoint could not be set up.
    #[error("pairing endpoint: {0}")]
    Setup(String),
    /// `pair join` without an address found no single offer on the network.
    #[error("finding the pairing offer: {0}")]
    NoOffer(String),
    /// Nobody joined in time.
    #[error("nobody joined within {0:?}")]
    Timeout(Duration),
    /// The connection failed or the other side went away (on the offering side,
    /// typically: the joiner's code was wrong, so it stopped).
    #[error("pairing connection with {addr}: {reason}")]
    Connection {
        /// The other side.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A message was not what the pairing protocol sends.
    #[error("malformed pairing message from {addr}: {reason}")]
    Malformed {
        /// The other side.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The offering device refused the joiner after the keys agreed (say, an
    /// id already paired with another certificate).
    #[error("pairing refused by the offering device: {0}")]
    Refused(String),
    /// The keys disagree: a different code, or a device in the middle.
    #[error("pairing with {addr} failed: the codes do not match (or someone is in between)")]
    Mismatch {
        /// The other side.
        addr: SocketAddr,
    },
}

/// What the offering device tells the joiner (authenticated by the MACs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The offering device's id.
    pub device: String,
    /// The library the joiner is invited into.
    pub library: String,
    /// Where the offering device's syncer listens, if it says.
    pub advertise: Option<SocketAddr>,
}

/// The other device, once pairing succeeded: pin `cert` as `device`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paired {
    /// Its device id.
    pub device: String,
    /// Its certificate.
    pub cert: CertificateDer<'static>,
    /// The library (the offer's).
    pub library: String,
    /// Where its syncer listens, if it said.
    pub addr: Option<SocketAddr>,
}

#[derive(Serialize, Deserialize)]
struct JoinHello {
    device: String,
    advertise: Option<SocketAddr>,
    spake: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct OfferHello {
    device: String,
    library: String,
    advertise: Option<SocketAddr>,
    spake: Vec<u8>,
    mac: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct JoinConfirm {
    mac: Vec<u8>,
}

/// A fresh code: three groups of four digits (about 40 bits).
pub fn code() -> String {
    let mut bytes = [0u8; 8];
    // Invariant: the OS random source exists on every platform this runs on;
    // without it no key or certificate could be made either.
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("system random number generator");
    let n = u64::from_le_bytes(bytes) % 1_000_000_000_000;
    format!(
        "{:04}-{:04}-{:04}",
        n / 100_000_000,
        n / 10_000 % 10_000,
        n % 10_000
    )
}

/// Offers pairing: waits on `listen` for one attempt with `code`.
pub async fn offer(
    me: &Identity,
    offer: &Offer,
    listen: SocketAddr,
    code: &str,
    accept: &dyn Fn(&str, &CertificateDer<'static>) -> Result<(), String>,
) -> Result<Paired, PairError> {
    let server = server_config_for(me, Trust::AnyKeyHolder, PAIR_ALPN)
        .map_err(|e| PairError::Setup(e.to_string()))?;
    let server = QuicServerConfig::try_from(server).map_err(|e| PairError::Setup(e.to_string()))?;
    let endpoint =
        quinn::Endpoint::server(quinn::ServerConfig::with_crypto(Arc::new(server)), listen)
            .map_err(|e| PairError::Setup(format!("{listen}: {e}")))?;
    let incoming = tokio::time::timeout(OFFER_TIMEOUT, endpoint.accept())
        .await
        .map_err(|_| PairError::Timeout(OFFER_TIMEOUT))?
        .ok_or_else(|| PairError::Setup("endpoint closed".into()))?;
    let addr = incoming.remote_address();
    let conn_err = |e: &dyn std::fmt::Display| PairError::Connection {
        addr,
        reason: e.to_string(),
    };
    let conn = incoming.await.map_err(|e| conn_err(&e))?;
    let theirs = peer_cert(&conn).ok_or_else(|| conn_err(&"no client certificate"))?;
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| conn_err(&e))?;
    let hello: JoinHello = read(&mut recv, addr).await?;
    let (spake, msg) = Spake2::<Ed25519Group>::start_a(&password(code), &ids().0, &ids().1);
    let key = spake
        .finish(&hello.spake)
        .map_err(|_| PairError::Mismatch { addr })?;
    let transcript = Transcript {
        offer_cert: &me.cert,
        join_cert: &theirs,
        offer_device: &offer.device,
        join_device: &hello.device,
        library: &offer.library,
    };
    let reply = OfferHello {
        device: offer.device.clone(),
        library: offer.library.clone(),
        advertise: offer.advertise,
        spake: msg,
        mac: transcript.mac(&key, b"offer"),
    };
    write(&mut send, &reply, addr).await?;
    // A joiner whose key differs finds our MAC wrong and leaves without answering.
    let confirm: JoinConfirm = read(&mut recv, addr)
        .await
        .map_err(|_| PairError::Mismatch { addr })?;
    transcript.verify(&key, b"join", &confirm.mac, addr)?;
    // Only a joiner that proved the code learns why it is refused.
    let verdict: Option<String> = accept(&hello.device, &theirs).err();
    write(&mut send, &verdict, addr).await?;
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    if let Some(reason) = verdict {
        return Err(PairError::Refused(reason));
    }
    Ok(Paired {
        device: hello.device,
        cert: theirs,
        library: offer.library.clone(),
        addr: hello.advertise,
    })
}

/// Joins the device offering pairing at `addr` with the code it shows.
pub async fn join(
    me: &Identity,
    device: &str,
    advertise: Option<SocketAddr>,
    addr: SocketAddr,
    code: &str,
) -> Result<Paired, PairError> {
    let client = client_config_for(me, Trust::AnyKeyHolder, PAIR_ALPN)
        .map_err(|e| PairError::Setup(e.to_string()))?;
    let client = QuicClientConfig::try_from(client).map_err(|e| PairError::Setup(e.to_string()))?;
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))
        .map_err(|e| PairError::Setup(e.to_string()))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(client)));
    let conn_err = |e: &dyn std::fmt::Display| PairError::Connection {
        addr,
        reason: e.to_string(),
    };
    let conn = endpoint
        .connect(addr, "sdsync-pair")
        .map_err(|e| conn_err(&e))?
        .await
        .map_err(|e| conn_err(&e))?;
    let theirs = peer_cert(&conn).ok_or_else(|| conn_err(&"no server certificate"))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| conn_err(&e))?;
    let (spake, msg) = Spake2::<Ed25519Group>::start_b(&password(code), &ids().0, &ids().1);
    let hello = JoinHello {
        device: device.to_string(),
        advertise,
        spake: msg,
    };
    write(&mut send, &hello, addr).await?;
    let reply: OfferHello = read(&mut recv, addr).await?;
    let key = spake
        .finish(&reply.spake)
        .map_err(|_| PairError::Mismatch { addr })?;
    let transcript = Transcript {
        offer_cert: &theirs,
        join_cert: &me.cert,
        offer_device: &reply.device,
        join_device: device,
        library: &reply.library,
    };
    if let Err(e) = transcript.verify(&key, b"offer", &reply.mac, addr) {
        conn.close(2u32.into(), b"codes do not match");
        // Let the close reach the offering side, or it waits for the idle
        // timeout (30 s) before it says the codes did not match.
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        return Err(e);
    }
    write(
        &mut send,
        &JoinConfirm {
            mac: transcript.mac(&key, b"join"),
        },
        addr,
    )
    .await?;
    let verdict: Option<String> = read(&mut recv, addr).await?;
    conn.close(0u32.into(), b"paired");
    if let Some(reason) = verdict {
        return Err(PairError::Refused(reason));
    }
    Ok(Paired {
        device: reply.device,
        cert: theirs,
        library: reply.library,
        addr: reply.advertise,
    })
}

fn password(code: &str) -> Password {
    let digits: String = code.chars().filter(char::is_ascii_digit).collect();
    Password::new(digits.as_bytes())
}

fn ids() -> (SpakeId, SpakeId) {
    (SpakeId::new(b"sdsync offer"), SpakeId::new(b"sdsync join"))
}

fn peer_cert(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    conn.peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?
        .first()
        .cloned()
}

/// What both MACs cover, as one side saw it.
struct Transcript<'a> {
    offer_cert: &'a CertificateDer<'static>,
    join_cert: &'a CertificateDer<'static>,
    offer_device: &'a str,
    join_device: &'a str,
    library: &'a str,
}

impl Transcript<'_> {
    fn hmac(&self, key: &[u8], role: &[u8]) -> Hmac<Sha256> {
        // Invariant: HMAC takes keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
        for field in [
            role,
            self.offer_cert.as_ref(),
            self.join_cert.as_ref(),
            self.offer_device.as_bytes(),
            self.join_device.as_bytes(),
            self.library.as_bytes(),
        ] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac
    }

    fn mac(&self, key: &[u8], role: &[u8]) -> Vec<u8> {
        self.hmac(key, role).finalize().into_bytes().to_vec()
    }

    /// Constant-time check of the other side's MAC.
    fn verify(
        &self,
        key: &[u8],
        role: &[u8],
        tag: &[u8],
        addr: SocketAddr,
    ) -> Result<(), PairError> {
        self.hmac(key, role)
            .verify_slice(tag)
            .map_err(|_| PairError::Mismatch { addr })
    }
}

async fn write<T: Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
    addr: SocketAddr,
) -> Result<(), PairError> {
    // Invariant: postcard serializes these plain structs without error.
    let bytes = postcard::to_stdvec(msg).expect("postcard encodes plain data");
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes();
    let err = |e: quinn::WriteError| PairError::Connection {
        addr,
        reason: e.to_string(),
    };
    send.write_all(&len).await.map_err(err)?;
    send.write_all(&bytes).await.map_err(err)
}

async fn read<T: for<'de> Deserialize<'de>>(
    recv: &mut quinn::RecvStream,
    addr: SocketAddr,
) -> Result<T, PairError> {
    let err = |e: quinn::ReadExactError| PairError::Connection {
        addr,
        reason: e.to_string(),
    };
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(err)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(PairError::Malformed {
            addr,
            reason: format!("{len}-byte message (limit {MAX_MESSAGE})"),
        });
    }
    let mut bytes = vec![0u8; len];
    recv.read_exact(&mut bytes).await.map_err(err)?;
    postcard::from_bytes(&bytes).map_err(|e| PairError::Malformed {
        addr,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_three_groups_of_four_digits() {
        let c = code();
        assert_eq!(c.len(), 14, "{c}");
        assert!(
            c.split('-')
                .all(|g| g.len() == 4 && g.chars().all(|d| d.is_ascii_digit()))
        );
        assert_ne!(code(), code());
    }
}
