//! What the daemon tells people about its work: progress lines in the log
//! and, with `--metrics`, Prometheus metrics. Kept apart from the daemon's
//! loop, which only reports what happened.
//!
//! ```ignore
//! let mut seen = Observer::new(now, Some(metrics));
//! seen.event(&event);                       // Applied, DeadLetter, …
//! seen.sent(&payload, &store);              // pages sent, by table class
//! seen.timed(elapsed, &outputs);            // apply / page-building time
//! seen.report(now, &store, &node);          // every redial round
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::bars::Bars;
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::proto::message::Payload;
use crate::proto::node::{Event, Node, Output};
use crate::proto::store::{SqlStore, Store, StoreError};
use prometheus_client::metrics::counter::Counter;

/// Progress and metrics of one daemon.
pub struct Observer {
    progress: Progress,
    metrics: Option<Arc<Metrics>>,
    /// Table name to class (`owned`/`shared`), reloaded when a table is new.
    classes: BTreeMap<String, String>,
    /// Progress bars, when the syncer runs in a terminal.
    bars: Option<Bars>,
}

impl Observer {
    /// Starts at `now_ms`; `metrics` when `--metrics` serves them.
    pub fn new(now_ms: u64, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            progress: Progress::new(now_ms),
            metrics,
            classes: BTreeMap::new(),
            bars: None,
        }
    }

    /// Also draws a progress bar per origin being backfilled (a terminal).
    pub fn show_bars(&mut self) {
        self.bars = Some(Bars::new());
    }

    /// Every redial round, with what this device holds and the most any
    /// peer holds of each origin (read once for lag and bars): moves the bars.
    pub fn round(&mut self, held: &[(String, i64)], claims: &BTreeMap<String, i64>) {
        if let Some(bars) = &mut self.bars {
            let claims: Vec<(String, i64)> = claims.iter().map(|(o, s)| (o.clone(), *s)).collect();
            bars.update(held, &claims);
        }
    }

    /// A protocol event.
    pub fn event(&mut self, e: &Event, store: &SqlStore) {
        match e {
            Event::Applied {
                origin,
                count,
                tables,
                ..
            } => {
                self.progress.applied(origin, *count);
                if let Some(m) = self.metrics.clone() {
                    for (table, n) in tables {
                        let counter = if self.shared(table, store) {
                            &m.shared_received
                        } else {
                            &m.state_received
                        };
                        counter.inc_by(*n as u64);
                    }
                }
            }
            Event::DeadLetter { .. } | Event::ApplyFailed { .. } => {
                if let Some(m) = &self.metrics {
                    m.broadcast_failures.inc();
                }
            }
            Event::Restored { .. } => self.count(|m| &m.restores),
            Event::PeerRestored { .. } => self.count(|m| &m.peer_restores),
            Event::TwoCopies { .. } => self.count(|m| &m.copies),
            _ => {}
        }
    }

    /// Adds one to the counter `which` picks, when metrics are served.
    fn count(&self, which: impl Fn(&Metrics) -> &Counter) {
        if let Some(m) = &self.metrics {
            which(m).inc();
        }
    }

    /// A message about to be sent: a page's changes count as sent.
    pub fn sent(&mut self, payload: &Payload, store: &SqlStore) {
        let (Some(m), Payload::Page { changes, .. }) = (self.metrics.clone(), payload) else {
            return;
        };
        for c in changes {
            let counter = if self.shared(&c.tbl, store) {
                &m.shared_sent
            } else {
                &m.state_sent
            };
            counter.inc();
        }
    }

    /// A call into the node took `elapsed` and produced `out`: an apply if
    /// it applied changes, else building pages if it sent any.
    pub fn timed(&self, elapsed: Duration, out: &[Output]) {
        let Some(m) = &self.metrics else {
            return;
        };
        let applied = out
            .iter()
            .any(|o| matches!(o, Output::Event(Event::Applied { .. })));
        let paged = out.iter().any(|o| {
            matches!(o, Output::Send { env, .. } if matches!(env.payload, Payload::Page { .. }))
        });
        if applied {
            m.apply_duration.observe(elapsed.as_secs_f64());
        } else if paged {
            m.broadcast_duration.observe(elapsed.as_secs_f64());
        }
    }

    /// Every few seconds: a progress line per origin that moved, and the
    /// gauges (connected peers, pending pulls, lag per origin, parked and
    /// quarantined counts); between them, at once when a backfill caught up
    /// (see `progress`).
    pub fn report(&mut self, now_ms: u64, me: &str, store: &SqlStore, node: &Node) {
        let due = self.progress.due(now_ms);
        if !due && !self.progress.moved() {
            return;
        }
        if let Err(e) = self.try_report(now_ms, due, me, store, node) {
            tracing::warn!(device = %me, error = %e, "reading progress");
        }
    }

    fn try_report(
        &mut self,
        now_ms: u64,
        due: bool,
        me: &str,
        store: &SqlStore,
        node: &Node,
    ) -> Result<(), StoreError> {
        let held = store.watermarks()?;
        let peers = node.peer_states();
        let claims: Vec<(String, i64)> = crate::lag::claims(&peers).into_iter().collect();
        if !self.progress.caught_up(&held, &claims) && !due {
            return Ok(());
        }
        for line in self.progress.report(now_ms, &held, &claims) {
            tracing::info!(device = %me, "progress {line}");
        }
        let Some(m) = &self.metrics else {
            return Ok(());
        };
        m.connected
            .set(peers.iter().filter(|p| p.connected).count() as i64);
        m.retrying.set(node.pending_pulls() as i64);
        for (origin, claim) in &claims {
            let have = held
                .iter()
                .find(|(o, _)| o == origin)
                .map_or(0, |(_, s)| *s);
            m.lag
                .get_or_create(&vec![("origin".to_string(), origin.clone())])
                .set((claim - have).max(0));
        }
        let count =
            |sql: &str| store.sql(store.lib.conn.query_row(sql, [], |r| r.get::<_, i64>(0)));
        m.parked.set(count("SELECT count(*) FROM sdsync_parked")?);
        m.quarantined
            .set(count("SELECT count(*) FROM sdsync_quarantine")?);
        // A library whose format-6 upgrade an app's lock put off has no
        // `sdsync_kept` yet.
        if store.sql(crate::library::table_exists(&store.lib.conn, "sdsync_kept"))? {
            m.kept.set(count("SELECT count(*) FROM sdsync_kept")?);
        }
        let mut mismatches: BTreeMap<String, i64> =
            peers.iter().map(|p| (p.device.clone(), 0)).collect();
        let differences = crate::sqlstore::syncdb::peer_schemas(&store.sync);
        for (peer, _) in differences? {
            *mismatches.entry(peer).or_default() += 1;
        }
        // Peers no longer paired drop out.
        m.schema_mismatches.clear();
        for (peer, n) in mismatches {
            m.schema_mismatches
                .get_or_create(&vec![("peer".to_string(), peer)])
                .set(n);
        }
        Ok(())
    }

    /// Whether `table` is shared (reloading the classes once for a table
    /// not seen before).
    fn shared(&mut self, table: &str, store: &SqlStore) -> bool {
        if !self.classes.contains_key(table)
            && let Ok(layouts) = store.schema()
        {
            self.classes = layouts.into_iter().map(|l| (l.table, l.class)).collect();
        }
        self.classes.get(table).is_some_and(|c| c == "shared")
    }
}
