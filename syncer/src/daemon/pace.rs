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
//! While the largest lag among the peers this device is followed by is above
//! [`TARGET_MS`], the wait per row each app commit captured grows by half
//! per step (from 1 µs, up to `sdsync_core::pace::MAX_PER_ROW_NS`); below
//! half of it, it shrinks by an eighth per step, and ends (acknowledgements
//! come in bursts as the peer gathers pages: a wait that halved swung, and
//! the lag's maximum tripled in a measurement). Per row, so a bulk writer slows as much as one
//! committing row by row, and a person's single edit waits microseconds.
//! Followed by: connected, heard from within [`QUIET_MS`] (a peer that
//! vanished stays "connected" until QUIC's idle timeout), and once within the
//! window since it connected. A peer behind by more than the window when it
//! connects (a new device backfilling, one back from a week offline) is
//! catching up: it paces no one, or a device joining would slow every app
//! writer for the whole backfill; one that falls behind the window while
//! followed counts as the window's length behind. Nor does a device that is
//! catching up itself pace its own apps ([`crate::lag::catching_up`]): its
//! peers lag on its changes then because its syncer is busy applying.
//! The wait is written to the pace file beside the database, which every app
//! connection with the extension reads after its commits
//! (`extension/src/pace.rs`); the word expires a second after it was
//! written, so a syncer that stops paces no one.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sdsync_core::hlc::wall_millis;
use sdsync_core::pace;

use super::Daemon;
use crate::proto::node::PeerState;
use crate::proto::store::Store;

/// The lag a live peer is kept under.
pub const TARGET_MS: u64 = 500;
/// Commits older than this are forgotten; a peer further behind is catching up.
pub const WINDOW_MS: u64 = 10_000;
/// The least time between two changes of the wait.
const STEP_MS: u64 = 50;
/// A peer not heard from for this long paces no one (acknowledgements flow
/// while it applies this device's pages).
pub const QUIET_MS: u64 = 5_000;
/// How long a written wait holds (rewritten while it lasts).
const HOLD_MS: u64 = 1_000;
/// Commits seen within this of the last recorded one share its entry.
const GRAIN_MS: u64 = 10;
/// The first wait per row, and the least one (below it the wait ends), in
/// nanoseconds.
const FIRST_NS: u32 = 1_000;
const LEAST_NS: u32 = 250;

/// The controller and the file it writes.
pub struct Pacer {
    file: Option<File>,
    /// `(ms, seq)`: the highest own sequence committed by then, oldest first.
    commits: VecDeque<(u64, i64)>,
    /// The highest own sequence committed before the oldest of `commits`
    /// (at first, when the syncer started): older than the window.
    floor: i64,
    /// Peers within the window once since they connected.
    followed: BTreeSet<String>,
    per_row_ns: u32,
    stepped_ms: u64,
    written_ms: u64,
}

/// What a step changed, for the log.
#[derive(Debug, PartialEq)]
pub enum Paced {
    /// Writers now wait after each commit: the largest lag and its peer.
    Started {
        /// The wait per row written, in nanoseconds.
        per_row_ns: u32,
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
            followed: BTreeSet::new(),
            per_row_ns: 0,
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
        self.forget(now_ms);
    }

    /// Whether a step at `now_ms` would move anything (steps are
    /// [`STEP_MS`] apart), so a caller skips gathering the peers' state.
    pub fn due(&self, now_ms: u64) -> bool {
        now_ms >= self.stepped_ms + STEP_MS
    }

    /// Moves the wait by the lag of the peers following this device `me`,
    /// and keeps the file current.
    pub fn step(&mut self, now_ms: u64, peers: &[PeerState], me: &str) -> Option<Paced> {
        if !self.due(now_ms) {
            return None;
        }
        self.stepped_ms = now_ms;
        self.forget(now_ms);
        let worst = self.worst(now_ms, peers, me);
        self.move_to(now_ms, worst)
    }

