//! Where peers can be reached: the addresses a person gave and those
//! learned (rows, discovery, incoming connections), and discovery's feed
//! into them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use crate::net::discovery::{Discovery, Found, instance};
use crate::net::tls::Pins;

/// Where devices can be reached, shared with whoever learns addresses:
/// per device the addresses learned (pairing, `peer-add`, its `devices` row,
/// discovery, where it last connected from), newest first. The redial tries
/// them in turn, so one stale or wrong address never strands a device.
#[derive(Clone, Default, Debug)]
pub struct Directory(Arc<RwLock<BTreeMap<String, Known>>>);

/// A device's addresses: the one a person gave (pairing, `peer-add`), never
/// evicted, and those learned, newest first.
#[derive(Clone, Default, Debug)]
struct Known {
    given: Option<SocketAddr>,
    learned: Vec<SocketAddr>,
}

/// How many learned addresses are kept per device.
const CANDIDATES: usize = 4;

impl Directory {
    /// Records that `device` listens on `addr` (the newest address of it).
    pub fn set(&self, device: &str, addr: SocketAddr) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        let known = &mut map.entry(device.to_string()).or_default().learned;
        known.retain(|a| *a != addr);
        known.insert(0, addr);
        known.truncate(CANDIDATES);
    }

    /// Records the address a person gave for `device` (kept whatever is
    /// learned later).
    pub fn give(&self, device: &str, addr: SocketAddr) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        map.entry(device.to_string()).or_default().given = Some(addr);
    }

    /// The newest address of `device`, if any.
    pub fn address(&self, device: &str) -> Option<SocketAddr> {
        self.candidates(device).first().copied()
    }

    /// Every address of `device`: learned ones newest first, then the given one.
    fn candidates(&self, device: &str) -> Vec<SocketAddr> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(device).map(Known::candidates).unwrap_or_default()
    }

    pub(super) fn remove(&self, device: &str) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        map.remove(device);
    }

    pub(super) fn snapshot(&self) -> BTreeMap<String, Vec<SocketAddr>> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(d, k)| (d.clone(), k.candidates()))
            .collect()
    }
}

impl Known {
    fn candidates(&self) -> Vec<SocketAddr> {
        let mut all = self.learned.clone();
        all.extend(self.given.filter(|g| !self.learned.contains(g)));
        all
    }
}

/// Announces this device and learns where the library's others listen on the
/// local network (each name heard is matched against the accepted devices);
/// without multicast it says so and the syncer goes on.
pub fn discover(
    library: &str,
    device: &str,
    listen: SocketAddr,
    pins: &Pins,
    directory: Directory,
) -> Option<Discovery> {
    let (pins, library_id) = (pins.clone(), library.to_string());
    let found: Found = Box::new(move |name, addr| {
        let Some(peer) = pins
            .devices()
            .into_iter()
            .find(|d| instance(&library_id, d) == name)
        else {
            return;
        };
        if directory.address(&peer) != Some(addr) {
            tracing::info!(%peer, %addr, "found on the local network (mDNS)");
            directory.set(&peer, addr);
        }
    });
    match Discovery::start(library, device, listen, found) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "no discovery on the local network; peers are dialed at the addresses they gave");
            None
        }
    }
}
