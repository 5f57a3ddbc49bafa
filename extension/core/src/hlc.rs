//! Hybrid logical clock (Kulkarni et al.) packed into one sortable 64-bit integer.
//!
//! ```
//! use sdsync_core::hlc::Hlc;
//! let last = Hlc::from_parts(1_000, 7);
//! // The wall clock went backwards: the clock still moves forward.
//! let next = last.send(900);
//! assert_eq!(next, Hlc::from_parts(1_000, 8));
//! assert!(next > last);
//! ```
//!
//! Why one integer: SQLite compares and indexes integers natively, so `ORDER BY hlc`
//! and `max(hlc)` are correct without parsing, and a trigger can compute the next
//! value with plain arithmetic (`max(last + 1, wall << 16)`). The upper 48 bits are
//! milliseconds since the Unix epoch, the lower 16 a logical counter; a counter
//! overflow carries into the millisecond field, which keeps the value strictly
//! increasing (it borrows the next millisecond, as DESIGN.md §2.3 asks).

use std::fmt;

/// Bits reserved for the logical counter.
pub const COUNTER_BITS: u32 = 16;

/// A hybrid logical clock value: `(milliseconds << 16) | counter`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc(u64);

impl Hlc {
    /// The value a wall clock reading alone gives (counter zero).
    pub fn from_wall(ms: u64) -> Self {
        Self(ms << COUNTER_BITS)
    }

    /// Builds a value from its two fields.
    pub fn from_parts(ms: u64, counter: u16) -> Self {
        Self((ms << COUNTER_BITS) | u64::from(counter))
    }

    /// Reads a value stored as a SQLite INTEGER; negative values are not clocks.
    pub fn from_i64(raw: i64) -> Option<Self> {
        u64::try_from(raw).ok().map(Self)
    }

