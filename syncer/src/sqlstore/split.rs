//! While an app writes, a page applies in short transactions.
//!
//! ```ignore
//! store.room.borrow_mut().app_committed(Instant::now()); // the daemon saw a commit
//! store.apply(peer, &page_of_2000, Some((origin, seq)))?; // 8 transactions,
//! // pausing where the run is long; only the last one vouches for `seq`
//! ```
//!
//! A page of 2,000 changes holds the library's write lock for 35–70 ms on this
//! machine kind; an app's commit that arrives meanwhile sleeps in SQLite's
//! busy handler and retries at growing intervals, and when two such pages
//! ran back to back it waited past 100 ms (p99 106–118 ms during a
//! million-entry backfill). So while an app has committed recently (see
//! [`Room::app_writes`](crate::room::Room::app_writes)) a page is applied
//! [`PART`] changes per transaction, and between parts the run of work is
//! counted as the daemon counts pages: past its length, the syncer pauses for
//! [`GAP`](crate::room::GAP), so the app's next retry finds the lock free.
//!
//! Nothing is claimed early: the watermark is vouched for in the last part's
//! transaction, so a crash between parts leaves parts applied and the page
//! not counted; the page is pulled again and its applied changes are no-ops
//! (a version the row already has). A part refused for a change of its own
//! falls back to change-by-change apply, as a whole page does (quarantine).
//! Pages applied together ([`gather`](super::gather)) are never split: their
//! transaction commits only at `settle`.

use std::time::Instant;

use super::SqlStore;
use crate::library::Change;

/// Changes per transaction while an app writes: about 4–9 ms of apply.
pub const PART: usize = 250;

impl SqlStore {
    /// The transactions `changes` apply in: one, unless an app writes and the
    /// page is not gathered.
    pub(super) fn parts<'c>(&self, changes: &'c [Change]) -> Vec<&'c [Change]> {
        let part = match self.split.get() {
            Some(rows) => rows.max(1),
            None if self.room.borrow().app_writes(Instant::now()) => PART,
            None => usize::MAX,
        };
        if self.gathering() || changes.len() <= part {
            return vec![changes];
        }
        changes.chunks(part).collect()
    }

    /// Applies every page in parts of `rows` changes, whether an app writes
    /// or not (the simulation: its pages are small, and no app commits in
    /// real time); `None` goes back to splitting only while an app writes.
    pub fn split_always(&self, rows: Option<usize>) {
        self.split.set(rows);
    }

    /// A part applied from `started` until now: pauses if the run of work
    /// is as long as the app's writers may wait. The daemon's thread sleeps;
    /// the network runs on its own (`main`).
    pub(super) fn make_room(&self, started: Instant) {
        let pause = {
            let mut room = self.room.borrow_mut();
            let now = Instant::now();
            room.worked(started, now);
            room.pause(now)
        };
        if let Some(gap) = pause {
            std::thread::sleep(gap);
        }
    }
}
