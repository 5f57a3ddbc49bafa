//! Backpressure on this device's app writers while a live peer falls behind
//! (issue 9: memory and lag bounded whatever the write rate).
//!
//! ```ignore
//! let mut pacer = Pacer::open(&store.lib.path, own_seq);
//! pacer.committed(now_ms, own_seq);                 // the daemon saw a commit
//! pacer.step(now_ms, &node.peer_states(), &me);     // after commits, and twice a second
//! ```
//!
//! The lag of a peer is the age of this device's oldest change it has not
//! acknowledged, from the commits the daemon saw in the last [`WINDOW_MS`].
//! While the largest lag among connected peers is above [`TARGET_MS`], the
//! wait after each app commit grows by half (from 1 ms, up to
//! `sdsync_core::pace::MAX_DELAY_US`); below half of it, the wait halves, and
//! ends. A peer behind by more than the window (a new device backfilling, one
//! back from a week offline) is catching up, not following: it paces no one,
//! or a device joining would slow every app writer for the whole backfill.
//! The wait is written to the pace file beside the database, which every app
//! connection with the extension reads after its commits (`extension/src/pace.rs`);
//! the word expires a second after it was written, so a syncer that stops
//! paces no one.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sdsync_core::hlc::wall_millis;
use sdsync_core::pace;

use super::Daemon;
use crate::proto::node::PeerState;
use crate::proto::store::{SqlStore, StoreError};

/// The lag a live peer is kept under.
pub const TARGET_MS: u64 = 500;
/// Commits older than this are forgotten; a peer further behind is catching up.
pub const WINDOW_MS: u64 = 10_000;
/// The least time between two changes of the wait.
const STEP_MS: u64 = 50;
/// How long a written wait holds (rewritten while it lasts).
const HOLD_MS: u64 = 1_000;
/// Commits seen within this of the last recorded one share its entry.
const GRAIN_MS: u64 = 10;
/// The first wait, and the least one (below it the wait ends).
const FIRST_US: u32 = 1_000;
const LEAST_US: u32 = 250;

/// The controller and the file it writes.
pub struct Pacer {
    file: Option<File>,
    /// `(ms, seq)`: the highest own sequence committed by then, oldest first.
    commits: VecDeque<(u64, i64)>,
    /// The highest own sequence committed before the oldest of `commits`
    /// (at first, when the syncer started): older than the window.
    floor: i64,
    delay_us: u32,
    stepped_ms: u64,
    written_ms: u64,
}

/// What a step changed, for the log.
#[derive(Debug, PartialEq)]
pub enum Paced {
    /// Writers now wait after each commit: the largest lag and its peer.
    Started {
        wait_us: u32,
        lag_ms: u64,
        peer: String,
    },
    /// Writers no longer wait.
    Ended,
}

impl Pacer {
    /// Opens (creating) the pace file of `database`, whose own sequence is
    /// at `seq`; without a file (a read-only folder) nothing is paced, which
    /// is logged.
    pub fn open(database: &Path, seq: i64) -> Self {
        let path = pace::path(database);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .and_then(|f| f.write_all_at(&[0; 8], 0).map(|()| f));
        let file = match file {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the pace file: app writers are not paced");
                None
            }
        };
        Self::with_file(file, seq)
    }

    fn with_file(file: Option<File>, seq: i64) -> Self {
        Self {
            file,
            commits: VecDeque::new(),
            floor: seq,
            delay_us: 0,
            stepped_ms: 0,
            written_ms: 0,
        }
    }

    /// The daemon saw this device's own sequence at `seq` at `now_ms`.
    pub fn committed(&mut self, now_ms: u64, seq: i64) {
        match self.commits.back_mut() {
            Some((_, last)) if seq <= *last => {}
            Some((at, last)) if now_ms < *at + GRAIN_MS => *last = seq,
            _ => self.commits.push_back((now_ms, seq)),
        }
        while let Some(&(at, seq)) = self.commits.front()
            && at + WINDOW_MS < now_ms
        {
            self.floor = seq;
            self.commits.pop_front();
        }
    }

    /// Moves the wait by the lag of the peers following this device `me`,
    /// and keeps the file current.
    pub fn step(&mut self, now_ms: u64, peers: &[PeerState], me: &str) -> Option<Paced> {
        if now_ms < self.stepped_ms + STEP_MS {
            return None;
        }
        self.stepped_ms = now_ms;
        let worst = peers
            .iter()
            .filter(|p| p.connected)
            .filter_map(|p| Some((self.lag(now_ms, *p.holds.get(me)?)?, &p.device)))
            .max();
        let before = self.delay_us;
        self.delay_us = match worst {
            Some((lag, _)) if lag > TARGET_MS => {
                (before + before / 2).clamp(FIRST_US, pace::MAX_DELAY_US)
            }
            Some((lag, _)) if lag > TARGET_MS / 2 => before,
            _ if before / 2 < LEAST_US => 0,
            _ => before / 2,
        };
        if self.delay_us != before || (self.delay_us > 0 && now_ms >= self.written_ms + HOLD_MS / 4)
        {
            self.write(now_ms);
        }
        match (before, self.delay_us, worst) {
            (0, wait_us, Some((lag_ms, peer))) if wait_us > 0 => Some(Paced::Started {
                wait_us,
                lag_ms,
                peer: peer.clone(),
            }),
            (b, 0, _) if b > 0 => Some(Paced::Ended),
            _ => None,
        }
    }

    /// The wait after each commit now, in microseconds.
    #[cfg(test)]
    fn wait_us(&self) -> u32 {
        self.delay_us
    }

    /// How long ago this device committed the first change a peer holding
    /// its origin up to `acked` lacks: 0 when it lacks none, `None` when it
    /// lacks changes older than the window (catching up).
    fn lag(&self, now_ms: u64, acked: i64) -> Option<u64> {
        if acked < self.floor {
            return None;
        }
        Some(
            self.commits
                .iter()
                .find(|(_, seq)| *seq > acked)
                .map_or(0, |(at, _)| now_ms.saturating_sub(*at)),
        )
    }

    fn write(&mut self, now_ms: u64) {
        let until = if self.delay_us > 0 {
            now_ms + HOLD_MS
        } else {
            0
        };
        if let Some(f) = &self.file
            && let Err(e) = f.write_all_at(&pace::encode(self.delay_us, until), 0)
        {
            tracing::warn!(error = %e, "writing the pace file");
        }
        self.written_ms = now_ms;
    }
}

