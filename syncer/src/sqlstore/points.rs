//! What this device keeps in `sync.db` of other devices' histories to send
//! back to them (points `(seq, HLC)` and lowest numbers), so a device
//! whose folder went back can tell what it lost even when nothing current
//! names it; of its own, where its restores renumbered its changes; and
//! the restores of other devices it verified its claims after.
//!
//! ```no_run
//! # let sync = rusqlite::Connection::open_in_memory().unwrap();
//! use sdsync_syncer::sqlstore::points;
//! points::ensure(&sync).unwrap();
//! points::note_relayed(&sync, "dev-a", 7).unwrap(); // a relay's page of dev-a
//! assert_eq!(points::relayed(&sync, "dev-a").unwrap(), None); // dev-a never took its changes back here
//! ```
//!
//! Two kinds, both sent in the Hello to the device they belong to:
//! - **Taken**: the last change of each page taken from the origin itself
//!   (the last [`TAKEN`] by number). Sent among the samples of its changes
//!   (`yours`), where the reuse check compares them with its history: a whole
//!   folder restored elsewhere from a copy older than that change, which then
//!   wrote under its number again, is told even when the change was superseded
//!   here since and no clock the origin announced covers it (simulation seeds
//!   151 and 683 with whole-folder restores).
//! - **Relayed**: the lowest number of an origin's changes this device
//!   took from other devices since the origin last pulled its own changes
//!   from here (kept only for an origin that ever did: a restored one). Such
//!   a change may be one the origin lost, which the relay held when the
//!   origin took its changes back from it, or which reached the relay only
//!   later: nothing else would ever make the origin ask for it again, since
//!   every watermark covers its number (simulation seed 333, README "Backup
//!   and restore"). The origin keeps where its last restore's renumbering
//!   started (`renumbered`, its own side) and takes its changes back from
//!   here again when that number is at or below it; that pull forgets it.

use rusqlite::{Connection, OptionalExtension, params};

use super::syncdb::relaxed;

/// The tables, created with the rest of `sync.db`'s.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS taken(
  origin TEXT NOT NULL, seq INTEGER NOT NULL, hlc INTEGER NOT NULL, PRIMARY KEY (origin, seq));
CREATE TABLE IF NOT EXISTS relayed(origin TEXT PRIMARY KEY, lowest INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reclaimed_here(origin TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS renumbered(one INTEGER PRIMARY KEY CHECK (one = 1), base INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS restores(device TEXT PRIMARY KEY, base INTEGER NOT NULL);";

/// How many points taken from each origin itself are kept: the restored
/// device's first new changes must not at once push the telling one out.
pub(crate) const TAKEN: i64 = 8;

/// Creates the tables.
pub fn ensure(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)
}

/// A page of `origin` arrived from `origin` itself, its last change `(seq,
/// hlc)`; called before it applies, so a crash after the apply cannot lose
/// what the page brought. Kept [`relaxed`]: written for every such page; a
/// power loss may cost the newest points, and with them the evidence of a
/// restore that reused their numbers.
pub fn note_taken(conn: &Connection, origin: &str, seq: i64, hlc: i64) -> rusqlite::Result<()> {
    relaxed(conn, |conn| {
        conn.prepare_cached(
            "INSERT INTO taken(origin, seq, hlc) VALUES (?1, ?2, ?3) \
             ON CONFLICT(origin, seq) DO UPDATE SET hlc = excluded.hlc",
        )?
        .execute(params![origin, seq, hlc])?;
        conn.prepare_cached(
            "DELETE FROM taken WHERE origin = ?1 AND seq < \
             (SELECT seq FROM taken WHERE origin = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        )?
        .execute(params![origin, TAKEN - 1])?;
        Ok(())
    })
}

/// A page of `origin` arrived from a relay, its lowest change numbered
/// `lowest`; called before it applies. Kept only for an origin that pulled
/// its own changes from here, with the default durability (it is the only
/// trace), and written only when it goes below the number kept, so a
/// relayed live stream costs no write.
pub fn note_relayed(conn: &Connection, origin: &str, lowest: i64) -> rusqlite::Result<()> {
    if !reclaimed_here(conn, origin)? || relayed(conn, origin)?.is_some_and(|l| l <= lowest) {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO relayed(origin, lowest) VALUES (?1, ?2) \
         ON CONFLICT(origin) DO UPDATE SET lowest = min(lowest, excluded.lowest)",
    )?
    .execute(params![origin, lowest])?;
    Ok(())
}

fn reclaimed_here(conn: &Connection, origin: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM reclaimed_here WHERE origin = ?1)")?
        .query_row([origin], |r| r.get(0))
}

/// The points taken from `origin` itself, newest first.
pub fn taken(conn: &Connection, origin: &str) -> rusqlite::Result<Vec<(i64, i64)>> {
    conn.prepare_cached("SELECT seq, hlc FROM taken WHERE origin = ?1 ORDER BY seq DESC")?
        .query_map([origin], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// The lowest number of `origin`'s changes taken from relays since it
/// last pulled its own changes from here.
pub fn relayed(conn: &Connection, origin: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT lowest FROM relayed WHERE origin = ?1")?
        .query_row([origin], |r| r.get(0))
        .optional()
}

/// `origin` pulls its own changes from here (only a restored device does):
/// from now on the lowest of its changes taken from relays is kept, and the
/// one kept so far is forgotten when the pull arrives. The pull starts
/// below it (see `Node::retake`); were the origin to crash before it
/// applied what it is served, its durable list resumes the reclaim from the
/// start, which serves it again.
pub fn reclaiming_here(conn: &Connection, origin: &str) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "INSERT OR IGNORE INTO reclaimed_here(origin) VALUES (?1)",
        [origin],
    )?;
    tx.execute("DELETE FROM relayed WHERE origin = ?1", [origin])?;
    tx.commit()
}

/// This device's restore renumbered every change of its own above `base`:
/// a change of its own numbered at or below it that a peer takes from a
/// relay later is either one it lacks (lost with the restore) or a copy of
/// one it renumbered. The highest such base is kept.
pub fn note_renumbered(conn: &Connection, base: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO renumbered(one, base) VALUES (1, ?1) \
         ON CONFLICT(one) DO UPDATE SET base = max(base, excluded.base)",
        [base],
    )
    .map(|_| ())
}

/// The base kept by [`note_renumbered`], if this device was ever restored.
pub fn renumbered(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT base FROM renumbered", [], |r| r.get(0))
        .optional()
}

/// This device verified its claims again after `device`'s restore that
/// renumbered above `base` (see `Node::on_restores`). The highest is kept;
/// written after the reset it records, so a crash between them costs one
/// more reset, never a claim kept.
pub fn note_restore(conn: &Connection, device: &str, base: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO restores(device, base) VALUES (?1, ?2) \
         ON CONFLICT(device) DO UPDATE SET base = max(base, excluded.base)",
        params![device, base],
    )
    .map(|_| ())
}

