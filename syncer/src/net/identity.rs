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
//! steps: the next identity is written whole as `device.next.pem` (its
//! fingerprint goes into the `devices` row, so peers learn it), and the
//! syncer puts it in place once every peer holds that row
//! ([`Identity::rotate`]): the certificate first, then the key, then the
//! next file goes. A load finishes a rotation cut in between, and only then:
//! the key is replaced only once `device.crt` is already the next
//! certificate, so no crash leaves a key that does not match its certificate.

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
        finish_rotation(dir)?;
        let (crt, key) = (dir.join(CRT), dir.join(KEY));
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

    /// The next identity `sdsync device rotate` prepared, if one waits.
    pub fn next(dir: &Path) -> Result<Option<Self>, NetError> {
        Ok(next_pem(dir)?.map(|(me, _, _)| me))
    }

    /// Prepares a new identity for `device` as the next one (replacing one
    /// prepared before and not yet in use); [`Identity::rotate`] puts it in
    /// place.
    pub fn prepare_next(dir: &Path, device: &str) -> Result<Self, NetError> {
        // A rotation cut halfway holds the only key of `device.crt`: finish it.
        finish_rotation(dir)?;
        let (me, crt_pem, key_pem) = Self::fresh(device)?;
        replace(&dir.join(NEXT), &format!("{crt_pem}{key_pem}"), 0o600)?;
        Ok(me)
    }

    /// Makes the prepared next identity the device's own, if it is still
    /// the one with `fingerprint` (the one peers were checked to know; a
    /// `device rotate` meanwhile prepared another): its certificate replaces
    /// `device.crt`, then [`finish_rotation`] the key. Whether it did.
    pub fn rotate(dir: &Path, fingerprint: &str) -> Result<bool, NetError> {
        match next_pem(dir)? {
            Some((next, crt_pem, _)) if next.fingerprint() == fingerprint => {
                replace(&dir.join(CRT), &crt_pem, 0o644)?;
                finish_rotation(dir)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The certificate's SHA-256 in lowercase hex, as the `devices` table
    /// lists it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
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
/// The next identity while a rotation waits: certificate and key in one
/// file, so it is there whole or not at all.
const NEXT: &str = "device.next.pem";

/// The next identity and its certificate's and key's PEM text.
fn next_pem(dir: &Path) -> Result<Option<(Identity, String, String)>, NetError> {
    let path = dir.join(NEXT);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path, e)),
    };
    let split = text
        .find("-----BEGIN PRIVATE KEY")
        .ok_or_else(|| NetError::Identity {
            path: path.clone(),
            reason: "no private key in it".into(),
        })?;
    let (crt_pem, key_pem) = text.split_at(split);
    let me = Identity {
        cert: CertificateDer::from_pem_slice(crt_pem.as_bytes())
            .map_err(|e| pem_error(&path, e))?,
        key: PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| pem_error(&path, e))?,
    };
    Ok(Some((me, crt_pem.to_string(), key_pem.to_string())))
}

/// Finishes a rotation whose certificate is in place: the next key replaces
/// the old one and the next file goes. Does nothing before the certificate
/// moved (the old key still belongs to `device.crt` then). Idempotent, so a
/// syncer and a command finishing it at once both succeed.
fn finish_rotation(dir: &Path) -> Result<(), NetError> {
    let Some((next, _, key_pem)) = next_pem(dir)? else {
        return Ok(());
    };
    let current = std::fs::read(dir.join(CRT))
        .ok()
        .and_then(|bytes| CertificateDer::from_pem_slice(&bytes).ok());
    if current.as_ref() != Some(&next.cert) {
        return Ok(());
    }
    replace(&dir.join(KEY), &key_pem, 0o600)?;
    match std::fs::remove_file(dir.join(NEXT)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(&dir.join(NEXT), e)),
        _ => Ok(()),
    }
}

/// Replaces `path` with `text` whole: a temporary file (synced), a rename,
/// and the folder synced, so even a power loss leaves the old or the new file.
fn replace(path: &Path, text: &str, mode: u32) -> Result<(), NetError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    write(&tmp, text, mode)?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(dir, e))?;
    }
    Ok(())
}

fn io_error(path: &Path, e: std::io::Error) -> NetError {
    NetError::Identity {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// A certificate's SHA-256 in lowercase hex.
pub fn fingerprint(cert: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(cert)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
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
    fn a_rotation_cut_anywhere_leaves_a_matching_certificate_and_key() {
        let dir = std::env::temp_dir().join(format!("sdsync-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let old = Identity::load_or_create(&dir, "dev").unwrap();
        let next = Identity::prepare_next(&dir, "dev").unwrap();
        assert_eq!(Identity::next(&dir).unwrap().unwrap().cert, next.cert);
        // Prepared only: loading keeps the old identity, key included.
        let now = Identity::load_or_create(&dir, "dev").unwrap();
        assert_eq!(now.cert, old.cert);
        assert_eq!(now.key.secret_pkcs8_der(), old.key.secret_pkcs8_der());
        // Cut after the certificate moved: preparing another rotation first
        // finishes this one (its key is the only one of `device.crt`).
        let (_, crt_pem, _) = next_pem(&dir).unwrap().unwrap();
        replace(&dir.join(CRT), &crt_pem, 0o644).unwrap();
        let third = Identity::prepare_next(&dir, "dev").unwrap();
        let now = Identity::load_or_create(&dir, "dev").unwrap();
        assert_eq!(now.cert, next.cert);
        assert_eq!(now.key.secret_pkcs8_der(), next.key.secret_pkcs8_der());
        // Cut there again, finished by a load this time.
        let (_, crt_pem, _) = next_pem(&dir).unwrap().unwrap();
        replace(&dir.join(CRT), &crt_pem, 0o644).unwrap();
        let now = Identity::load_or_create(&dir, "dev").unwrap();
        assert_eq!(now.key.secret_pkcs8_der(), third.key.secret_pkcs8_der());
        assert!(Identity::next(&dir).unwrap().is_none());
        // A whole rotation, only of the identity peers were checked to know.
        let fourth = Identity::prepare_next(&dir, "dev").unwrap();
        assert!(!Identity::rotate(&dir, &third.fingerprint()).unwrap());
        assert!(Identity::rotate(&dir, &fourth.fingerprint()).unwrap());
        assert!(!Identity::rotate(&dir, &fourth.fingerprint()).unwrap());
        let now = Identity::load_or_create(&dir, "dev").unwrap();
        assert_eq!(now.key.secret_pkcs8_der(), fourth.key.secret_pkcs8_der());
        assert_eq!(now.fingerprint().len(), 64);
    }
}
