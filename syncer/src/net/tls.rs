//! Mutual TLS between paired devices: each side presents its self-signed
//! certificate and accepts only certificates pinned in [`Pins`].
//!
//! ```no_run
//! # use sdsync_syncer::net::{identity::Identity, tls::{Pins, server_config}};
//! let me = Identity::generate("me").unwrap();
//! let pins = Pins::default();
//! pins.pin("peer-device", Identity::generate("peer-device").unwrap().cert);
//! let config = server_config(&me, &pins).unwrap();
//! ```
//!
//! There is no certificate authority: pairing records the other device's exact
//! certificate, and the verifiers here compare against those records, then check
//! the TLS 1.3 handshake signature with the pinned key, so only the holder of the
//! paired key gets in. Unpaired devices fail the handshake.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::net::NetError;
use crate::net::identity::Identity;

/// The ALPN protocol id; its suffix is the protocol version.
pub const ALPN: &[u8] = b"sdsync/1";

/// The ALPN of pairing (see `net::pair`), a different protocol on its own endpoint.
pub const PAIR_ALPN: &[u8] = b"sdsync-pair/1";

/// Which certificates a verifier accepts.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Only these pinned devices (sync).
    Pinned(Pins),
    /// Any certificate whose key signed the handshake (pairing: the PAKE then
    /// binds both certificates, see `net::pair`).
    AnyKeyHolder,
}

/// The certificates of the devices paired into the library, by device id.
/// Shared between the verifiers and whoever pairs, so a new pairing takes effect
/// on the next handshake.
#[derive(Clone, Default, Debug)]
pub struct Pins(Arc<RwLock<BTreeMap<Vec<u8>, String>>>);

impl Pins {
    /// Trusts `cert` as device `device` (replacing an older certificate of it).
    pub fn pin(&self, device: &str, cert: CertificateDer<'static>) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, d| d != device);
        map.insert(cert.to_vec(), device.to_string());
    }

    /// The paired devices.
    pub fn devices(&self) -> Vec<String> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }

    /// Whether `device` is paired.
    pub fn is_pinned(&self, device: &str) -> bool {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.values().any(|d| d == device)
    }

    /// The paired device presenting `cert`, if any.
    pub fn device(&self, cert: &CertificateDer<'_>) -> Option<String> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(cert.as_ref()).cloned()
    }
}

/// The one crypto provider (ring): compiled-in providers must not be ambiguous.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS side of a device accepting connections: client certificates required
/// and pinned.
pub fn server_config(me: &Identity, pins: &Pins) -> Result<rustls::ServerConfig, NetError> {
    server_config_for(me, Trust::Pinned(pins.clone()), ALPN)
}

/// A server TLS configuration trusting `trust`, speaking `alpn`.
pub fn server_config_for(
    me: &Identity,
    trust: Trust,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, NetError> {
    let provider = provider();
    let verifier = Arc::new(PinnedVerifier::new(trust, &provider));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![me.cert.clone()], me.key())?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// The TLS side of a device dialing out: it presents its certificate and accepts
/// only a pinned server certificate.
pub fn client_config(me: &Identity, pins: &Pins) -> Result<rustls::ClientConfig, NetError> {
    client_config_for(me, Trust::Pinned(pins.clone()), ALPN)
}

/// A client TLS configuration trusting `trust`, speaking `alpn`.
pub fn client_config_for(
    me: &Identity,
    trust: Trust,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, NetError> {
    let provider = provider();
    let verifier = Arc::new(PinnedVerifier::new(trust, &provider));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![me.cert.clone()], me.key())?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// Accepts what `trust` says, on either side of the handshake, and always
/// checks that the peer holds the key of the certificate it presents.
#[derive(Debug)]
struct PinnedVerifier {
    trust: Trust,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedVerifier {
    fn new(trust: Trust, provider: &CryptoProvider) -> Self {
        Self {
            trust,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        match &self.trust {
            Trust::AnyKeyHolder => Ok(()),
            Trust::Pinned(pins) if pins.device(cert).is_some() => Ok(()),
            Trust::Pinned(_) => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PinnedVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls12_signature(self, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
