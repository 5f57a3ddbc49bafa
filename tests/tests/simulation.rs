//! The protocol under deterministic simulation: many seeds, 3–5 devices each.
//!
//! - CI: `cargo test --release -p sdsync-tests --test simulation` runs 500 seeds.
//! - Long run: `SDSYNC_SIM_SEEDS=10000 cargo test --release -p sdsync-tests --test simulation seeds -- --nocapture`
//!   (`SDSYNC_SIM_START` picks the first seed).
//! - Replay one: `SDSYNC_SIM_SEED=123 cargo test --release -p sdsync-tests --test simulation replay -- --nocapture`.
//! - The model includes backups and restores of devices; `SDSYNC_SIM_RESTORES=0`
//!   leaves them out (the model of earlier long runs, see the README);
//!   `SDSYNC_SIM_WHOLE=1` restores whole folders (`sync.db` too) in half of
//!   them (250 seeds of their own run in CI); `SDSYNC_SIM_SHIFT=1` runs
//!   the shifted family of schedules (`sim::Schedules`; 150 seeds of their
//!   own, with whole-folder restores, run in CI).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sdsync_tests::sim::{self, Restores, Schedules};

/// Seeds that ever failed; they run on every test run.
/// (3, 4, 11, 12, 13, 15, 19, 20, 34, 40: cascades during apply and parked changes
/// waiting for rows the app re-created; 3408: a child moved away from a deleted
/// parent; 5856: a stale Hello taken for a forged watermark; 9, 22, 41, 67,
/// 132, 184, 372, 525, 634: restores; 3712, 4152, 4254: a restored device's
/// pull of its own changes ended by a page that did not continue it (a
/// duplicate or an overtaken one), so it stopped taking them back; 2817: a
/// peer left a change out of a page as superseded by one of its own, which
/// its restore then lost; 8557: a busy store outside a page's apply failed
/// the call instead of deferring the page; 406: a change parked under a
/// column's former name, applied after the column was renamed, lost its
/// value (session 22, when the simulation's upgrade began renaming a
/// column); see the README.)
const REGRESSIONS: &[u64] = &[
    3, 4, 9, 11, 12, 13, 15, 19, 20, 22, 34, 40, 41, 67, 132, 184, 372, 525, 634, 3408, 3712, 4152,
    4254, 5856, 2817, 8557, 406,
];

/// Seeds that failed with whole-folder restores (`SDSYNC_SIM_WHOLE=1`) while
/// session 13 worked on them, run that way on every test run. The model's
/// restore took 2 s of virtual time at first and 125 s after, which changes
/// every run after a restore, so each is a run that failed under one of the
/// two, not necessarily the same run. (6, 66, 495, 8557: every change written
/// under a reused number superseded on the restored device, told by the
/// record of issued numbers; 7: the lost changes superseded on the peers,
/// told by the clock announced before; 108, 412: lost changes stamped by a
/// clock peers had pushed ahead; 121: a lost change held only kept for a
/// newer schema; 19, 99, 145: with a 2 s restore (session 18), a clock
/// pushed ahead of the wall clock re-issued the lost pairs until the syncer
/// stepped it at each start; 151, 683: the lost change was the device's
/// last, superseded on every peer since, with every clock it announced
/// older, told by the last changes peers took from it (session 19); 2527,
/// 2572, 2824, 4393, 7528, 8141, 8453, 8732, 9673: the restore went into
/// the app's open connection, whose first change after it fell in the same
/// second as the restored clock and was superseded at once, recorded since
/// session 22 because the clock is below a number that connection issued;
/// 418, 696, 5745: a kept change re-applied under its old number took over
/// the bits of its renumbered copy (session 22's `merge::plan_reapply`
/// before it compared numbers); 5142, 5681, 5806, 6230, 6394, 6563, 6852:
/// the reverse, a kept change re-applied after its renumbered copy had
/// given the row the new number took none of its bits back, leaving a
/// renamed column at the default its first apply gave (`merge::renumbered`,
/// session 23); 9714: a device that had taken its own change back for a
/// column it lacked wrote that column after its upgrade and issued the
/// change again; peers holding the first copy (with the column's default)
/// took the new number but not the column (session 24); 22677: a change a
/// peer gave back to its restored origin was quarantined there, then
/// released when the origin's other change under the same number applied,
/// and lost for good; 23628: a column held at one version as the default
/// on one device and as its value on the others, once the newer change
/// that had held it was lost everywhere (both session 26); see the README,
/// "Backup and restore".)
const WHOLE_REGRESSIONS: &[u64] = &[
    6, 7, 19, 66, 99, 108, 121, 145, 151, 412, 495, 683, 8557, 2527, 2572, 2824, 4393, 7528, 8141,
    8453, 8732, 9673, 418, 696, 5745, 5142, 5681, 5806, 6230, 6394, 6563, 6852, 9714, 22677, 23628,
];

fn restores() -> Restores {
    match (env("SDSYNC_SIM_RESTORES", 1), env("SDSYNC_SIM_WHOLE", 0)) {
        (0, _) => Restores::Off,
        (_, 1) => Restores::Whole,
        _ => Restores::Database,
    }
}