    /// A step that counts no peer as behind (this device is catching up
    /// itself): the wait winds down as when every peer keeps up, and the
    /// peers followed stay followed, so pacing comes back once it is caught
    /// up if a peer fell behind meanwhile.
    pub fn rest(&mut self, now_ms: u64) -> Option<Paced> {
        if !self.due(now_ms) {
            return None;
        }
        self.stepped_ms = now_ms;
        self.forget(now_ms);
        self.move_to(now_ms, None)
    }

    /// Moves the wait for the largest lag `worst` (none: no peer behind).
    fn move_to(&mut self, now_ms: u64, worst: Option<(u64, String)>) -> Option<Paced> {
        let before = self.per_row_ns;
        self.per_row_ns = match &worst {
            Some((lag, _)) if *lag > TARGET_MS => {
                (before + before / 2).clamp(FIRST_NS, pace::MAX_PER_ROW_NS)
            }
            Some((lag, _)) if *lag > TARGET_MS / 2 => before,
            _ if before * 7 / 8 < LEAST_NS => 0,
            _ => before * 7 / 8,
        };
        let stale = now_ms >= self.written_ms + HOLD_MS / 4;
        if self.per_row_ns != before || (self.per_row_ns > 0 && stale) {
            self.write(now_ms);
        }
        match (before, self.per_row_ns, worst) {
            (0, per_row_ns, Some((lag_ms, peer))) if per_row_ns > 0 => Some(Paced::Started {
                per_row_ns,
                lag_ms,
                peer,
            }),
            (b, 0, _) if b > 0 => Some(Paced::Ended),
            _ => None,
        }
    }

    /// The largest lag among the peers following this device, and whose.
    fn worst(&mut self, now_ms: u64, peers: &[PeerState], me: &str) -> Option<(u64, String)> {
        let live: Vec<&PeerState> = peers
            .iter()
            .filter(|p| p.connected && p.last_contact_ms + QUIET_MS >= now_ms)
            .collect();
        self.followed
            .retain(|d| live.iter().any(|p| p.device == *d));
        let mut worst = None;
        for p in live {
            let Some(&acked) = p.holds.get(me) else {
                continue;
            };
            let lag = match self.lag(now_ms, acked) {
                Some(lag) => {
                    self.followed.insert(p.device.clone());
                    lag
                }
                None if self.followed.contains(&p.device) => WINDOW_MS,
                None => continue,
            };
            if worst.as_ref().is_none_or(|(w, _)| lag > *w) {
                worst = Some((lag, p.device.clone()));
            }
        }
        worst
    }

    /// Forgets the commits older than the window.
    fn forget(&mut self, now_ms: u64) {
        while let Some(&(at, seq)) = self.commits.front()
            && at + WINDOW_MS < now_ms
        {
            self.floor = seq;
            self.commits.pop_front();
        }
    }

    /// The wait per row now, in nanoseconds.
    #[cfg(test)]
    fn per_row(&self) -> u32 {
        self.per_row_ns
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
        let until = if self.per_row_ns > 0 {
            now_ms + HOLD_MS
        } else {
            0
        };
        if let Some(f) = &self.file
            && let Err(e) = f.write_all_at(&pace::encode(self.per_row_ns, until), 0)
        {
            tracing::warn!(error = %e, "writing the pace file");
        }
        self.written_ms = now_ms;
    }
}