/// The restores kept by [`note_restore`], `(device, base)`.
pub fn restores(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    conn.prepare_cached("SELECT device, base FROM restores ORDER BY device")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// Forgets every restore kept (this device's own restore took back what
/// it vouched for since).
pub fn forget_restores(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM restores", []).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().expect("memory db");
        ensure(&conn).expect("tables");
        conn
    }

    #[test]
    fn the_last_points_taken_from_the_origin_itself_are_kept() {
        let conn = db();
        for seq in 1..=20 {
            note_taken(&conn, "a", seq, seq * 10).expect("note");
        }
        let kept = taken(&conn, "a").expect("taken");
        assert_eq!(kept.len(), TAKEN as usize);
        assert_eq!(kept[0], (20, 200));
        assert_eq!(kept[7], (13, 130));
        assert_eq!(relayed(&conn, "a").expect("relayed"), None);
    }

    #[test]
    fn relayed_numbers_are_kept_only_after_the_origin_reclaimed_here() {
        let conn = db();
        note_relayed(&conn, "a", 5).expect("note");
        assert_eq!(relayed(&conn, "a").expect("relayed"), None);
        reclaiming_here(&conn, "a").expect("reclaim");
        note_relayed(&conn, "a", 30).expect("note");
        note_relayed(&conn, "a", 3).expect("note");
        note_relayed(&conn, "a", 31).expect("note");
        assert_eq!(relayed(&conn, "a").expect("relayed"), Some(3));
        assert!(taken(&conn, "a").expect("taken").is_empty());
        reclaiming_here(&conn, "a").expect("reclaim again");
        assert_eq!(relayed(&conn, "a").expect("relayed"), None);
        note_relayed(&conn, "a", 9).expect("note");
        assert_eq!(relayed(&conn, "a").expect("relayed"), Some(9));
    }

    #[test]
    fn the_highest_renumbering_base_is_kept() {
        let conn = db();
        assert_eq!(renumbered(&conn).expect("read"), None);
        note_renumbered(&conn, 1 << 21).expect("note");
        note_renumbered(&conn, 1 << 20).expect("note");
        assert_eq!(renumbered(&conn).expect("read"), Some(1 << 21));
    }

    #[test]
    fn the_highest_restore_of_each_device_is_kept() {
        let conn = db();
        note_restore(&conn, "b", 40).expect("note");
        note_restore(&conn, "a", 7).expect("note");
        note_restore(&conn, "b", 30).expect("note");
        let want = vec![("a".to_string(), 7), ("b".to_string(), 40)];
        assert_eq!(restores(&conn).expect("restores"), want);
    }
}
