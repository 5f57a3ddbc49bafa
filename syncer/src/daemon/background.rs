//! A daemon on a thread of its own, for several devices in one process.

use std::net::SocketAddr;

use tokio::sync::watch;

use super::{Daemon, DaemonError, Directory};
use crate::net::identity::Identity;
use crate::net::tls::Pins;
use crate::proto::store::SqlStore;

/// A daemon on its own thread with its own runtime: several devices in one
/// process (the demo, tests). Dropping it stops the daemon and joins the thread.
pub struct Background {
    /// The address the device listens on.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Starts a daemon for `store` on 127.0.0.1 (any port).
    pub fn start(
        store: SqlStore,
        library: &str,
        me: Identity,
        pins: &Pins,
        directory: &Directory,
    ) -> Result<Self, DaemonError> {
        let (stop, stopped) = watch::channel(false);
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (library, pins, directory) = (library.to_string(), pins.clone(), directory.clone());
        let thread = std::thread::spawn(move || {
            // As `sdsync run`: the daemon on this thread, QUIC on the worker.
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(DaemonError::Runtime(e.to_string())));
                    return;
                }
            };
            runtime.block_on(async move {
                let listen = SocketAddr::from(([127, 0, 0, 1], 0));
                let started = Daemon::start(store, &library, &me, &pins, &directory, listen)
                    .and_then(|d| Ok((d.local_addr()?, d)));
                match started {
                    Ok((addr, daemon)) => {
                        let _ = ready_tx.send(Ok(addr));
                        if let Some(reason) = daemon.run(stopped).await {
                            tracing::error!(%reason, "daemon stopped by a peer");
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        });
        let addr = ready
            .recv()
            .map_err(|e| DaemonError::Runtime(e.to_string()))??;
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
