//! Whether what a peer holds of this device's own origin is this device's
//! history: a Hello carries the newest changes of the receiver's origin the
//! sender holds, `(seq, hlc)`, and the receiver checks them against its own.
//!
//! ```sql
//! -- on the peer: the newest changes of origin ?1 it holds
//! SELECT v.seq, v.hlc FROM sdsync_versions v JOIN sdsync_origins o ON o.id = v.origin
//!  WHERE o.uuid = ?1 ORDER BY v.seq DESC LIMIT 4;
//! -- on the origin: another change under that number, or one out of HLC order near it
//! SELECT 1 FROM sdsync_versions WHERE origin = <own id> AND seq = ?1 AND hlc <> ?2;
//! ```
//!
//! A change's sequence number and HLC are given together when it is written,
//! and rise together, so a change the peer holds that this device's own
//! history contradicts means two histories under one origin: a whole library
//! folder (`sync.db` with it) restored from a backup elsewhere, then written
//! more than it lost, or a copy of the folder that ran while the original did
//! not. A restored device that wrote less is told apart already (the peer
//! holds numbers it never issued); this is the case where numbers are reused.

use rusqlite::{Connection, params};
use sdsync_core::schema::ISSUED_TABLE;

use super::opt_i64;

/// How many of its own numbers around a peer's sample a device compares.
const WINDOW: i64 = 1000;

/// How long the record of issued numbers is kept: a folder restored from a
/// backup is told apart by its first peer met within this time.
const KEEP_ISSUED_MS: i64 = 90 * 24 * 3600 * 1000;

/// At most how many numbers quarantined as issued twice a Hello names.
const FORKED: usize = 16;

/// Marks a database whose changes were never checked this way as in order
/// only above its sequence now: one that took its own changes back before
/// the extension kept the `monotone_from` mark holds re-issued ones out of
/// order, with no mark (which would read as 0).
///
/// Also prunes the record of issued numbers (`sdsync_issued`, written by the
/// capture triggers) to what [`reuses`] reads: above the mark, and issued
/// within [`KEEP_ISSUED_MS`] of the clock.
pub fn ensure(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(ISSUED_TABLE)?;
    conn.execute(
        "INSERT OR IGNORE INTO sdsync_meta(key, value) \
         SELECT 'monotone_from', seq FROM sdsync_clock",
        [],
    )?;
    conn.execute(
        "DELETE FROM sdsync_issued \
         WHERE seq <= (SELECT value FROM sdsync_meta WHERE key = 'monotone_from') \
            OR hlc < (SELECT hlc FROM sdsync_clock) - (?1 << 16)",
        [KEEP_ISSUED_MS],
    )?;
    Ok(())
}

