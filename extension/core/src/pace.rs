//! Writers paced while a live peer falls behind: the word the syncer writes to
//! `<database>-sdsync-pace` and every app connection with the extension reads
//! after a commit that captured changes.
//!
//! ```
//! use sdsync_core::pace::{decode, encode};
//! let word = encode(4_000, 10_000); // wait 4 ms after each commit until t = 10 s
//! assert_eq!(decode(word, 9_999).as_micros(), 4_000);
//! assert!(decode(word, 10_000).is_zero()); // expired: a syncer that died paces no one
//! ```
//!
//! One aligned 8-byte word, written and read whole with one `pwrite`/`pread`
//! (no torn halves in practice on a local file system, and a torn word could
//! only mean one wrong delay, bounded by [`MAX_DELAY_US`]). It expires, so a
//! syncer that stops or dies while pacing leaves writers at full speed within
//! a second.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Appended to the database's path.
pub const SUFFIX: &str = "-sdsync-pace";

/// The longest wait after one commit, whatever the file says.
pub const MAX_DELAY_US: u32 = 100_000;

/// Bits of the word that hold the delay in microseconds.
const DELAY_BITS: u32 = 20;

/// The pace file of `database`.
pub fn path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(SUFFIX);
    PathBuf::from(name)
}

/// The word for "wait `delay_us` after each commit until `until_ms`" (wall
/// clock, ms since the epoch).
pub fn encode(delay_us: u32, until_ms: u64) -> [u8; 8] {
    let delay = u64::from(delay_us.min(MAX_DELAY_US));
    ((until_ms << DELAY_BITS) | delay).to_le_bytes()
}

/// How long to wait after a commit at `now_ms`: zero once the word expired.
pub fn decode(word: [u8; 8], now_ms: u64) -> Duration {
    let word = u64::from_le_bytes(word);
    let until = word >> DELAY_BITS;
    let delay = (word & ((1 << DELAY_BITS) - 1)).min(u64::from(MAX_DELAY_US));
    if now_ms < until {
        Duration::from_micros(delay)
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_beyond_the_bound_is_cut() {
        let word = encode(5_000_000, 2_000_000_000_000);
        assert_eq!(decode(word, 1).as_micros(), u128::from(MAX_DELAY_US));
    }

    #[test]
    fn an_empty_file_paces_no_one() {
        assert!(decode([0; 8], 1_764_000_000_000).is_zero());
    }

    #[test]
    fn the_file_sits_beside_the_database() {
        assert_eq!(
            path(Path::new("/lib/database.db")),
            PathBuf::from("/lib/database.db-sdsync-pace")
        );
    }
}
