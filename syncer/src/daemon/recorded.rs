//! What the running syncer records in `sync.db` for `sdsync status`, a
//! separate process: the peers' state and since when this device lags.
//!
//! ```ignore
//! // daemon/mod.rs, every redial round:
//! self.record_peers(false);
//! self.track_lag();
//! ```
//!
//! A peer not heard from since this start keeps what the last run recorded
//! of it (its last contact, what it held): rewriting it from this run's
//! empty view told `status` it was "never heard from" and lacked every
//! change, after any restart (a user's trial, session 25).

use std::collections::BTreeMap;

use sdsync_core::hlc::wall_millis;

use super::Daemon;
use crate::proto::node::PeerState;
use crate::proto::store::{SqlStore, Store};
use crate::sqlstore::syncdb;

/// How stale a recorded "last contact" may get before it is written again.
const CONTACT_SLACK_MS: u64 = 5_000;

/// What the last run recorded of each peer, by device (none when `sync.db`
/// cannot be read: logged, and `status` starts from what this run sees).
pub(super) fn earlier(store: &SqlStore, me: &str) -> BTreeMap<String, PeerState> {
    match syncdb::peer_states(&store.sync) {
        Ok(states) => states
            .into_iter()
            .map(|(state, _)| (state.device.clone(), state))
            .collect(),
        Err(e) => {
            tracing::warn!(device = %me, error = %e, "reading the peers' recorded state in sync.db");
            BTreeMap::new()
        }
    }
}

impl Daemon {
    /// Writes the peers' state to `sync.db` for `sdsync status` when it
    /// changed (a last contact only once it is [`CONTACT_SLACK_MS`] stale),
    /// so an idle syncer writes nothing. On the way out every peer is
    /// recorded as disconnected.
    pub(super) fn record_peers(&mut self, stopping: bool) {
        let mut states = self.node.peer_states();
        // Not heard from, or linked without a Hello yet (`connect` notes the
        // contact before any claim arrives).
        for s in states
            .iter_mut()
            .filter(|s| s.last_contact_ms == 0 || s.holds.is_empty())
        {
            if let Some(e) = self.earlier.get(&s.device) {
                s.last_contact_ms = s.last_contact_ms.max(e.last_contact_ms);
                s.holds = e.holds.clone();
            }
        }
        if stopping {
            states.iter_mut().for_each(|s| s.connected = false);
        }
        let changed = states.len() != self.recorded.len()
            || states.iter().zip(&self.recorded).any(|(s, r)| {
                s.device != r.device
                    || s.connected != r.connected
                    || s.holds != r.holds
                    || s.refused != r.refused
                    || s.last_contact_ms > r.last_contact_ms + CONTACT_SLACK_MS
            });
        if !changed && !stopping {
            return;
        }
        match self.store.record_peers(&states, wall_millis()) {
            Ok(()) => self.recorded = states,
            Err(e) => tracing::warn!(device = %self.me, error = %e, "recording peers in sync.db"),
        }
    }

    /// Notes since when this device lags on each origin some peer holds
    /// further, recording it in `sync.db` when that set changes (`status`
    /// shows lag in seconds from it), and moves the progress bars.
    pub(super) fn track_lag(&mut self) {
        let held = match self.store.watermarks() {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(device = %self.me, error = %e, "reading watermarks");
                return;
            }
        };
        let mut peers = self.node.peer_states();
        let claims = crate::lag::claims(&peers);
        if self.behind.update(wall_millis(), &held, &claims)
            && let Err(e) = syncdb::record_behind(&self.store.sync, self.behind.since())
        {
            tracing::warn!(device = %self.me, error = %e, "recording lag in sync.db");
        }
        peers.retain(|p| p.connected);
        let live = peers;
        let node = &self.node;
        self.catching_up =
            crate::lag::catching_up(&held, &crate::lag::claims(&live), |o| node.pulling(o));
        self.seen.round(&held, &claims);
    }
}