/// This device's own sequence (the clock row capture moves).
pub fn own_seq(store: &SqlStore) -> Result<i64, StoreError> {
    store.sql(
        store
            .lib
            .conn
            .prepare_cached("SELECT seq FROM sdsync_clock")
            .and_then(|mut stmt| stmt.query_row([], |r| r.get(0))),
    )
}

impl Daemon {
    /// Moves the pace of app writers (after an app's commit was seen, when
    /// `committed`, and on the regular round), logging when it starts and ends.
    pub(super) fn pace(&mut self, committed: bool) {
        let now = wall_millis();
        if committed {
            match own_seq(&self.store) {
                Ok(seq) => self.pacer.committed(now, seq),
                Err(e) => tracing::warn!(device = %self.me, error = %e, "reading the own sequence"),
            }
        }
        match self.pacer.step(now, &self.node.peer_states(), &self.me) {
            Some(Paced::Started {
                wait_us,
                lag_ms,
                peer,
            }) => tracing::info!(
                device = %self.me,
                %peer,
                lag_ms,
                wait_us,
                "pacing app writers: a peer is {lag_ms} ms behind (each commit waits from {} ms)",
                f64::from(wait_us) / 1000.0
            ),
            Some(Paced::Ended) => {
                tracing::info!(device = %self.me, "app writers no longer paced")
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn peer(acked: i64) -> PeerState {
        PeerState {
            device: "b".into(),
            connected: true,
            last_contact_ms: 0,
            holds: BTreeMap::from([("me".to_string(), acked)]),
            refused: None,
        }
    }

    #[test]
    fn a_peer_falling_behind_paces_writers_until_it_follows_again() {
        let mut p = Pacer::with_file(None, 0);
        for t in 0..10 {
            p.committed(t * 100, (t as i64 + 1) * 1000);
        }
        // At 1 s the peer holds what was committed at 0.2 s: 0.7 s behind.
        let started = p.step(1_000, &[peer(3000)], "me");
        assert!(
            matches!(started, Some(Paced::Started { lag_ms: 700, .. })),
            "{started:?}"
        );
        assert_eq!(p.wait_us(), FIRST_US);
        assert_eq!(p.step(1_060, &[peer(3000)], "me"), None);
        assert_eq!(p.wait_us(), FIRST_US * 3 / 2);
        // Caught up: the wait halves, then ends.
        assert_eq!(p.step(1_120, &[peer(10_000)], "me"), None);
        assert_eq!(p.wait_us(), FIRST_US * 3 / 4);
        assert_eq!(p.step(1_180, &[peer(10_000)], "me"), None);
        assert_eq!(p.wait_us(), FIRST_US * 3 / 8);
        assert_eq!(p.step(1_240, &[peer(10_000)], "me"), Some(Paced::Ended));
        assert_eq!(p.wait_us(), 0);
    }

    #[test]
    fn a_peer_catching_up_from_before_the_window_paces_no_one() {
        let mut p = Pacer::with_file(None, 50_000);
        for t in 0..10 {
            p.committed(t * 100, 50_000 + (t as i64 + 1) * 1000);
        }
        assert_eq!(p.step(5_000, &[peer(10)], "me"), None);
        assert_eq!(p.wait_us(), 0);
        let mut gone = peer(51_000);
        gone.connected = false;
        assert_eq!(p.step(5_100, &[gone], "me"), None);
        assert_eq!(p.wait_us(), 0);
    }

    #[test]
    fn commits_older_than_the_window_are_forgotten() {
        let mut p = Pacer::with_file(None, 0);
        p.committed(0, 10);
        p.committed(5, 20);
        p.committed(20_000, 30);
        assert_eq!(p.floor, 20);
        assert_eq!(p.commits, VecDeque::from([(20_000, 30)]));
    }
}
