//! The simulation's random numbers and what a run counts.
//!
//! ```
//! let mut rng = sdsync_tests::sim::Rng::new(7);
//! assert!(rng.below(10) < 10);
//! ```

/// SplitMix64: small, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    /// A generator for a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p` percent.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What a run did (for the report line).
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Messages sent.
    pub sent: u64,
    /// Messages lost.
    pub lost: u64,
    /// Messages duplicated.
    pub duplicated: u64,
    /// Local write transactions.
    pub writes: u64,
    /// Local write transactions rolled back.
    pub rolled_back: u64,
    /// Crashes.
    pub crashes: u64,
    /// Partitions.
    pub partitions: u64,
    /// Dead letters recorded.
    pub dead_letters: u64,
    /// Virtual milliseconds to quiescence after healing.
    pub settle_ms: u64,
    /// Pulls and pages sent (anti-entropy Hellos not counted).
    pub data_msgs: u64,
    /// Local write transactions sdsync refused (deletes leaving children, with
    /// foreign keys off).
    pub refused: u64,
    /// Steps whose statements were interrupted halfway.
    pub interrupted: u64,
    /// App transactions committed in the middle of a syncer step.
    pub meddled: u64,
    /// Changes quarantined for an app UNIQUE conflict between devices.
    pub conflicts: u64,
    /// Rows the simulated user deleted to resolve those conflicts.
    pub resolved: u64,
    /// Devices that upgraded their schema mid-run.
    pub upgrades: u64,
    /// Tables rebuilt by the 12-step procedure.
    pub rebuilds: u64,
    /// Devices restored from a backup of their database.
    pub restores: u64,
    /// Pages that joined another's transaction (`gather.rs`).
    pub gathered: u64,
    /// Gathered transactions rolled back (a page failed among them).
    pub abandoned: u64,
}

impl Report {
    /// Adds another run's counts (for totals over many seeds).
    pub fn add(&mut self, r: &Report) {
        self.sent += r.sent;
        self.lost += r.lost;
        self.duplicated += r.duplicated;
        self.writes += r.writes;
        self.rolled_back += r.rolled_back;
        self.crashes += r.crashes;
        self.partitions += r.partitions;
        self.dead_letters += r.dead_letters;
        self.settle_ms = self.settle_ms.max(r.settle_ms);
        self.data_msgs += r.data_msgs;
        self.refused += r.refused;
        self.interrupted += r.interrupted;
        self.meddled += r.meddled;
        self.conflicts += r.conflicts;
        self.resolved += r.resolved;
        self.upgrades += r.upgrades;
        self.rebuilds += r.rebuilds;
        self.restores += r.restores;
        self.gathered += r.gathered;
        self.abandoned += r.abandoned;
    }
}
