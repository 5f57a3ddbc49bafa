//! Room for the app's writers: pauses between the syncer's write
//! transactions while it applies page after page.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use sdsync_syncer::room::Room;
//! let mut room = Room::default();
//! let t = Instant::now();
//! room.app_committed(t);
//! // 50 ms of back-to-back applies while an app writes: pause.
//! room.worked(t, t + Duration::from_millis(50));
//! assert_eq!(room.pause(t + Duration::from_millis(50)), Some(Duration::from_millis(26)));
//! ```
//!
//! SQLite gives the write lock to whoever asks when it is free; a writer that
//! found it taken sleeps in its busy handler at growing intervals (1, 2, 5, …,
//! 25 ms, then 50 and 100 ms) and rarely wakes between two of the syncer's
//! transactions when they follow each other directly: during a backfill an
//! app's one-row commit waited 1.4 s (p99). So after a run of back-to-back
//! work the daemon stops taking the next page for [`GAP`], long enough that
//! a waiting writer's next retry falls inside it while its intervals are at
//! most 25 ms. While an app has committed recently the runs are short
//! ([`RUN_WHILE_APP_WRITES`]), pages are not gathered into one transaction
//! and a page applies in parts whose run is counted the same way
//! (`sqlstore::split`: a page alone held the lock 35–70 ms); otherwise runs
//! are long ([`RUN`]), so that a backfill with no app writing gives up about
//! 3% and an app's first write waits at most about a second.

use std::time::{Duration, Instant};

/// The pause.
pub const GAP: Duration = Duration::from_millis(26);
/// Work before a pause while an app writes.
pub const RUN_WHILE_APP_WRITES: Duration = Duration::from_millis(40);
/// Work before a pause otherwise.
pub const RUN: Duration = Duration::from_millis(1_000);
/// Handling shorter than this (an acknowledgement, a Hello) is not work.
const MIN_WORK: Duration = Duration::from_millis(1);
/// How long after its last commit an app counts as writing.
const APP_WRITES_FOR: Duration = Duration::from_secs(2);

/// See the module docs.
#[derive(Default, Debug)]
pub struct Room {
    /// When the current run of back-to-back work began.
    run_from: Option<Instant>,
    /// When the last piece of work ended.
    last_end: Option<Instant>,
    /// When another connection was last seen committing.
    app_at: Option<Instant>,
    /// When the last pause ended: work before it was counted already (a
    /// page applied in parts paused between them).
    paused_until: Option<Instant>,
}

impl Room {
    /// Another connection committed (its `data_version` moved).
    pub fn app_committed(&mut self, now: Instant) {
        self.app_at = Some(now);
    }

    /// The daemon worked from `start` to `end` (handled a message that
    /// touched the database). Work that starts a gap's length after the
    /// previous ended begins a new run: the app had its chance.
    pub fn worked(&mut self, start: Instant, end: Instant) {
        let start = self.paused_until.map_or(start, |p| p.max(start));
        if end.saturating_duration_since(start) < MIN_WORK {
            return;
        }
        let fresh = self
            .last_end
            .is_none_or(|last| start.saturating_duration_since(last) >= GAP);
        if fresh || self.run_from.is_none() {
            self.run_from = Some(start);
        }
        self.last_end = Some(end);
    }

    /// Whether work that began at `from` (or the run it is part of) may go
    /// on at `now`: pages gathered into one transaction stop here.
    pub fn has_room(&self, from: Instant, now: Instant) -> bool {
        let from = self.run_from.map_or(from, |r| r.min(from));
        now.saturating_duration_since(from) < self.run(now)
    }

    /// How long to wait before the next work, if the run is long enough.
    pub fn pause(&mut self, now: Instant) -> Option<Duration> {
        let from = self.run_from?;
        if now.saturating_duration_since(from) < self.run(now) {
            return None;
        }
        self.run_from = None;
        self.last_end = None;
        self.paused_until = Some(now + GAP);
        Some(GAP)
    }

    /// What is left at `now` of the run of work going on (a whole run when
    /// none is: the last work ended a pause's length ago).
    pub fn left(&self, now: Instant) -> Duration {
        let going = self
            .last_end
            .is_some_and(|last| now.saturating_duration_since(last) < GAP);
        let used = match self.run_from {
            Some(from) if going => now.saturating_duration_since(from),
            _ => Duration::ZERO,
        };
        self.run(now).saturating_sub(used)
    }