    /// The value as stored in SQLite. Millisecond values below 2^47 (the year
    /// 6429) always fit in a positive i64.
    pub fn as_i64(self) -> i64 {
        self.0 as i64
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> u64 {
        self.0 >> COUNTER_BITS
    }

    /// The logical counter.
    pub fn counter(self) -> u16 {
        (self.0 & 0xffff) as u16
    }

    /// The clock value for a local event, given the last issued value and the
    /// wall clock: `l' = max(l, pt)`, counter `c + 1` when `l` did not move.
    /// In the packed form that is exactly `max(last + 1, wall << 16)`.
    pub fn send(self, wall_ms: u64) -> Self {
        Self(self.0.saturating_add(1).max(wall_ms << COUNTER_BITS))
    }

    /// The clock value after receiving `msg`: strictly above both the last local
    /// value and the message, and never below the wall clock.
    pub fn receive(self, msg: Hlc, wall_ms: u64) -> Self {
        Self(
            self.0
                .max(msg.0)
                .saturating_add(1)
                .max(wall_ms << COUNTER_BITS),
        )
    }

    /// How far this value lies ahead of the wall clock, in milliseconds (0 when
    /// it does not). Used to refuse far-future clocks from peers.
    pub fn ahead_of(self, wall_ms: u64) -> u64 {
        self.millis().saturating_sub(wall_ms)
    }
}

/// Renders `2026-11-22T03:00:00.123Z#5`: UTC time, then the counter.
impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.millis();
        let secs = ms / 1000;
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z#{}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            ms % 1000,
            self.counter()
        )
    }
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Milliseconds since the Unix epoch from the system clock (0 if the clock is
/// set before 1970, which the HLC then absorbs).
pub fn wall_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A step of 1 to `bound` HLC units, drawn from `(seq, hlc, wall)`: how a
/// clock running ahead of the wall clock moves when a syncer starts or a
/// connection issues its first change, so that a whole folder restored from
/// a copy younger than that lead does not issue its lost history's very
/// `(seq, HLC)` pairs again (README, "A restore within the clock skew"). The
/// wall clock is what a restore cannot take back. A fixed mixer (SplitMix64),
/// not a random source: a simulated seed replays the same on every toolchain.
pub fn step(seq: i64, hlc: i64, wall: i64, bound: u64) -> i64 {
    let mut x = 0u64;
    for word in [seq, hlc, wall] {
        x = mix(x ^ word as u64);
    }
    // At most `bound`, which the callers keep far below i64::MAX.
    1 + (x % bound.max(1)) as i64
}

/// SplitMix64's finalizer.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn steps_stay_within_their_bound_and_depend_on_the_wall_clock() {
        let steps: Vec<i64> = (0..64).map(|w| step(7, 1 << 40, w, 2048)).collect();
        assert!(steps.iter().all(|s| (1..=2048).contains(s)), "{steps:?}");
        let distinct: std::collections::BTreeSet<_> = steps.iter().collect();
        assert!(distinct.len() > 60, "{steps:?}");
        assert_eq!(step(7, 1 << 40, 5, 2048), step(7, 1 << 40, 5, 2048));
    }

    #[test]
    fn wall_clock_ahead_resets_counter() {
        let last = Hlc::from_parts(1_000, 42);
        assert_eq!(last.send(2_000), Hlc::from_parts(2_000, 0));
    }

    #[test]
    fn backwards_wall_clock_only_bumps_counter() {
        let last = Hlc::from_parts(5_000, 3);
        let a = last.send(1_000);
        let b = a.send(1_000);
        assert_eq!(a, Hlc::from_parts(5_000, 4));
        assert_eq!(b, Hlc::from_parts(5_000, 5));
    }

    #[test]
    fn counter_overflow_borrows_next_millisecond() {
        let last = Hlc::from_parts(7_000, u16::MAX);
        assert_eq!(last.send(7_000), Hlc::from_parts(7_001, 0));
        assert_eq!(last.send(7_001), Hlc::from_parts(7_001, 0));
        assert_eq!(last.send(7_001).send(7_001), Hlc::from_parts(7_001, 1));
    }

    #[test]
    fn receive_rule_goes_past_the_message() {
        let local = Hlc::from_parts(1_000, 1);
        let msg = Hlc::from_parts(3_000, 9);
        assert_eq!(local.receive(msg, 2_000), Hlc::from_parts(3_000, 10));
        assert_eq!(local.receive(msg, 4_000), Hlc::from_parts(4_000, 0));
        assert_eq!(
            msg.receive(Hlc::from_parts(10, 0), 0),
            Hlc::from_parts(3_000, 10)
        );
    }

    #[test]
    fn renders_as_utc_text() {
        let h = Hlc::from_parts(1_795_316_400_123, 5);
        assert_eq!(h.to_string(), "2026-11-22T03:00:00.123Z#5");
        assert_eq!(
            Hlc::from_parts(0, 0).to_string(),
            "1970-01-01T00:00:00.000Z#0"
        );
    }

    #[test]
    fn drift_is_measured_in_milliseconds() {
        let h = Hlc::from_parts(10_000, 77);
        assert_eq!(h.ahead_of(4_000), 6_000);
        assert_eq!(h.ahead_of(20_000), 0);
    }

    #[test]
    fn i64_round_trip_and_negative_refused() {
        let h = Hlc::from_parts(1_795_323_600_123, 65_535);
        assert_eq!(Hlc::from_i64(h.as_i64()), Some(h));
        assert_eq!(Hlc::from_i64(-1), None);
    }

    proptest! {
        #[test]
        fn send_is_strictly_monotonic(start in 0u64..1u64 << 40, walls in proptest::collection::vec(0u64..1u64 << 24, 1..200)) {
            let mut last = Hlc(start);
            for w in walls {
                let next = last.send(w);
                prop_assert!(next > last);
                prop_assert!(next >= Hlc::from_wall(w));
                last = next;
            }
        }

        #[test]
        fn receive_is_above_both(a in 0u64..1u64 << 50, b in 0u64..1u64 << 50, w in 0u64..1u64 << 30) {
            let r = Hlc(a).receive(Hlc(b), w);
            prop_assert!(r > Hlc(a) && r > Hlc(b));
        }
    }
}
