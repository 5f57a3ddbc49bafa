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
//! nothing logs nothing). Between reports it looks twice a second whether a
//! backfill (an origin seen at least [`BACKFILL`] changes behind) caught up,
//! and then reports at once: the line that says 100 % comes when the backfill
//! ends, not up to 5 s later. `sdsync status` shows the same remainder per
//! peer.

use std::collections::{BTreeMap, BTreeSet};

/// How often the daemon reports.
pub const EVERY_MS: u64 = 5_000;

/// An origin this far behind is being backfilled (a page of changes): when it
/// catches up, that is reported at once. Less, it is a live stream, which
/// reports every [`EVERY_MS`] only.
pub const BACKFILL: i64 = 2_000;

/// Changes applied per origin since the last report.
#[derive(Debug)]
pub struct Progress {
    since: u64,
    applied: BTreeMap<String, u64>,
    /// Origins seen at least [`BACKFILL`] changes behind and not caught up.
    backfilling: BTreeSet<String>,
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
            backfilling: BTreeSet::new(),
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

    /// Whether anything was applied since the last report (only then is an
    /// early report worth looking for).
    pub fn moved(&self) -> bool {
        !self.applied.is_empty()
    }

    /// Between reports: notes the origins being backfilled, and whether one
    /// of them caught up (then report now).
    pub fn caught_up(&mut self, held: &[(String, i64)], claims: &[(String, i64)]) -> bool {
        let mut done = false;
        for origin in self.applied.keys() {
            let have = find(held, origin);
            let total = find(claims, origin);
            if total - have >= BACKFILL {
                self.backfilling.insert(origin.clone());
            } else if have >= total && self.backfilling.remove(origin) {
                done = true;
            }
        }
        done
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

/// What `list` says of `origin` (0: nothing).
fn find(list: &[(String, i64)], origin: &str) -> i64 {
    list.iter()
        .find(|(o, _)| o == origin)
        .map_or(0, |(_, s)| *s)
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

    #[test]
    fn a_backfill_that_caught_up_is_reported_at_once_and_a_live_stream_is_not() {
        let mut p = Progress::new(0);
        let claims = [("a".to_string(), 5_000), ("b".to_string(), 900)];
        p.applied("a", 1_000);
        p.applied("b", 100);
        let held = [("a".to_string(), 1_000), ("b".to_string(), 800)];
        assert!(!p.caught_up(&held, &claims), "a is behind by a backfill");
        p.applied("a", 4_000);
        p.applied("b", 100);
        let held = [("a".to_string(), 5_000), ("b".to_string(), 900)];
        assert!(p.caught_up(&held, &claims), "a caught up");
        let lines = p.report(2_000, &held, &claims);
        assert_eq!(
            lines[0].to_string(),
            "a: 5000 of 5000 changes (100%), 2500/s"
        );
        // b was never a backfill: its catching up waits for the next report.
        p.applied("b", 10);
        let claims = [("b".to_string(), 1_000)];
        assert!(!p.caught_up(&[("b".to_string(), 1_000)], &claims));
        // Nor is a caught-up backfill reported twice.
        p.applied("a", 1);
        assert!(!p.caught_up(&[("a".to_string(), 5_001)], &[("a".to_string(), 5_001)]));
    }
}
