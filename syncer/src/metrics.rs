//! `sdsync run --metrics ADDR`: Prometheus text on `/metrics`, and `/health`.
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use sdsync_syncer::metrics::{Metrics, serve};
//! let metrics = Arc::new(Metrics::default());
//! metrics.connected.set(2);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9464").await?;
//! tokio::spawn(serve(listener, metrics)); // curl 127.0.0.1:9464/metrics
//! # Ok(()) }
//! ```
//!
//! The names are the seeds' (`sync_state_changes_sent`, …; Prometheus text
//! adds `_total` to counters), plus lag and quarantine. The daemon updates
//! them as it works: counters from the pages it sends and the `Applied`
//! events, gauges every redial round (half a second), the histograms around
//! each page it builds and each page it applies. Metrics are atomics shared
//! with the server task; nothing here touches the database.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Labels of a per-origin gauge.
pub type OriginLabel = Vec<(String, String)>;

/// Labels of a per-peer gauge.
pub type PeerLabel = Vec<(String, String)>;

/// The syncer's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Changes of owned (device-state) tables sent in pages.
    pub state_sent: Counter,
    /// Changes of shared tables sent in pages.
    pub shared_sent: Counter,
    /// Changes of owned tables applied from peers.
    pub state_received: Counter,
    /// Changes of shared tables applied from peers.
    pub shared_received: Counter,
    /// Pages and pulls that failed for good (dead letters, refused pages).
    pub broadcast_failures: Counter,
    /// Peers linked now.
    pub connected: Gauge,
    /// Changes parked waiting for a row (`sdsync_parked`).
    pub parked: Gauge,
    /// Pulls waiting for an answer (retried on timeout).
    pub retrying: Gauge,
    /// Changes quarantined here.
    pub quarantined: Gauge,
    /// Per origin: changes some peer holds that this device does not yet.
    pub lag: Family<OriginLabel, Gauge>,
    /// Per peer: tables and columns its schema differs by (mixed app
    /// versions; the same lines as `sdsync status`).
    pub schema_mismatches: Family<PeerLabel, Gauge>,
    /// Changes kept for tables or columns this device does not have yet.
    pub kept: Gauge,
    /// Restores of this device's own library told (its changes taken back).
    pub restores: Counter,
    /// Restores of peers heard of (this device pulled everything again).
    pub peer_restores: Counter,
    /// Two copies of one folder heard running at once (one is stopped).
    pub copies: Counter,
    /// Seconds to build a page (read from the database).
    pub broadcast_duration: Histogram,
    /// Seconds to apply a page (one transaction).
    pub apply_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let seconds = || Histogram::new(exponential_buckets(0.0001, 4.0, 10));
        let mut m = Self {
            registry: Registry::default(),
            state_sent: Counter::default(),
            shared_sent: Counter::default(),
            state_received: Counter::default(),
            shared_received: Counter::default(),
            broadcast_failures: Counter::default(),
            connected: Gauge::default(),
            parked: Gauge::default(),
            retrying: Gauge::default(),
            quarantined: Gauge::default(),
            lag: Family::default(),
            schema_mismatches: Family::default(),
            kept: Gauge::default(),
            restores: Counter::default(),
            peer_restores: Counter::default(),
            copies: Counter::default(),
            broadcast_duration: seconds(),
            apply_duration: seconds(),
        };
        let r = &mut m.registry;
        r.register(
            "sync_state_changes_sent",
            "Changes of owned tables sent",
            m.state_sent.clone(),
        );
        r.register(
            "sync_shared_changes_sent",
            "Changes of shared tables sent",
            m.shared_sent.clone(),
        );
        r.register(
            "sync_state_changes_received",
            "Changes of owned tables applied from peers",
            m.state_received.clone(),
        );
        r.register(
            "sync_shared_changes_received",
            "Changes of shared tables applied from peers",
            m.shared_received.clone(),
        );
        r.register(
            "sync_broadcast_failures",
            "Pages or pulls that failed for good",
            m.broadcast_failures.clone(),
        );
        r.register(
            "sync_connected_partners",
            "Peers linked now",
            m.connected.clone(),
        );
        r.register(
            "sync_buffer_queue_size",
            "Changes parked waiting for a row",
            m.parked.clone(),
        );
        r.register(
            "sync_retry_queue_size",
            "Pulls waiting for an answer",
            m.retrying.clone(),
        );
        r.register(
            "sync_quarantine_size",
            "Changes quarantined here",
            m.quarantined.clone(),
        );
        r.register(
            "sync_lag_changes",
            "Changes of an origin some peer holds and this device lacks",
            m.lag.clone(),
        );
        r.register(
            "sync_schema_mismatches",
            "Tables and columns a peer's schema differs by",
            m.schema_mismatches.clone(),
        );
        r.register(
            "sync_kept_changes",
            "Changes kept for tables or columns this device does not have yet",
            m.kept.clone(),
        );
        r.register(
            "sync_restores",
            "Restores of this device's library told",
            m.restores.clone(),
        );
        r.register(
            "sync_peer_restores",
            "Restores of peers heard of",
            m.peer_restores.clone(),
        );
        r.register(
            "sync_copies",
            "Two copies of one folder heard running at once",
            m.copies.clone(),
        );
        r.register(
            "sync_broadcast_duration_seconds",
            "Seconds to build a page",
            m.broadcast_duration.clone(),
        );
        r.register(
            "sync_apply_duration_seconds",
            "Seconds to apply a page",
            m.apply_duration.clone(),
        );
        m
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Invariant: writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` (Prometheus text) and `GET /health` (`ok`) until
/// the listener fails; one request per connection.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            // The request line may come in pieces (seen once in CI: "GET "
            // alone, answered 404): read until it ends, or 1 KiB.
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 256];
            while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 1024 {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let request = String::from_utf8_lossy(&buf);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, kind, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.encode()),
                "/health" => ("200 OK", "text/plain", "ok\n".to_string()),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "try /metrics or /health\n".to_string(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_names_are_exposed() {
        let m = Metrics::default();
        m.state_sent.inc_by(3);
        m.lag
            .get_or_create(&vec![("origin".to_string(), "a".to_string())])
            .set(7);
        let text = m.encode();
        for name in [
            "sync_state_changes_sent_total 3",
            "sync_shared_changes_received_total 0",
            "sync_connected_partners 0",
            "sync_buffer_queue_size 0",
            "sync_retry_queue_size 0",
            "sync_lag_changes{origin=\"a\"} 7",
            "sync_apply_duration_seconds_count 0",
            "sync_kept_changes 0",
            "sync_restores_total 0",
        ] {
            assert!(text.contains(name), "{name} in {text}");
        }
    }
}
