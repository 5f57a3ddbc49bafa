//! A device's TLS identity: a self-signed certificate and its key, kept next to
//! the library as `device.crt` / `device.key`.
//!
//! ```no_run
//! # use sdsync_syncer::net::identity::Identity;
//! let me = Identity::load_or_create("/tmp/lib.sdlibrary".as_ref(), "device-uuid").unwrap();
//! println!("{} bytes of certificate", me.cert.len());
//! ```
//!
//! Devices trust each other by pinning these certificates (no CA), so the
//! certificate only has to be stable for the device's lifetime.

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
        let (crt, key) = (dir.join("device.crt"), dir.join("device.key"));
        if crt.exists() && key.exists() {
            return Ok(Self {
                cert: CertificateDer::from_pem_file(&crt).map_err(|e| pem_error(&crt, e))?,
                key: PrivatePkcs8KeyDer::from_pem_file(&key).map_err(|e| pem_error(&key, e))?,
            });
        }
        let (me, crt_pem, key_pem) = Self::fresh(device)?;
        // A half-written identity (a crash between the two files) was never used.
        for leftover in [&key, &crt] {
            let _ = std::fs::remove_file(leftover);
        }
        write(&key, &key_pem, 0o600)?;
        write(&crt, &crt_pem, 0o644)?;
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
}
