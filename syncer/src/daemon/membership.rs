//! The daemon's side of membership (`crate::members`): who it accepts and
//! dials follows the library's `devices` table, each redial round.
//!
//! - A member listed with a certificate fingerprint is accepted and dialed
//!   (introduction: it paired with another member); once it connects, the
//!   certificate it presented is pinned in `sync.db` like a paired one's.
//! - A member marked removed is refused from then on, its connections closed,
//!   and the removal recorded in `sync.db` for good. This device removed:
//!   the syncer stops and says so.
//! - A certificate `sdsync device rotate` prepared is put in place once every
//!   peer holds the `devices` row naming it (so none is cut off), and the
//!   connections are reopened with it; peers then pin the new certificate,
//!   which retires the old one.
//! - Where a connection came from is remembered as the peer's address.

use std::net::SocketAddr;

use rustls::pki_types::CertificateDer;

use super::Daemon;
use crate::members;
use crate::net::identity::Identity;
use crate::sqlstore::syncdb;

impl Daemon {
    /// Follows the library's `devices` table (a small table, read each round).
    pub(super) fn reload_members(&mut self) {
        let listed = match members::read(&self.store.lib.conn) {
            Ok(Some(listed)) => listed,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(device = %self.me, error = %e, "reading the library's devices");
                return;
            }
        };
        for m in listed {
            if m.device == self.me {
                if m.revoked {
                    self.removed();
                }
                continue;
            }
            if m.revoked {
                self.revoke(&m.device);
                continue;
            }
            if self.pins.is_revoked(&m.device) {
                continue;
            }
            if let Some(fingerprint) = &m.cert_sha256
                && self.pins.admit(&m.device, fingerprint)
            {
                tracing::info!(device = %self.me, peer = %m.device, name = %m.name, "member of the library accepted (listed in devices)");
                self.node.add_peer(&m.device);
            }
            let text = members::format_addresses(&m.addresses);
            if self.listed.get(&m.device) != Some(&text) {
                if let Some(addr) = m.addresses.first() {
                    self.directory.set(&m.device, *addr);
                }
                self.listed.insert(m.device.clone(), text);
            }
        }
    }

    /// A connection came up: pin the certificate the peer presented (a
    /// member admitted by fingerprint, or a rotated certificate, replaces
    /// what was pinned) and remember where it came from.
    pub(super) fn remember(&mut self, peer: &str, cert: Vec<u8>, addr: SocketAddr) {
        match self.pins.cert(peer) {
            Some(pinned) if pinned == cert => {}
            Some(_) => {
                tracing::info!(device = %self.me, %peer, "peer's new certificate pinned (rotated)")
            }
            None => tracing::info!(device = %self.me, %peer, "member's certificate pinned"),
        }
        self.pins.pin(peer, CertificateDer::from(cert.clone()));
        self.directory.set(peer, addr);
        if let Err(e) = syncdb::remember(&self.store.sync, peer, &cert, &addr.to_string()) {
            tracing::warn!(device = %self.me, %peer, error = %e, "recording the peer in sync.db");
        }
    }

    /// Refuses `device` from now on: it was removed from the library.
    fn revoke(&mut self, device: &str) {
        if !self.pins.revoke(device) && !self.node.peer_states().iter().any(|p| p.device == device)
        {
            return;
        }
        tracing::warn!(device = %self.me, peer = %device, "device removed from the library: refused from now on");
        if let Err(e) = syncdb::revoke(&self.store.sync, device) {
            tracing::warn!(device = %self.me, peer = %device, error = %e, "recording the removal in sync.db");
        }
        for conn in self.conns.remove(device).unwrap_or_default() {
            conn.close("removed from the library");
        }
        self.node.remove_peer(device);
        self.directory.remove(device);
        self.waited.remove(device);
    }

    /// This device was removed from the library: stop.
    fn removed(&mut self) {
        if self.stop_reason.is_none() {
            let reason = "this device was removed from the library (`sdsync device remove` on a member); its data stays here, but no member accepts it any more";
            tracing::error!(device = %self.me, "{reason}");
            self.stop_reason = Some(reason.to_string());
        }
    }

    /// Puts a certificate `sdsync device rotate` prepared in place, once every
    /// peer holds this device's changes up to the one naming it.
    pub(super) fn rotate_when_ready(&mut self) {
        let Some(dir) = self.folder.clone() else {
            return;
        };
        let next = match Identity::next(&dir) {
            Ok(Some(next)) => next,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(device = %self.me, error = %e, "reading the next certificate");
                return;
            }
        };
        if !self.peers_know(&next.fingerprint()) {
            return;
        }
        let rotated = Identity::rotate(&dir)
            .and_then(|()| Identity::load_or_create(&dir, &self.me))
            .and_then(|me| self.link.set_identity(&me));
        if let Err(e) = rotated {
            tracing::warn!(device = %self.me, error = %e, "rotating the certificate");
            return;
        }
        tracing::info!(device = %self.me, "certificate rotated; reconnecting with it");
        // Their `Down`s follow; the redial that comes next presents the new one.
        for conn in self.conns.values().flatten() {
            conn.close("certificate rotated");
        }
    }

    /// Whether this device's row names `fingerprint` and every peer holds
    /// this device's changes as far as this device does (so the row too).
    fn peers_know(&self, fingerprint: &str) -> bool {
        let own = match members::read(&self.store.lib.conn) {
            Ok(Some(listed)) => listed.into_iter().find(|m| m.device == self.me),
            _ => None,
        };
        if own.and_then(|m| m.cert_sha256).as_deref() != Some(fingerprint) {
            return false;
        }
        let held = match self.store.lib.watermarks() {
            Ok(marks) => marks
                .into_iter()
                .find(|(o, _)| *o == self.me)
                .map(|(_, s)| s),
            Err(_) => None,
        };
        let Some(held) = held else {
            return false;
        };
        self.node
            .peer_states()
            .iter()
            .all(|p| p.holds.get(&self.me).is_some_and(|s| *s >= held))
    }
}