/// The newest changes of `origin` held here in any form (current versions,
/// tombstones, parked, kept for a newer schema, quarantined), newest first,
/// at most `n`. A change held only parked, kept or quarantined is held all
/// the same: it applies later, and the origin's number is taken (simulation
/// seed 121 with whole-folder restores: a kept change applied after the
/// restored device had issued its number again). Each table is read through
/// its `(origin, seq)` index from the top, so this costs `n` rows per table,
/// not the origin's.
pub fn newest_of(conn: &Connection, origin: &str, n: usize) -> rusqlite::Result<Vec<(i64, i64)>> {
    let mut found = Vec::new();
    let local = "(SELECT id FROM sdsync_origins WHERE uuid = ?1)";
    // A library whose format-6 upgrade an app's lock put off has no
    // `sdsync_kept` yet (the extension checks the same way); every other
    // table here exists from the first format or is the syncer's own.
    let kept = crate::library::table_exists(conn, "sdsync_kept")?;
    for (table, id) in [
        ("sdsync_versions", local),
        ("sdsync_tombstones", local),
        ("sdsync_parked", local),
        ("sdsync_kept", local),
        ("sdsync_quarantine", "?1"),
    ] {
        if table == "sdsync_kept" && !kept {
            continue;
        }
        let sql = format!(
            "SELECT DISTINCT t.seq, t.hlc FROM {table} t \
             WHERE t.origin = {id} ORDER BY t.seq DESC LIMIT ?2"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![origin, n as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for row in rows {
            found.push(row?);
        }
    }
    found.sort_unstable_by(|a, b| b.cmp(a));
    found.dedup();
    found.truncate(n);
    found.extend(forked(conn, origin)?);
    Ok(found)
}

/// The query of [`forked`]. CROSS JOIN keeps the quarantine the outer loop:
/// left to choose (no statistics), SQLite walked every version of the origin
/// to probe an empty quarantine, half a second per Hello in a library of a
/// million rows.
const FORKED_SQL: &str = "WITH fork AS (SELECT DISTINCT v.seq, v.hlc AS held, q.hlc AS refused \
                       FROM sdsync_quarantine q \
                       CROSS JOIN sdsync_versions v \
                         ON v.origin = (SELECT id FROM sdsync_origins WHERE uuid = ?1) \
                        AND v.seq = q.seq AND v.hlc <> q.hlc \
                       WHERE q.origin = ?1 ORDER BY v.seq DESC LIMIT ?2) \
         SELECT seq, held FROM fork UNION SELECT seq, refused FROM fork";

/// Both changes `origin` issued under one number, where one is held here and
/// the other quarantined (issued twice): telling the origin makes it renumber when one
/// of the two is its own current history (it then reaches every peer, and the
/// quarantined change merges as usual on its retry).
fn forked(conn: &Connection, origin: &str) -> rusqlite::Result<Vec<(i64, i64)>> {
    let mut stmt = conn.prepare_cached(FORKED_SQL)?;
    let rows = stmt.query_map(params![origin, FORKED as i64], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    rows.collect()
}

/// The CTEs [`reuses`] and [`outran`] share, for a sample `?1` (seq) and
/// `?3` ([`WINDOW`]): `me` (this device's origin id), `mark` (the
/// `monotone_from` mark) and `own(seq, hlc)`, this device's own current
/// changes above the mark within the window around the sample.
const OWN: &str = "WITH me AS (SELECT value AS id FROM sdsync_meta WHERE key = 'origin'), \
     mark AS (SELECT coalesce((SELECT value FROM sdsync_meta \
                               WHERE key = 'monotone_from'), 0) AS seq), \
     lo AS (SELECT max((SELECT seq FROM mark), ?1 - ?3) AS seq), \
     own(seq, hlc) AS ( \
       SELECT seq, hlc FROM sdsync_versions WHERE origin = (SELECT id FROM me) \
         AND seq > (SELECT seq FROM lo) AND seq <= ?1 + ?3 \
       UNION ALL SELECT seq, hlc FROM sdsync_tombstones WHERE origin = (SELECT id FROM me) \
         AND seq > (SELECT seq FROM lo) AND seq <= ?1 + ?3)";

/// Whether this device's own current changes contradict a peer holding its
/// change `(seq, hlc)`: another change under that number, or, above the
/// `monotone_from` mark (where own numbers and HLCs rise together; the
/// extension keeps it past renumbered and re-issued changes), one numbered
/// below it with a later HLC or above it with an earlier one, within
/// [`WINDOW`] numbers. The window finds a reuse whose very number was
/// superseded here (the app rewrote that row), at a bounded cost per Hello:
/// index range scans of at most `WINDOW` entries. The record of issued
/// numbers (`sdsync_issued`, about one pair a second of writing and one per
/// connection; see `extension/src/functions.rs`, `next_hlc`) finds the rest at
/// any distance: the nearest pair at or below the sample with a later HLC,
/// or at or above it with an earlier one (the pairs rise together, so the
/// nearest ones decide). After a whole folder is restored, its first write
/// is recorded under the first reused number with an HLC later than every
/// lost change, even when the app rewrote each row it wrote since.
pub fn reuses(conn: &Connection, seq: i64, hlc: i64) -> rusqlite::Result<bool> {
    let sql = format!(
        "{OWN} SELECT EXISTS (SELECT 1 FROM sdsync_versions WHERE origin = (SELECT id FROM me) \
                          AND seq = ?1 AND hlc <> ?2) \
             OR EXISTS (SELECT 1 FROM sdsync_tombstones WHERE origin = (SELECT id FROM me) \
                          AND seq = ?1 AND hlc <> ?2) \
             OR EXISTS (SELECT 1 FROM sdsync_parked WHERE origin = (SELECT id FROM me) \
                          AND seq = ?1 AND hlc <> ?2) \
             OR (?1 > (SELECT seq FROM lo) AND EXISTS (SELECT 1 FROM own \
                  WHERE (seq < ?1 AND hlc > ?2) OR (seq > ?1 AND hlc < ?2))) \
             OR (SELECT hlc FROM sdsync_issued WHERE seq > (SELECT seq FROM mark) AND seq <= ?1 \
                  ORDER BY seq DESC LIMIT 1) > ?2 \
             OR (SELECT hlc FROM sdsync_issued WHERE seq > (SELECT seq FROM mark) AND seq >= ?1 \
                  ORDER BY seq LIMIT 1) < ?2"
    );
    let found = opt_i64(conn, &sql, params![seq, hlc, WINDOW])?;
    Ok(found == Some(1))
}

/// Whether this device issued a change numbered at or below `seq` with an
/// HLC above `hlc`, above the `monotone_from` mark: it announced its clock at
/// `(seq, hlc)` once (every change it had issued then was at or below both),
/// so one history cannot have. A whole folder restored from an older copy,
/// whose lost changes each peer superseded, shows it: its first write after
/// the restore is recorded (`sdsync_issued`) under a number the lost history
/// had issued before announcing, with a later HLC. Cost: one seek, and index
/// range scans of at most [`WINDOW`] entries.
pub fn outran(conn: &Connection, seq: i64, hlc: i64) -> rusqlite::Result<bool> {
    let sql = format!(
        "{OWN} SELECT coalesce((SELECT hlc FROM sdsync_issued WHERE seq > (SELECT seq FROM mark) \
                                   AND seq <= ?1 ORDER BY seq DESC LIMIT 1) > ?2, 0) \
             OR EXISTS (SELECT 1 FROM own WHERE seq <= ?1 AND hlc > ?2)"
    );
    let found = opt_i64(conn, &sql, params![seq, hlc, WINDOW])?;
    Ok(found == Some(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::{Library, extension_path};
    use crate::sqlstore::quarantine;

    /// What a Hello costs must not grow with what the library holds: the plan
    /// reads the quarantine first and seeks the versions, never walks them.
    #[test]
    fn forked_reads_the_quarantine_first() {
        let dir = std::env::temp_dir().join(format!("sdsync-lineage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ext = extension_path(None).expect("the extension is built");
        let lib = Library::create(&dir.join("db"), &ext).expect("library");
        quarantine::ensure(&lib.conn).expect("quarantine table");
        let mut stmt = lib
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {FORKED_SQL}"))
            .expect("plan");
        let plan: Vec<String> = stmt
            .query_map(params!["origin", 16], |r| r.get(3))
            .expect("plan rows")
            .collect::<Result<_, _>>()
            .expect("plan rows");
        let first = plan
            .iter()
            .find(|l| l.starts_with("SEARCH") || l.starts_with("SCAN"));
        assert!(
            first.is_some_and(|l| l.starts_with("SEARCH q ")),
            "{plan:#?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
