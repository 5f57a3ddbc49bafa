//! `sdsync pair generate` / `pair join`: pairing two devices by a short code,
//! the offer found on the local network when no address is given.

use std::path::PathBuf;

use clap::Subcommand;

use sdsync_syncer::home::{Home, HomeError};
use sdsync_syncer::net;

#[derive(Subcommand)]
pub enum PairCommand {
    /// Show a code and wait for one device to join with it.
    #[command(name = "generate")]
    Offer {
        /// This device's library folder.
        dir: PathBuf,
        /// Where to wait for the joining device.
        #[arg(long, default_value = "0.0.0.0:7374")]
        listen: std::net::SocketAddr,
        /// Where this device's syncer listens, for the other device to dial.
        #[arg(long)]
        advertise: Option<std::net::SocketAddr>,
    },
    /// Join the device showing `code` (creates the folder if it does not exist).
    Join {
        /// This device's library folder.
        dir: PathBuf,
        /// The code the other device shows.
        code: String,
        /// Where the other device waits (its `pair generate --listen`);
        /// without it, the offer is looked for on the local network (mDNS).
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
        /// Where this device's syncer listens, for the other device to dial.
        #[arg(long)]
        advertise: Option<std::net::SocketAddr>,
    },
}

pub fn run(action: PairCommand, ext: &std::path::Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match action {
        PairCommand::Offer {
            dir,
            listen,
            advertise,
        } => {
            let home = Home::open(&dir, ext)?;
            home.register_device(advertise.as_slice())?;
            let code = net::pair::code();
            println!("pairing code: {code}");
            println!(
                "waiting on {listen} for one attempt ({} s); on the other device:",
                net::pair::OFFER_TIMEOUT.as_secs()
            );
            println!(
                "  sdsync pair join <folder> {code}   (on this local network; elsewhere add --addr <this machine>:{} --advertise <that machine>:<its syncer port>)",
                listen.port()
            );
            std::io::Write::flush(&mut std::io::stdout())?;
            let offer = net::pair::Offer {
                device: home.device()?,
                library: home.library()?,
                advertise,
            };
            // Found by `pair join` without --addr; no multicast: say so, go on.
            let _announced =
                net::discovery::Discovery::offer_pairing(&offer.library, &offer.device, listen)
                    .map_err(|e| eprintln!("warning: {e}; the joiner needs --addr"))
                    .ok();
            let accept = |device: &str, cert: &rustls::pki_types::CertificateDer<'static>| {
                home.check_peer(device, cert, false)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            let paired = runtime.block_on(net::pair::offer(
                &home.identity()?,
                &offer,
                listen,
                &code,
                &accept,
            ))?;
            home.pin(&paired.device, &paired.cert, paired.addr)?;
            println!("paired with {}", paired.device);
            warn_addresses(&dir, &paired.device, paired.addr, advertise);
        }
        PairCommand::Join {
            dir,
            code,
            addr,
            advertise,
        } => {
            let created = !dir.exists();
            let home = match Home::open(&dir, ext) {
                Err(HomeError::NotALibrary(_)) => Home::init(&dir, ext, None)?,
                other => other?,
            };
            let (me, device) = (home.identity()?, home.device()?);
            let joined = match addr.map_or_else(find_offer, Ok) {
                Ok(addr) => runtime.block_on(net::pair::join(&me, &device, advertise, addr, &code)),
                Err(e) => Err(e),
            };
            let paired = match joined {
                Ok(paired) => paired,
                Err(e) => {
                    // A failed join leaves no half-made folder behind.
                    if created {
                        drop(home);
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    return Err(e.into());
                }
            };
            home.adopt_library(&paired.library)?;
            home.register_device(advertise.as_slice())?;
            home.pin(&paired.device, &paired.cert, paired.addr)?;
            println!(
                "paired with {} in library {}",
                paired.device, paired.library
            );
            warn_addresses(&dir, &paired.device, paired.addr, advertise);
        }
    }
    Ok(())
}

/// The one pairing offer announced on the local network.
fn find_offer() -> Result<std::net::SocketAddr, net::pair::PairError> {
    let wait = std::time::Duration::from_secs(10);
    let offers = net::discovery::pairing_offers(wait)
        .map_err(|e| net::pair::PairError::NoOffer(format!("{e}; give --addr HOST:PORT")))?;
    match offers.as_slice() {
        [(_, addr)] => Ok(*addr),
        [] => Err(net::pair::PairError::NoOffer(format!(
            "no pairing offer found on the local network within {} s; give --addr HOST:PORT (the other device's `pair generate --listen`)",
            wait.as_secs()
        ))),
        several => Err(net::pair::PairError::NoOffer(format!(
            "{} pairing offers on the local network ({}); give --addr HOST:PORT for the one to join",
            several.len(),
            several
                .iter()
                .map(|(d, a)| format!("{d} at {a}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Syncers only dial addresses they were given: pairing without `--advertise`
/// on one side leaves the other unable to reach it, which used to go unsaid.
fn warn_addresses(
    dir: &std::path::Path,
    peer: &str,
    theirs: Option<std::net::SocketAddr>,
    ours: Option<std::net::SocketAddr>,
) {
    if theirs.is_none() {
        eprintln!(
            "warning: device {peer} gave no address (it paired without --advertise): this device \
             finds it only on the same local network (discovery). Elsewhere, tell it where: \
             `sdsync peer-add {} --device {peer} --cert <its device.crt> --addr HOST:PORT`",
            dir.display()
        );
    }
    if ours.is_none() {
        eprintln!(
            "warning: this device gave device {peer} no address (no --advertise): it finds this one \
             only on the same local network (discovery); elsewhere, pair again with --advertise \
             HOST:PORT (where `sdsync run --listen` listens)"
        );
    }
}
