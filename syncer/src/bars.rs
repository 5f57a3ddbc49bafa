//! Progress bars for a backfill when `sdsync run` runs in a terminal: one
//! bar per origin this device is taking, changes held of the most a peer
//! holds, with rate and time to go (`indicatif`).
//!
//! ```no_run
//! use sdsync_syncer::bars::Bars;
//! let mut bars = Bars::new();
//! // every redial round: what this device holds, the most any peer holds
//! bars.update(&[("origin".into(), 1_000)], &[("origin".into(), 50_000)]);
//! ```
//!
//! Not in a terminal, the same progress is a log line every few seconds
//! (`crate::progress`), and `sdsync status` shows it as lag. A bar appears
//! only for a backfill worth watching ([`SHOWN_FROM`] changes behind) and
//! goes when the origin is caught up, so a live syncer's small lags do not
//! flash bars.

use std::collections::BTreeMap;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How far behind an origin must be for a bar to appear.
pub const SHOWN_FROM: i64 = 5_000;

/// The bars on stderr, by origin.
pub struct Bars {
    multi: MultiProgress,
    shown: BTreeMap<String, ProgressBar>,
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl Bars {
    /// Bars drawn on stderr (at most a few times a second).
    pub fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)),
            shown: BTreeMap::new(),
        }
    }

    /// Moves each origin's bar to what this device holds (`held`) of the most
    /// any peer holds (`claims`): a bar starts once an origin is
    /// [`SHOWN_FROM`] behind and finishes when it is caught up.
    pub fn update(&mut self, held: &[(String, i64)], claims: &[(String, i64)]) {
        let holds = |origin: &str| {
            held.iter()
                .find(|(o, _)| o == origin)
                .map_or(0, |(_, s)| *s)
        };
        for (origin, claim) in claims {
            let have = holds(origin);
            let bar = match self.shown.get(origin) {
                Some(bar) => bar,
                None if claim - have >= SHOWN_FROM => {
                    // Whole before it is drawn: its rate counts from here.
                    let bar = ProgressBar::new((*claim).max(0) as u64)
                        .with_position(have.max(0) as u64)
                        .with_prefix(origin.chars().take(8).collect::<String>())
                        .with_style(style());
                    let bar = self.multi.add(bar);
                    self.shown.entry(origin.clone()).or_insert(bar)
                }
                None => continue,
            };
            bar.set_length((*claim).max(have).max(0) as u64);
            bar.set_position(have.max(0) as u64);
        }
        self.shown.retain(|origin, bar| {
            let caught_up = bar.position() >= bar.length().unwrap_or(0)
                || !claims.iter().any(|(o, _)| o == origin);
            if caught_up {
                bar.finish_and_clear();
            }
            !caught_up
        });
    }
}

/// `origin8 [#####>-----] 120000/1000000 changes (12%), 21s to go`.
fn style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos}/{len} changes ({percent}%), {eta} to go",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("#>-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_shows_for_a_large_lag_only_and_goes_when_caught_up() {
        let mut bars = Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            shown: BTreeMap::new(),
        };
        let o = |n: i64| vec![("o".to_string(), n)];
        bars.update(&o(0), &o(SHOWN_FROM - 1));
        assert!(bars.shown.is_empty(), "a small lag shows no bar");
        bars.update(&o(0), &o(20_000));
        assert_eq!(bars.shown["o"].length(), Some(20_000));
        bars.update(&o(15_000), &o(20_000));
        assert_eq!(bars.shown["o"].position(), 15_000);
        bars.update(&o(20_000), &o(20_000));
        assert!(bars.shown.is_empty(), "caught up: the bar goes");
    }
}
