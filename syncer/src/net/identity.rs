//! A device's TLS identity: a self-signed certificate and its key, kept next to
//! the library as `device.crt` / `device.key`.
//!
//! ```no_run
//! # use sdsync_syncer::net::identity::Identity;
//! let me = Identity::load_or_create("/tmp/lib.sdlibrary".as_ref(), "device-uuid").unwrap();
//! println!("{} bytes of certificate", me.cert.len());
//! ```
//!
//! Devices trust each other by pinning these certificates (no CA), or by the
//! certificate's SHA-256 listed in the library's `devices` table (see
//! `crate::members`). `sdsync device rotate` replaces a certificate in two
//! steps: the next one is written as `device.next.crt` / `device.next.key`
//! (its fingerprint goes into the `devices` row, so peers learn it), and the
//! syncer moves it in place once every peer holds that row ([`Identity::rotate`]).
//! A crash between the two renames is finished by the next load.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::net::NetError;

/// A device certificate (DER) and its private key (PKCS#8 DER).
pub struct Identity {
    /// The certificate peers pin.
    pub cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Identity {
    /// A fresh identity for `device` (its uuid goes into the certificate's name,
    /// for people reading it; nothing relies on it).
    pub fn generate(device: &str) -> Result<Self, NetError> {
        Ok(Self::fresh(device)?.0)
    }

    /// The identity stored in `dir`, created there on first use.
    pub fn load_or_create(dir: &Path, device: &str) -> Result<Self, NetError> {
        let (crt, key) = (dir.join(CRT), dir.join(KEY));
        // A rotation cut between its two renames (certificate first): finish it.
        let next_key = dir.join(NEXT_KEY);
        if !dir.join(NEXT_CRT).exists() && next_key.exists() {
            rename(&next_key, &key)?;
        }
        if let Some(me) = Self::load(&crt, &key)? {
            return Ok(me);
        }
        // A half-written identity (a crash between the two files) was never used.
        Self::create(&crt, &key, device)
    }

    /// The next identity `sdsync device rotate` prepared, if one waits.
    pub fn next(dir: &Path) -> Result<Option<Self>, NetError> {
        Self::load(&dir.join(NEXT_CRT), &dir.join(NEXT_KEY))
    }

    /// Prepares a new identity for `device` as the next one (replacing one
    /// prepared before and not yet in use); [`Identity::rotate`] puts it in place.
    pub fn prepare_next(dir: &Path, device: &str) -> Result<Self, NetError> {
        Self::create(&dir.join(NEXT_CRT), &dir.join(NEXT_KEY), device)
    }

    /// Makes the prepared next identity the device's own (certificate first,
    /// then key; [`Identity::load_or_create`] finishes a cut rotation).
    pub fn rotate(dir: &Path) -> Result<(), NetError> {
        rename(&dir.join(NEXT_CRT), &dir.join(CRT))?;
        rename(&dir.join(NEXT_KEY), &dir.join(KEY))
    }

    /// The certificate's SHA-256 in lowercase hex, as the `devices` table
    /// lists it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }

    fn load(crt: &Path, key: &Path) -> Result<Option<Self>, NetError> {
        if !(crt.exists() && key.exists()) {
            return Ok(None);
        }
        Ok(Some(Self {
            cert: CertificateDer::from_pem_file(crt).map_err(|e| pem_error(crt, e))?,
            key: PrivatePkcs8KeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?,
        }))
    }

    fn create(crt: &Path, key: &Path, device: &str) -> Result<Self, NetError> {
        let (me, crt_pem, key_pem) = Self::fresh(device)?;
        for leftover in [key, crt] {
            let _ = std::fs::remove_file(leftover);
        }
        write(key, &key_pem, 0o600)?;
        write(crt, &crt_pem, 0o644)?;
        Ok(me)
    }

    /// A new identity and its certificate and key as PEM text.
    fn fresh(device: &str) -> Result<(Self, String, String), NetError> {
        let name = format!("{device}.sdsync.invalid");
        let certified = rcgen::generate_simple_self_signed(vec![name])?;
        let me = Self {
            cert: certified.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
        };
        Ok((
            me,
            certified.cert.pem(),
            certified.signing_key.serialize_pem(),
        ))
    }

    /// The key, in the form rustls takes.
    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// The identity's files in a library folder.
const CRT: &str = "device.crt";
const KEY: &str = "device.key";
const NEXT_CRT: &str = "device.next.crt";
const NEXT_KEY: &str = "device.next.key";

/// A certificate's SHA-256 in lowercase hex.
pub fn fingerprint(cert: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(cert)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn rename(from: &Path, to: &Path) -> Result<(), NetError> {
    std::fs::rename(from, to).map_err(|e| NetError::Identity {
        path: from.to_path_buf(),
        reason: e.to_string(),
    })
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> NetError {
    NetError::Identity {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Writes a new file with `mode` (the key readable by its owner only).
fn write(path: &Path, text: &str, mode: u32) -> Result<(), NetError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| NetError::Identity {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_survives_a_round_trip_through_its_files() {
        let dir = std::env::temp_dir().join(format!("sdsync-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = Identity::load_or_create(&dir, "dev").unwrap();
        let b = Identity::load_or_create(&dir, "dev").unwrap();
        assert_eq!(a.cert, b.cert);
        assert_eq!(a.key.secret_pkcs8_der(), b.key.secret_pkcs8_der());
        assert_ne!(Identity::generate("dev").unwrap().cert, a.cert);
        let mode = std::fs::metadata(dir.join("device.key"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn a_rotation_cut_between_its_renames_is_finished_by_the_next_load() {
        let dir = std::env::temp_dir().join(format!("sdsync-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let old = Identity::load_or_create(&dir, "dev").unwrap();
        let next = Identity::prepare_next(&dir, "dev").unwrap();
        assert_eq!(Identity::next(&dir).unwrap().unwrap().cert, next.cert);
        assert_eq!(
            Identity::load_or_create(&dir, "dev").unwrap().cert,
            old.cert
        );
        // The certificate moved, the key did not (a crash in between).
        std::fs::rename(dir.join(NEXT_CRT), dir.join(CRT)).unwrap();
        let now = Identity::load_or_create(&dir, "dev").unwrap();
        assert_eq!(now.cert, next.cert);
        assert_eq!(now.key.secret_pkcs8_der(), next.key.secret_pkcs8_der());
        assert!(Identity::next(&dir).unwrap().is_none());
        assert_eq!(now.fingerprint().len(), 64);
    }
}