impl Daemon {
    /// Moves the pace of app writers (after an app's commit was seen, when
    /// `committed`, and on the regular round), logging when it starts and ends.
    pub(super) fn pace(&mut self, committed: bool) {
        let now = wall_millis();
        if committed {
            match self.store.clock() {
                Ok((seq, _)) => self.pacer.committed(now, seq),
                Err(e) => tracing::warn!(device = %self.me, error = %e, "reading the own sequence"),
            }
        }
        if !self.pacer.due(now) {
            return;
        }
        // This device catching up itself (a backfill): its peers lag on its
        // changes because its own syncer is busy applying, not because its
        // apps write faster than a link; pacing would slow them for the
        // whole backfill (a user's trial, session 25: 500-row commits took
        // up to 935 ms). No peer counts until it is caught up.
        let paced = if self.catching_up {
            self.pacer.rest(now)
        } else {
            self.pacer.step(now, &self.node.peer_states(), &self.me)
        };
        match paced {
            Some(Paced::Started {
                per_row_ns,
                lag_ms,
                peer,
            }) => tracing::info!(
                device = %self.me,
                %peer,
                lag_ms,
                per_row_ns,
                "pacing app writers: a peer is {lag_ms} ms behind (each commit waits {per_row_ns} ns per row written, and more while it stays behind)"
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

    fn peer(acked: i64, heard_ms: u64) -> PeerState {
        PeerState {
            device: "b".into(),
            connected: true,
            last_contact_ms: heard_ms,
            holds: BTreeMap::from([("me".to_string(), acked)]),
            refused: None,
        }
    }

    /// Commits of 1,000 changes every 100 ms from 0 to 0.9 s.
    fn pacer() -> Pacer {
        let mut p = Pacer::with_file(None, 0);
        for t in 0..10 {
            p.committed(t * 100, (t as i64 + 1) * 1000);
        }
        p
    }

    #[test]
    fn a_peer_falling_behind_paces_writers_until_it_follows_again() {
        let mut p = pacer();
        // At 1 s the peer lacks what was committed from 0.3 s on.
        let started = p.step(1_000, &[peer(3000, 1_000)], "me");
        assert!(
            matches!(started, Some(Paced::Started { lag_ms: 700, .. })),
            "{started:?}"
        );
        assert_eq!(p.per_row(), FIRST_NS);
        assert_eq!(p.step(1_060, &[peer(3000, 1_000)], "me"), None);
        assert_eq!(p.per_row(), FIRST_NS * 3 / 2);
        // Caught up: the wait shrinks by an eighth a step (so it does not
        // swing with a lag that acknowledgements report in bursts), then ends.
        let mut t = 1_060;
        let ended = loop {
            t += STEP_MS;
            let before = p.per_row();
            match p.step(t, &[peer(10_000, t)], "me") {
                Some(Paced::Ended) => break t,
                other => assert_eq!((other, p.per_row()), (None, before * 7 / 8)),
            }
        };
        assert_eq!(ended, 1_060 + 14 * STEP_MS);
        assert_eq!(p.per_row(), 0);
    }

    #[test]
    fn resting_winds_the_wait_down_and_keeps_the_peers_followed() {
        let mut p = pacer();
        assert!(p.step(1_000, &[peer(3000, 1_000)], "me").is_some());
        // This device catches up itself: no peer counts, the wait ends.
        let mut t = 1_000;
        while p.per_row() > 0 {
            t += STEP_MS;
            p.rest(t);
        }
        // Caught up, the peer it followed is still followed: behind the
        // whole window now, it paces at once.
        t += 11_000;
        let again = p.step(t, &[peer(3000, t)], "me");
        assert!(matches!(again, Some(Paced::Started { .. })), "{again:?}");
    }

    #[test]
    fn a_followed_peer_that_falls_behind_the_window_still_paces() {
        let mut p = pacer();
        assert!(p.step(1_000, &[peer(3000, 1_000)], "me").is_some());
        // No commit since: the old ones are forgotten on the idle rounds,
        // and the peer, still heard from, lags the whole window.
        assert_eq!(p.step(12_000, &[peer(3000, 11_000)], "me"), None);
        assert_eq!(p.per_row(), FIRST_NS * 3 / 2);
        assert!(p.commits.is_empty());
    }

    #[test]
    fn a_peer_catching_up_quiet_or_gone_paces_no_one() {
        let mut p = Pacer::with_file(None, 50_000);
        for t in 0..10 {
            p.committed(t * 100, 50_000 + (t as i64 + 1) * 1000);
        }
        assert_eq!(p.step(5_000, &[peer(10, 5_000)], "me"), None, "catching up");
        assert_eq!(p.step(5_100, &[peer(51_000, 0)], "me"), None, "quiet");
        let mut gone = peer(51_000, 5_100);
        gone.connected = false;
        assert_eq!(p.step(5_200, &[gone], "me"), None, "gone");
        assert_eq!(p.per_row(), 0);
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
