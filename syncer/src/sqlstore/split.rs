//! While an app writes, a page applies in short transactions.
//!
//! ```ignore
//! store.room.borrow_mut().app_committed(Instant::now()); // the daemon saw a commit
//! store.apply(peer, &page_of_2000, Some((origin, seq)))?; // several transactions,
//! // pausing where the run is long; only the last one vouches for `seq`
//! ```
//!
//! A page of 2,000 changes holds the library's write lock for 35–70 ms on this
//! machine kind; an app's commit that arrives meanwhile sleeps in SQLite's
//! busy handler and retries at growing intervals, and when two such pages
//! ran back to back it waited past 100 ms (p99 106–118 ms during a
//! million-entry backfill). So while an app has committed recently (see
//! [`Room::app_writes`](crate::room::Room::app_writes)) a page is applied in
//! parts, one transaction each: the first of [`FIRST_PART`] changes, each
//! next one as large as fits in what is left of the run of work at the pace
//! of the parts before (a part per run rather than a part per few
//! milliseconds: every commit writes the index pages it dirtied to the WAL,
//! and parts of 250 throughout cost the receiver half as much CPU again).
//! Between parts the run is counted as the daemon counts pages: past its
//! length, the syncer pauses for [`GAP`](crate::room::GAP), so the app's
//! next retry finds the lock free.
//!
//! Nothing is claimed early: the watermark is vouched for in the last part's
//! transaction, so a crash between parts leaves parts applied and the page
//! not counted; the page is pulled again and its applied changes are no-ops
//! (a version the row already has). A part refused for a change of its own
//! falls back to change-by-change apply, as a whole page does (quarantine).
//! Pages applied together ([`gather`](super::gather)) are never split: their
//! transaction commits only at `settle`.

use std::time::{Duration, Instant};

use super::SqlStore;

/// The first part while an app writes, before the pace is known: about 4–9
/// ms of apply on this machine kind.
pub const FIRST_PART: usize = 250;
/// The smallest part: a commit costs about as much as a few dozen changes.
const SMALLEST_PART: usize = 50;

impl SqlStore {
    /// How many of the `left` changes of a page the next transaction
    /// applies: all of them, unless an app writes (or [`split_always`]) and
    /// the page is not gathered; then as many as fit in what is left of the
    /// run of work at the pace the parts before went.
    ///
    /// [`split_always`]: SqlStore::split_always
    pub(super) fn part_len(&self, left: usize) -> usize {
        if self.gathering() {
            return left;
        }
        if let Some(rows) = self.split.get() {
            return rows.max(1).min(left);
        }
        let now = Instant::now();
        let room = self.room.borrow();
        if !room.app_writes(now) {
            return left;
        }
        let fits = match self.pace.get() {
            Some(per_change) if !per_change.is_zero() => {
                (room.left(now).as_nanos() / per_change.as_nanos()) as usize
            }
            _ => FIRST_PART,
        };
        fits.max(SMALLEST_PART).min(left)
    }

    /// Applies every page in parts of `rows` changes, whether an app writes
    /// or not (the simulation: its pages are small, and no app commits in
    /// real time); `None` goes back to splitting only while an app writes.
    pub fn split_always(&self, rows: Option<usize>) {
        self.split.set(rows);
    }

    /// A part of `n` changes applied from `started` until now: notes the
    /// pace, and pauses if the run of work is as long as the app's writers
    /// may wait. The daemon's thread sleeps; the network runs on its own
    /// (`main`).
    pub(super) fn make_room(&self, started: Instant, n: usize) {
        let now = Instant::now();
        let took = now.saturating_duration_since(started);
        if let Ok(n) = u32::try_from(n.max(1)) {
            let sample = took / n;
            let pace = self.pace.get().map_or(sample, |p| (p * 3 + sample) / 4);
            self.pace.set(Some(pace));
        }
        let pause = {
            let mut room = self.room.borrow_mut();
            room.worked(started, now);
            room.pause(now)
        };
        if let Some(gap) = pause {
            std::thread::sleep(gap);
        }
    }
}

/// What the pace is kept in: the time one change of a part took.
pub(super) type Pace = Option<Duration>;
