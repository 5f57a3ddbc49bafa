//! Finding the library's devices on the local network (mDNS, DNS-SD), so
//! nobody types an address and a device whose address changed is found again.
//!
//! ```no_run
//! # fn f() -> Result<(), sdsync_syncer::net::NetError> {
//! use sdsync_syncer::net::discovery::Discovery;
//! let listen = "127.0.0.1:7401".parse().unwrap();
//! let _on = Discovery::start("library-id", "device-id", listen, Box::new(|name, addr| {
//!     println!("{name} listens on {addr}"); // name: discovery::instance(library, device)
//! }))?;
//! # Ok(()) }
//! ```
//!
//! Each syncer announces itself as an instance of `_sdsync._udp.local.` named
//! by a hash of its library and device ids, with a hash of the library id in
//! its TXT record (the network hears no id), and browses for the others; an
//! instance of the same library reports its name and address, which the
//! syncer maps back to a device it knows ([`instance`]). `sdsync
//! pair generate` announces its offer as `_sdsync-pair._udp.local.` the same
//! way, so `pair join` finds it without `--addr` ([`pairing_offers`]). Nothing
//! found this way is trusted: the address is only dialed, and the handshake
//! still accepts pinned or listed certificates alone. Announcing is
//! `mdns-sd`'s: once at start (and when the host's addresses change), then
//! only in answer to queries, whose interval backs off — little traffic for
//! a battery. A machine without multicast just finds nobody.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};

use crate::net::NetError;

/// The DNS-SD service type of sdsync syncers.
const SERVICE: &str = "_sdsync._udp.local.";
/// The service type of a pairing offer (`sdsync pair generate`).
const PAIRING: &str = "_sdsync-pair._udp.local.";

/// What a found device is reported to: its name on the network (see
/// [`instance`]) and where it listens.
pub type Found = Box<dyn Fn(String, SocketAddr) + Send>;

/// The name `device` of `library` announces itself under: a hash of the
/// two, so the network hears neither id (devices of the library compute it
/// from ids they know; anyone else learns only that an sdsync device runs).
pub fn instance(library: &str, device: &str) -> String {
    tag(&["device", library, device])
}

/// Announcing this device (and browsing for the others), until dropped.
pub struct Discovery {
    daemon: ServiceDaemon,
}

impl Discovery {
    /// Announces `device` of `library` listening on `listen` (a wildcard
    /// address announces the host's addresses) and reports every other
    /// device of `library` announced on the network to `found`.
    pub fn start(
        library: &str,
        device: &str,
        listen: SocketAddr,
        found: Found,
    ) -> Result<Self, NetError> {
        let me = instance(library, device);
        let daemon = announce(SERVICE, &me, library, listen)?;
        let events = daemon.browse(SERVICE).map_err(error)?;
        let library = tag(&["library", library]);
        std::thread::Builder::new()
            .name("sdsync-discovery".into())
            .spawn(move || {
                // Ends when the daemon shuts down (the channel closes).
                while let Ok(event) = events.recv() {
                    if let Some((device, lib, addr)) = resolved(SERVICE, event)
                        && lib == library
                        && device != me
                    {
                        found(device, addr);
                    }
                }
            })
            .map_err(|e| NetError::Discovery(e.to_string()))?;
        Ok(Self { daemon })
    }

    /// Announces a pairing offer by `device` of `library`, waiting on
    /// `listen`, so `sdsync pair join` needs no address on the same network.
    pub fn offer_pairing(
        library: &str,
        device: &str,
        listen: SocketAddr,
    ) -> Result<Self, NetError> {
        Ok(Self {
            daemon: announce(PAIRING, &tag(&["pair", device]), library, listen)?,
        })
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        // Says goodbye on the network; the browsing thread then ends.
        let _ = self.daemon.shutdown();
    }
}

/// The pairing offers announced on the local network: `(device, address)`.
/// Waits up to `wait` for a first one, then briefly for others (two offers
/// at once are ambiguous; the caller asks for an address then).
pub fn pairing_offers(wait: Duration) -> Result<Vec<(String, SocketAddr)>, NetError> {
    let daemon = ServiceDaemon::new().map_err(error)?;
    let events = daemon.browse(PAIRING).map_err(error)?;
    let mut deadline = Instant::now() + wait;
    let mut offers: Vec<(String, SocketAddr)> = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(event) = events.recv_timeout(left) else {
            break;
        };
        if let Some((device, _, addr)) = resolved(PAIRING, event)
            && !offers.iter().any(|(d, _)| *d == device)
        {
            if offers.is_empty() {
                deadline = deadline.min(Instant::now() + OTHERS);
            }
            offers.push((device, addr));
        }
    }
    let _ = daemon.shutdown();
    Ok(offers)
}

/// How long to listen for other offers once one is found.
const OTHERS: Duration = Duration::from_millis(700);

/// Starts announcing `name` (a hash, never an id) of `library` as an
/// instance of `service`.
fn announce(
    service: &str,
    name: &str,
    library: &str,
    listen: SocketAddr,
) -> Result<ServiceDaemon, NetError> {
    let daemon = ServiceDaemon::new().map_err(error)?;
    let host = format!("{name}.local.");
    let library = tag(&["library", library]);
    let properties = [("library", library.as_str()), ("v", "1")];
    let info = if listen.ip().is_unspecified() {
        ServiceInfo::new(service, name, &host, "", listen.port(), &properties[..])
            .map(ServiceInfo::enable_addr_auto)
    } else {
        ServiceInfo::new(
            service,
            name,
            &host,
            listen.ip(),
            listen.port(),
            &properties[..],
        )
    }
    .map_err(error)?;
    daemon.register(info).map_err(error)?;
    Ok(daemon)
}

/// A resolved instance of `service`: its device, library and address.
fn resolved(service: &str, event: ServiceEvent) -> Option<(String, String, SocketAddr)> {
    let ServiceEvent::ServiceResolved(s) = event else {
        return None;
    };
    let library = s
        .txt_properties
        .get_property_val_str("library")?
        .to_string();
    let device = s.fullname.strip_suffix(&format!(".{service}"))?.to_string();
    let ips: Vec<IpAddr> = s.addresses.iter().map(|a| a.to_ip_addr()).collect();
    let ip = preferred(&ips)?;
    Some((device, library, SocketAddr::new(ip, s.port)))
}

/// 32 hex digits of the SHA-256 of `parts` (a name the network may hear).
fn tag(parts: &[&str]) -> String {
    let mut print = crate::net::identity::fingerprint(parts.join("\n").as_bytes());
    print.truncate(32);
    print
}

fn error(e: mdns_sd::Error) -> NetError {
    NetError::Discovery(e.to_string())
}

/// The address to dial of those announced: IPv4 before IPv6, and loopback
/// only when nothing else is (two devices on one machine).
fn preferred(ips: &[IpAddr]) -> Option<IpAddr> {
    let mut ips = ips.to_vec();
    ips.sort_by_key(|ip| (ip.is_loopback(), ip.is_ipv6(), *ip));
    ips.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_address_of_the_network_is_preferred() {
        let ips: Vec<IpAddr> = ["::1", "127.0.0.1", "fd00::2", "192.0.2.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(preferred(&ips), Some("192.0.2.2".parse().unwrap()));
        assert_eq!(preferred(&ips[..2]), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(preferred(&[]), None);
    }
}