fn devices(seed: u64) -> usize {
    3 + (seed % 3) as usize
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn schedules() -> Schedules {
    match env("SDSYNC_SIM_SHIFT", 0) {
        1 => Schedules::Shifted,
        _ => Schedules::Usual,
    }
}

fn replay_hint(seed: u64, restores: Restores, schedules: Schedules) -> String {
    let model = match restores {
        Restores::Off => "SDSYNC_SIM_RESTORES=0 ",
        Restores::Whole => "SDSYNC_SIM_WHOLE=1 ",
        Restores::Database => "",
    };
    let shift = match schedules {
        Schedules::Shifted => "SDSYNC_SIM_SHIFT=1 ",
        Schedules::Usual => "",
    };
    format!(
        "replay: {model}{shift}SDSYNC_SIM_SEED={seed} cargo test --release -p sdsync-tests --test simulation replay -- --nocapture"
    )
}

#[test]
fn seeds() {
    let count = env("SDSYNC_SIM_SEEDS", 500);
    let start = env("SDSYNC_SIM_START", 0);
    run_seeds(count, start, restores(), schedules());
}

/// Whole-folder restores (`sync.db` with the database) on seeds of their
/// own in every test run since session 19, when the first 1,000 all
/// converged: 250 by default (`SDSYNC_SIM_WHOLE_SEEDS`), from 0.
#[test]
fn whole_folder_seeds() {
    run_seeds(
        env("SDSYNC_SIM_WHOLE_SEEDS", 250),
        0,
        Restores::Whole,
        Schedules::Usual,
    );
}

/// The shifted schedules with whole-folder restores, from seed 10,000 (no
/// overlap with the seeds above): 150 by default (`SDSYNC_SIM_SHIFT_SEEDS`).
#[test]
fn shifted_seeds() {
    run_seeds(
        env("SDSYNC_SIM_SHIFT_SEEDS", 150),
        10_000,
        Restores::Whole,
        Schedules::Shifted,
    );
}

/// Runs `count` seeds from `start` on two threads (`SDSYNC_SIM_THREADS`, so
/// a long run can leave a core free) and fails listing every seed that did
/// not converge, with its replay command.
fn run_seeds(count: u64, start: u64, restores: Restores, schedules: Schedules) {
    let next = AtomicU64::new(start);
    let failures = Mutex::new(Vec::new());
    let totals = Mutex::new(sim::Report::default());
    std::thread::scope(|s| {
        for _ in 0..env("SDSYNC_SIM_THREADS", 2) {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= start + count {
                        break;
                    }
                    match sim::run_schedule(seed, devices(seed), restores, schedules) {
                        Ok(r) => {
                            totals.lock().expect("totals").add(&r);
                        }
                        Err(e) => failures.lock().expect("failures").push(format!(
                            "seed {seed}: {e}\n{}",
                            replay_hint(seed, restores, schedules)
                        )),
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("failures");
    let totals = totals.into_inner().expect("totals");
    println!(
        "simulated {count} seeds from {start}: {totals:?}; {} diverged",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Seeds that failed under the shifted schedules (`SDSYNC_SIM_SHIFT=1`),
/// each with its restores. (793, whole folders: a restored device took back
/// its own change to an entry under another it had deleted since, the
/// change waited for the deleted parent while the entry kept its old
/// values, and peers had evicted it: a reference to a deleted row now
/// evicts a live row in either order, `apply/live.rs`; 1282: a restored
/// device ended without a membership of an entry it had deleted, its
/// watermark covering it; fails on session 19's extension, not traced.
/// See the README, "Backup and restore".)
const SHIFTED_REGRESSIONS: &[(u64, Restores)] =
    &[(793, Restores::Whole), (1282, Restores::Database)];

#[test]
fn shifted_regression_seeds() {
    for &(seed, restores) in SHIFTED_REGRESSIONS {
        if let Err(e) = sim::run_schedule(seed, devices(seed), restores, Schedules::Shifted) {
            panic!(
                "shifted regression seed {seed}: {e}\n{}",
                replay_hint(seed, restores, Schedules::Shifted)
            );
        }
    }
}

#[test]
fn whole_folder_regression_seeds() {
    for &seed in WHOLE_REGRESSIONS {
        if let Err(e) = sim::run_model(seed, devices(seed), Restores::Whole) {
            panic!(
                "whole-folder regression seed {seed}: {e}\n{}",
                replay_hint(seed, Restores::Whole, Schedules::Usual)
            );
        }
    }
}

#[test]
fn regression_seeds() {
    for &seed in REGRESSIONS {
        if let Err(e) = sim::run(seed, devices(seed)) {
            panic!(
                "regression seed {seed}: {e}\n{}",
                replay_hint(seed, restores(), Schedules::Usual)
            );
        }
    }
}

#[test]
fn replay() {
    let Ok(seed) = std::env::var("SDSYNC_SIM_SEED") else {
        return;
    };
    let seed: u64 = seed.parse().expect("SDSYNC_SIM_SEED is a number");
    match sim::run_schedule(seed, devices(seed), restores(), schedules()) {
        Ok(r) => println!("seed {seed}: converged: {r:?}"),
        Err(e) => panic!("seed {seed}: {e}"),
    }
}

#[test]
fn seeds_replay_identically() {
    let a = sim::run(7, 4).map(|r| (r.sent, r.lost, r.writes, r.settle_ms));
    let b = sim::run(7, 4).map(|r| (r.sent, r.lost, r.writes, r.settle_ms));
    assert_eq!(a, b);
}