    /// Whether an app has committed recently: the syncer's write
    /// transactions are kept short (`sqlstore::split`), and not gathered.
    pub fn app_writes(&self, now: Instant) -> bool {
        self.app_at
            .is_some_and(|at| now.saturating_duration_since(at) < APP_WRITES_FOR)
    }

    /// How long a run may last at `now`.
    fn run(&self, now: Instant) -> Duration {
        if self.app_writes(now) {
            RUN_WHILE_APP_WRITES
        } else {
            RUN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t: Instant, n: u64) -> Instant {
        t + Duration::from_millis(n)
    }

    #[test]
    fn light_messages_are_not_work() {
        let mut room = Room::default();
        let t = Instant::now();
        room.app_committed(t);
        for i in 0..1_000 {
            let at = t + Duration::from_micros(i * 200);
            room.worked(at, at + Duration::from_micros(100));
        }
        assert_eq!(room.pause(ms(t, 200)), None);
    }

    #[test]
    fn short_runs_need_no_pause() {
        let mut room = Room::default();
        let t = Instant::now();
        room.app_committed(t);
        room.worked(t, ms(t, 30));
        assert_eq!(room.pause(ms(t, 30)), None);
        // A gap of its own: the next run starts afresh (30 + 30 ms would be
        // a run of 90 ms, more than RUN_WHILE_APP_WRITES).
        room.worked(ms(t, 60), ms(t, 90));
        assert_eq!(room.pause(ms(t, 90)), None);
    }

    #[test]
    fn back_to_back_work_pauses_sooner_while_an_app_writes() {
        let mut room = Room::default();
        let t = Instant::now();
        for i in 0..10 {
            room.worked(ms(t, i * 10), ms(t, i * 10 + 10));
        }
        assert_eq!(room.pause(ms(t, 100)), None, "no app: a long run");
        room.app_committed(ms(t, 100));
        room.worked(ms(t, 100), ms(t, 110));
        assert_eq!(room.pause(ms(t, 110)), Some(GAP));
        room.worked(ms(t, 140), ms(t, 150));
        assert_eq!(room.pause(ms(t, 150)), None, "a new run after the pause");
    }

    /// Pages gathered into one transaction stop where a run would pause:
    /// counted from the run's start, or from the gathering's if none runs.
    #[test]
    fn gathering_stops_where_the_run_ends() {
        let mut room = Room::default();
        let t = Instant::now();
        assert!(room.has_room(t, ms(t, 999)));
        assert!(!room.has_room(t, ms(t, 1_000)));
        room.worked(t, ms(t, 20));
        room.app_committed(ms(t, 20));
        assert!(room.has_room(ms(t, 20), ms(t, 39)));
        assert!(!room.has_room(ms(t, 30), ms(t, 40)), "the run began at 0");
    }

    /// A page applied in parts paused between them: counted as a whole
    /// afterwards (from the message's start), only what followed the pause
    /// is the new run.
    #[test]
    fn work_before_a_pause_is_not_counted_again() {
        let mut room = Room::default();
        let t = Instant::now();
        room.app_committed(t);
        room.worked(t, ms(t, 40));
        assert_eq!(room.pause(ms(t, 40)), Some(GAP));
        // The last part (66–76 ms) is counted only with the whole message.
        room.worked(t, ms(t, 76));
        assert_eq!(room.pause(ms(t, 76)), None, "10 ms since the pause");
        assert_eq!(room.left(ms(t, 76)), Duration::from_millis(30));
    }

    #[test]
    fn what_is_left_of_a_run() {
        let mut room = Room::default();
        let t = Instant::now();
        room.app_committed(t);
        assert_eq!(room.left(t), RUN_WHILE_APP_WRITES, "no run yet");
        room.worked(t, ms(t, 15));
        assert_eq!(room.left(ms(t, 15)), Duration::from_millis(25));
        assert_eq!(room.left(ms(t, 35)), Duration::from_millis(5));
        assert_eq!(room.left(ms(t, 38)), Duration::from_millis(2));
        assert_eq!(
            room.left(ms(t, 15 + 26)),
            RUN_WHILE_APP_WRITES,
            "a pause's length after"
        );
    }

    #[test]
    fn without_an_app_the_pause_comes_once_a_second() {
        let mut room = Room::default();
        let t = Instant::now();
        for i in 0..99 {
            room.worked(ms(t, i * 10), ms(t, i * 10 + 10));
            assert_eq!(room.pause(ms(t, i * 10 + 10)), None);
        }
        room.worked(ms(t, 990), ms(t, 1_000));
        assert_eq!(room.pause(ms(t, 1_000)), Some(GAP));
    }
}
