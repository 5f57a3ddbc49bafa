//! Writers paced while a live peer falls behind: the word the syncer writes to
//! `<database>-sdsync-pace` and every app connection with the extension reads
//! after a commit that captured changes.
//!
//! ```
//! use sdsync_core::pace::{encode, wait};
//! let word = encode(4_000, 10_000); // 4 µs per row written, until t = 10 s
//! assert_eq!(wait(word, 9_999, 1_000).as_millis(), 4); // a 1,000-row commit
//! assert!(wait(word, 10_000, 1_000).is_zero()); // expired: a syncer that died paces no one
//! ```
//!
//! The wait is per row the commit captured, so a bulk writer is slowed as much
//! as one that commits row by row, and a person's single edit waits
//! microseconds. One aligned 8-byte word, written and read whole with one
//! `pwrite`/`pread` (no torn halves in practice on a local file system, and a
//! torn word could only mean one wrong wait, bounded by [`MAX_WAIT_MS`]). It
//! expires, so a syncer that stops or dies while pacing leaves writers at full
//! speed within a second; a word whose expiry lies far ahead (the wall clock
//! stepped back, a corrupt file) counts as expired too.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Appended to the database's path.
pub const SUFFIX: &str = "-sdsync-pace";

/// The most a commit waits, however many rows it wrote.
pub const MAX_WAIT_MS: u64 = 1_000;

/// The most a row costs, in nanoseconds (what the word's field holds).
pub const MAX_PER_ROW_NS: u32 = (1 << PER_ROW_BITS) - 1;

/// How far ahead an expiry may lie and still be believed (the syncer writes
/// one a second ahead).
const AHEAD_MS: u64 = 10_000;

/// Bits of the word that hold the wait per row, in nanoseconds.
const PER_ROW_BITS: u32 = 20;

/// The pace file of `database`.
pub fn path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(SUFFIX);
    PathBuf::from(name)
}

/// The word for "wait `per_row_ns` per captured row after each commit until
/// `until_ms`" (wall clock, ms since the epoch).
pub fn encode(per_row_ns: u32, until_ms: u64) -> [u8; 8] {
    let per_row = u64::from(per_row_ns.min(MAX_PER_ROW_NS));
    ((until_ms << PER_ROW_BITS) | per_row).to_le_bytes()
}

/// The wait per row the word asks for at `now_ms`, in nanoseconds: zero once
/// it expired, or when its expiry cannot be one the syncer wrote.
pub fn per_row_ns(word: [u8; 8], now_ms: u64) -> u64 {
    let word = u64::from_le_bytes(word);
    let until = word >> PER_ROW_BITS;
    if now_ms < until && until <= now_ms.saturating_add(AHEAD_MS) {
        word & u64::from(MAX_PER_ROW_NS)
    } else {
        0
    }
}

/// How long a commit at `now_ms` that captured `rows` rows waits.
pub fn wait(word: [u8; 8], now_ms: u64, rows: u64) -> Duration {
    let ns = per_row_ns(word, now_ms).saturating_mul(rows);
    Duration::from_nanos(ns).min(Duration::from_millis(MAX_WAIT_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_waits_for_its_rows_up_to_the_bound() {
        let word = encode(MAX_PER_ROW_NS + 5, 20_000);
        assert_eq!(per_row_ns(word, 19_000), u64::from(MAX_PER_ROW_NS));
        assert_eq!(wait(word, 19_000, 1).as_nanos(), u128::from(MAX_PER_ROW_NS));
        assert_eq!(wait(word, 19_000, 1_000_000).as_millis(), 1_000);
    }

    #[test]
    fn an_empty_file_or_an_expiry_far_ahead_paces_no_one() {
        assert!(wait([0; 8], 1_764_000_000_000, 1000).is_zero());
        let word = encode(4_000, 1_764_000_000_000 + 60_000);
        assert!(wait(word, 1_764_000_000_000, 1000).is_zero());
    }

    #[test]
    fn the_file_sits_beside_the_database() {
        assert_eq!(
            path(Path::new("/lib/database.db")),
            PathBuf::from("/lib/database.db-sdsync-pace")
        );
    }
}
