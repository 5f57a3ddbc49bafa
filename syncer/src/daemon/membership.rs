//! The daemon's side of membership (`crate::members`): who it accepts and
//! dials follows the library's `devices` table, each redial round.
//!
//! - A member listed with a certificate fingerprint is accepted and dialed
//!   (introduction: it paired with another member); once it connects, the
//!   certificate it presented is pinned in `sync.db` like a paired one's.
//! - A member marked removed is refused from then on, its connections closed,
//!   and the removal (device and certificates) recorded in `sync.db` for
//!   good. A write that clears the mark (or deletes the row) is answered by
//!   marking it again: removals only grow. This device removed: the syncer
//!   stops, says so, and does not start again.
//! - A certificate `sdsync device rotate` prepared is put in place once every
//!   peer holds the `devices` row naming it (so none is cut off), and the
//!   connections are reopened with it; each peer then pins the new
//!   certificate and retires the old one.
//! - Where a connection came from is one more address to try.

use std::net::SocketAddr;

use rustls::pki_types::CertificateDer;

use super::Daemon;
use crate::members::{self, Member};
use crate::net::identity::{Identity, fingerprint};
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
        let mut reasserted = false;
        for removed in self.pins.revoked_devices() {
            if !listed.iter().any(|m| m.device == removed && m.revoked) {
                reasserted |= self.reassert(&removed);
            }
        }
        for m in listed {
            self.follow(m);
        }
        if reasserted {
            let out = self.node.committed(&self.store);
            self.handle(out);
        }
    }

    /// Acts on one listed device.
    fn follow(&mut self, m: Member) {
        if m.device == self.me {
            self.own_listed = m.cert_sha256.clone();
            if m.revoked {
                self.removed();
            }
            return;
        }
        if m.revoked {
            self.revoke(&m.device, m.cert_sha256.as_deref());
            return;
        }
        if self.pins.is_revoked(&m.device) {
            return;
        }
        if let Some(print) = &m.cert_sha256
            && self.pins.admit(&m.device, print)
        {
            tracing::info!(device = %self.me, peer = %m.device, name = %m.name, "member of the library accepted (listed in devices)");
            self.node.add_peer(&m.device);
        }
        match &m.cert_sha256 {
            Some(print) => self.listed_certs.insert(m.device.clone(), print.clone()),
            None => self.listed_certs.remove(&m.device),
        };
        let text = members::format_addresses(&m.addresses);
        if self.listed.get(&m.device) != Some(&text) {
            // Oldest first, so the first listed ends up the newest.
            for addr in m.addresses.iter().rev() {
                self.directory.set(&m.device, *addr);
            }
            self.listed.insert(m.device, text);
        }
    }

    /// A connection came up: refuse it if the device was removed meanwhile;
    /// else pin the certificate it presented (a member admitted by
    /// fingerprint, or a rotated certificate, replaces what was pinned, and
    /// the certificate its row lists retires the others) and remember where
    /// it came from. Whether the connection may go on.
    pub(super) fn remember(&mut self, peer: &str, cert: Vec<u8>, addr: SocketAddr) -> bool {
        // Still accepted as this device (a removal may have come between
        // the handshake and now).
        if self
            .pins
            .device(&CertificateDer::from(cert.as_slice()))
            .as_deref()
            != Some(peer)
        {
            return false;
        }
        match self.pins.cert(peer) {
            Some(pinned) if pinned == cert => {}
            Some(_) => {
                tracing::info!(device = %self.me, %peer, "peer's new certificate pinned (rotated)")
            }
            None => tracing::info!(device = %self.me, %peer, "member's certificate pinned"),
        }
        let print = fingerprint(&cert);
        if self.listed_certs.get(peer) == Some(&print) {
            self.pins.retire(peer, &print);
        }
        self.pins.pin(peer, CertificateDer::from(cert.clone()));
        self.directory.set(peer, addr);
        if let Err(e) = syncdb::remember(&self.store.sync, peer, &cert, &print, &addr.to_string()) {
            tracing::warn!(device = %self.me, %peer, error = %e, "recording the peer in sync.db");
        }
        true
    }

    /// Refuses `device` from now on: it was removed from the library.
    fn revoke(&mut self, device: &str, listed: Option<&str>) {
        if let Some(print) = listed {
            self.pins.revoke_cert(print);
        }
        let Some(mut prints) = self.pins.revoke(device) else {
            return;
        };
        prints.extend(listed.map(str::to_string));
        tracing::warn!(device = %self.me, peer = %device, "device removed from the library: refused from now on");
        if let Err(e) = syncdb::revoke(&self.store.sync, device, &prints) {
            tracing::warn!(device = %self.me, peer = %device, error = %e, "recording the removal in sync.db (kept in memory; the library row still says so)");
        }
        // The device, and any other whose only accepted certificate was one
        // of its (a key listed under another id).
        let gone: Vec<String> = self
            .conns
            .keys()
            .filter(|d| *d == device || !self.pins.is_pinned(d))
            .cloned()
            .collect();
        for d in gone.iter().map(String::as_str).chain([device]) {
            for conn in self.conns.remove(d).unwrap_or_default() {
                conn.close("removed from the library");
            }
            self.node.remove_peer(d);
            self.directory.remove(d);
            self.waited.remove(d);
        }
    }

    /// Marks `device` removed again in the library: a write cleared the mark
    /// or deleted the row, but a removal is for good. Whether it wrote.
    fn reassert(&mut self, device: &str) -> bool {
        tracing::warn!(device = %self.me, peer = %device, "a write cleared the removal of a device; marking it removed again");
        match members::revoke(&self.store.lib.conn, device) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(device = %self.me, peer = %device, error = %e, "marking a device removed again");
                false
            }
        }
    }

    /// This device was removed from the library: stop, and stay stopped.
    fn removed(&mut self) {
        if self.stop_reason.is_some() {
            return;
        }
        let reason = "this device was removed from the library (`sdsync device remove` on a member); its data stays here, but no member accepts it any more";
        tracing::error!(device = %self.me, "{reason}");
        if let Err(e) = self.store.set_stopped(Some(reason)) {
            tracing::warn!(device = %self.me, error = %e, "recording the stop in sync.db");
        }
        self.stop_reason = Some(reason.to_string());
    }

    /// Puts a certificate `sdsync device rotate` prepared in place, once every
    /// peer holds this device's changes up to the one naming it; retries
    /// presenting it if that failed before.
    pub(super) fn rotate_when_ready(&mut self) {
        let Some(dir) = self.folder.clone() else {
            return;
        };
        if !self.identity_stale {
            let next = match Identity::next(&dir) {
                Ok(Some(next)) => next,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(device = %self.me, error = %e, "reading the next certificate");
                    return;
                }
            };
            let print = next.fingerprint();
            if !self.peers_know(&print) {
                return;
            }
            match Identity::rotate(&dir, &print) {
                Ok(true) => self.identity_stale = true,
                // Another rotation was prepared meanwhile: wait for it instead.
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(device = %self.me, error = %e, "rotating the certificate");
                    return;
                }
            }
        }
        let presented =
            Identity::load_or_create(&dir, &self.me).and_then(|me| self.link.set_identity(&me));
        if let Err(e) = presented {
            tracing::warn!(device = %self.me, error = %e, "presenting the rotated certificate (retried next round)");
            return;
        }
        self.identity_stale = false;
        tracing::info!(device = %self.me, "certificate rotated; reconnecting with it");
        // Their `Down`s follow; the redial that comes next presents the new one.
        for conn in self.conns.values().flatten() {
            conn.close("certificate rotated");
        }
    }

    /// Whether this device's row names `fingerprint` and every peer that
    /// knows this device's current certificate (it connected, so each side
    /// pinned the other's) holds this device's changes as far as this device
    /// does (so the row too). A peer that never connected knows this device
    /// only from its row, which names the new certificate by then: waiting
    /// for it would wait for a connection it would refuse.
    /// The position is taken the first round the row names it, so a device
    /// that keeps writing does not keep the rotation waiting.
    fn peers_know(&mut self, fingerprint: &str) -> bool {
        if self.own_listed.as_deref() != Some(fingerprint) {
            return false;
        }
        let held = match &self.rotation_at {
            Some((print, seq)) if print == fingerprint => *seq,
            _ => {
                let held = match self.store.lib.watermarks() {
                    Ok(marks) => marks.into_iter().find(|(o, _)| *o == self.me),
                    Err(e) => {
                        tracing::warn!(device = %self.me, error = %e, "reading watermarks for the rotation");
                        return false;
                    }
                };
                let Some((_, held)) = held else {
                    return false;
                };
                self.rotation_at = Some((fingerprint.to_string(), held));
                held
            }
        };
        self.node
            .peer_states()
            .iter()
            .filter(|p| self.pins.cert(&p.device).is_some())
            .all(|p| p.holds.get(&self.me).is_some_and(|s| *s >= held))
    }
}
