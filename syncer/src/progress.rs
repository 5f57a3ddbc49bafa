//! Backfill progress as a person reads it: per origin, how far this device
//! holds it, how far the best-informed peer does, and the rate.
//!
//! ```
//! use sdsync_syncer::progress::Progress;
//! let mut p = Progress::new(0);
//! p.applied("origin-a", 500);
//! let lines = p.report(5_000, &[("origin-a".into(), 500)], &[("origin-a".into(), 1_500)]);
//! assert_eq!(lines[0].to_string(), "origin-a: 500 of 1500 changes (33%), 100/s, about 10 s to go");
//! ```
//!
//! The daemon feeds it every `Applied` event and asks for a report every few
//! seconds; it logs one line per origin that moved (a syncer that applies
//! nothing logs nothing). `sdsync status` shows the same remainder per peer.

use std::collections::BTreeMap;

/// How often the daemon reports.
pub const EVERY_MS: u64 = 5_000;

/// Changes applied per origin since the last report.
#[derive(Debug)]
pub struct Progress {
    since: u64,
    applied: BTreeMap<String, u64>,
}

/// One origin's progress over the last report's window.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// The origin.
    pub origin: String,
    /// How far this device holds it.
    pub held: i64,
    /// How far the best-informed peer holds it (at least `held`).
    pub total: i64,
    /// Changes applied per second over the window.
    pub rate: f64,
}

impl Progress {
    /// Starts counting at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self {
            since: now_ms,
            applied: BTreeMap::new(),
        }
    }

    /// `count` changes of `origin` applied.
    pub fn applied(&mut self, origin: &str, count: usize) {
        *self.applied.entry(origin.to_string()).or_default() += count as u64;
    }

    /// Whether a report is due at `now_ms`.
    pub fn due(&self, now_ms: u64) -> bool {
        now_ms >= self.since + EVERY_MS
    }

    /// One line per origin that moved since the last report, given what this
    /// device holds (`held`) and the most any peer said it holds (`claims`);
    /// starts the next window.
    pub fn report(
        &mut self,
        now_ms: u64,
        held: &[(String, i64)],
        claims: &[(String, i64)],
    ) -> Vec<Line> {
        let secs = (now_ms.saturating_sub(self.since) as f64 / 1000.0).max(0.001);
        self.since = now_ms;
        let find = |list: &[(String, i64)], origin: &str| {
            list.iter()
                .find(|(o, _)| o == origin)
                .map_or(0, |(_, s)| *s)
        };
        std::mem::take(&mut self.applied)
            .into_iter()
            .map(|(origin, n)| {
                let held = find(held, &origin);
                Line {
                    total: find(claims, &origin).max(held),
                    held,
                    rate: n as f64 / secs,
                    origin,
                }
            })
            .collect()
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = if self.total > 0 {
            self.held * 100 / self.total
        } else {
            100
        };
        write!(
            f,
            "{}: {} of {} changes ({pct}%), {:.0}/s",
            self.origin, self.held, self.total, self.rate
        )?;
        let left = self.total - self.held;
        if left > 0 && self.rate > 0.0 {
            write!(f, ", about {:.0} s to go", left as f64 / self.rate)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_origins_that_moved_are_reported_and_the_window_restarts() {
        let mut p = Progress::new(1_000);
        assert!(!p.due(5_999));
        assert!(p.due(6_000));
        p.applied("a", 100);
        p.applied("a", 100);
        p.applied("b", 10);
        let held = [("a".to_string(), 200), ("b".to_string(), 10)];
        let lines = p.report(3_000, &held, &[("a".to_string(), 200)]);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].to_string(), "a: 200 of 200 changes (100%), 100/s");
        assert_eq!(lines[1].total, 10, "no peer claims more than held");
        assert!(p.report(4_000, &held, &[]).is_empty());
    }
}
