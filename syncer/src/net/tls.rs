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
//! certificate, members are listed by their certificate's SHA-256, and the
//! verifiers here compare against those records, then check
//! the TLS 1.3 handshake signature with the pinned key, so only the holder of the
//! paired key gets in. Unpaired devices fail the handshake.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::net::NetError;
use crate::net::identity::{Identity, fingerprint};

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

/// The devices this one accepts: certificates pinned by pairing, and the
/// members the library's `devices` table lists by certificate fingerprint
/// (introduction, see `crate::members`); never a removed device. Shared
/// between the verifiers and whoever learns of devices, so a change takes
/// effect on the next handshake.
#[derive(Clone, Default, Debug)]
pub struct Pins(Arc<RwLock<Trusted>>);

#[derive(Default, Debug)]
struct Trusted {
    /// Pinned certificates (DER) and their devices.
    certs: BTreeMap<Vec<u8>, String>,
    /// Members' certificate fingerprints and their devices. A device may
    /// have two while it rotates (the old one until it is seen with the new).
    members: BTreeMap<String, String>,
    /// Devices removed from the library: refused whatever they present.
    revoked: BTreeSet<String>,
    /// Fingerprints of removed devices' certificates: refused whatever device
    /// they are listed for (a removed device cannot come back under another id
    /// with its key).
    revoked_certs: BTreeSet<String>,
}

impl Pins {
    /// Trusts `cert` as device `device` (replacing an older certificate of
    /// it), unless the device or the certificate was removed.
    pub fn pin(&self, device: &str, cert: CertificateDer<'static>) {
        let mut t = self.write();
        if t.revoked.contains(device) || t.revoked_certs.contains(&fingerprint(&cert)) {
            return;
        }
        t.certs.retain(|_, d| d != device);
        t.certs.insert(cert.to_vec(), device.to_string());
    }

    /// Trusts whoever presents a certificate with this SHA-256 as `device`
    /// (a member listed in `devices`), besides what it trusted for it: a
    /// peer that never saw a rotating device's old certificate must still
    /// let it in to learn the new one ([`Pins::retire`] drops the old one).
    /// Whether that changed anything.
    pub fn admit(&self, device: &str, fingerprint: &str) -> bool {
        let mut t = self.write();
        if t.revoked.contains(device)
            || t.revoked_certs.contains(fingerprint)
            || t.members.get(fingerprint).is_some_and(|d| d == device)
        {
            return false;
        }
        t.members
            .insert(fingerprint.to_string(), device.to_string());
        true
    }

    /// Keeps only `fingerprint` of `device`'s listed fingerprints: it was
    /// seen presenting the certificate its row lists now.
    pub fn retire(&self, device: &str, fingerprint: &str) {
        self.write()
            .members
            .retain(|f, d| d != device || f == fingerprint);
    }

    /// Refuses `device` from now on, whatever it presents, and its
    /// certificates whatever device they are listed for. The fingerprints it
    /// was accepted by, when it was accepted until now (to record them).
    pub fn revoke(&self, device: &str) -> Option<Vec<String>> {
        let mut t = self.write();
        let mut gone: Vec<String> = t
            .certs
            .iter()
            .filter(|(_, d)| *d == device)
            .map(|(c, _)| fingerprint(c))
            .collect();
        gone.extend(
            t.members
                .iter()
                .filter(|(_, d)| *d == device)
                .map(|(f, _)| f.clone()),
        );
        t.certs.retain(|_, d| d != device);
        t.members.retain(|_, d| d != device);
        t.revoked_certs.extend(gone.iter().cloned());
        t.revoked.insert(device.to_string()).then_some(gone)
    }

    /// Refuses the certificate with this fingerprint, whoever presents it.
    pub fn revoke_cert(&self, fingerprint: &str) {
        let mut t = self.write();
        t.certs
            .retain(|c, _| crate::net::identity::fingerprint(c) != fingerprint);
        t.members.remove(fingerprint);
        t.revoked_certs.insert(fingerprint.to_string());
    }

    /// The devices removed from the library.
    pub fn revoked_devices(&self) -> Vec<String> {
        self.read().revoked.iter().cloned().collect()
    }

    /// Whether `device` was removed from the library.
    pub fn is_revoked(&self, device: &str) -> bool {
        self.read().revoked.contains(device)
    }

    /// The accepted devices (paired or members).
    pub fn devices(&self) -> Vec<String> {
        let t = self.read();
        let all: BTreeSet<&String> = t.certs.values().chain(t.members.values()).collect();
        all.into_iter().cloned().collect()
    }

    /// Whether `device` is accepted (paired or a member).
    pub fn is_pinned(&self, device: &str) -> bool {
        let t = self.read();
        t.certs
            .values()
            .chain(t.members.values())
            .any(|d| d == device)
    }

    /// The certificate pinned for `device`, if one is.
    pub fn cert(&self, device: &str) -> Option<Vec<u8>> {
        let t = self.read();
        t.certs
            .iter()
            .find(|(_, d)| *d == device)
            .map(|(c, _)| c.clone())
    }

    /// The accepted device presenting `cert`, if any.
    pub fn device(&self, cert: &CertificateDer<'_>) -> Option<String> {
        let t = self.read();
        let print = fingerprint(cert);
        if t.revoked_certs.contains(&print) {
            return None;
        }
        let device = match t.certs.get(cert.as_ref()) {
            Some(d) => d,
            None => t.members.get(&print)?,
        };
        (!t.revoked.contains(device)).then(|| device.clone())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Trusted> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Trusted> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_accepted_by_fingerprint_and_removed_devices_by_nothing() {
        let pins = Pins::default();
        let (a, b) = (
            Identity::generate("a").unwrap(),
            Identity::generate("b").unwrap(),
        );
        pins.pin("a", a.cert.clone());
        assert!(pins.admit("b", &b.fingerprint()));
        assert!(!pins.admit("b", &b.fingerprint()), "nothing new");
        assert_eq!(pins.device(&a.cert).as_deref(), Some("a"));
        assert_eq!(pins.device(&b.cert).as_deref(), Some("b"));
        assert_eq!(pins.devices(), vec!["a".to_string(), "b".to_string()]);
        // A rotating device is accepted with either certificate until it
        // is seen with the new one.
        let b2 = Identity::generate("b").unwrap();
        assert!(pins.admit("b", &b2.fingerprint()));
        assert_eq!(pins.device(&b.cert).as_deref(), Some("b"));
        pins.retire("b", &b2.fingerprint());
        assert_eq!(pins.device(&b.cert), None);
        assert_eq!(pins.device(&b2.cert).as_deref(), Some("b"));
        // Removed: refused whatever it presents, never pinned again, and its
        // certificate refused under any other id.
        assert_eq!(pins.revoke("a"), Some(vec![a.fingerprint()]));
        assert_eq!(pins.revoke("a"), None);
        pins.pin("a", a.cert.clone());
        assert!(!pins.admit("a", &a.fingerprint()));
        assert!(!pins.admit("a-again", &a.fingerprint()));
        pins.pin("a-again", a.cert.clone());
        assert_eq!(pins.device(&a.cert), None);
        assert!(pins.is_revoked("a") && !pins.is_pinned("a") && !pins.is_pinned("a-again"));
        pins.revoke_cert(&b2.fingerprint());
        assert_eq!(pins.device(&b2.cert), None);
    }
}
