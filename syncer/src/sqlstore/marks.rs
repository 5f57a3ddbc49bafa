//! Verified watermarks: what the syncer itself vouches for, per origin.
//!
//! ```sql
//! -- what the database claims vs what the syncer verified
//! SELECT w.origin, w.seq, v.seq FROM sdsync_watermarks w LEFT JOIN sdsync_verified v USING (origin);
//! ```
//!
//! `sdsync_mark_complete` only ever raises a watermark and anyone with the
//! database open may call it: one wrong call (an app's own copy, a bug) would
//! make this device claim, and serve as complete, changes it never received, and
//! every peer that pulls from it would skip them forever. So the syncer keeps its
//! own record, `sdsync_verified(origin, seq)`, raised only in the transaction
//! that applies a page, and only up to what that page can vouch for (see
//! `Node::on_page`): the **effective** watermark of another origin is
//! `min(sdsync_watermarks.seq, sdsync_verified.seq)`; of this device's own origin
//! it is its clock's sequence. It is what Hellos claim, what pages complete to
//! and where pulls start. When the origin itself reports a last sequence below
//! what we vouch for, the vouched value is cut to what this device can show
//! ([`cut`]).
//!
//! On the first run of a syncer that has this table, the database's watermarks
//! are taken as verified once (they were written by an earlier syncer).

use rusqlite::{Connection, params};

use super::opt_i64;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sdsync_verified(
  origin TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;";

/// Creates `sdsync_verified`, seeding it from the watermarks the first time.
pub fn ensure(conn: &Connection, me: &str) -> rusqlite::Result<()> {
    if crate::library::table_exists(conn, "sdsync_verified")? {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(SCHEMA)?;
    tx.execute(
        "INSERT OR IGNORE INTO sdsync_verified(origin, seq) \
         SELECT origin, seq FROM sdsync_watermarks WHERE origin <> ?1 AND seq > 0",
        [me],
    )?;
    tx.commit()
}

/// The effective watermarks (see the module doc), by origin.
pub fn effective(conn: &Connection, me: &str) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT w.origin, CASE WHEN w.origin = ?1 THEN w.seq \
                ELSE min(w.seq, coalesce(v.seq, 0)) END \
         FROM sdsync_watermarks w LEFT JOIN sdsync_verified v ON v.origin = w.origin \
         ORDER BY w.origin",
    )?;
    stmt.query_map([me], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// The effective watermark of one origin (0 when unknown).
pub fn effective_of(conn: &Connection, me: &str, origin: &str) -> rusqlite::Result<i64> {
    Ok(opt_i64(
        conn,
        "SELECT CASE WHEN w.origin = ?1 THEN w.seq ELSE min(w.seq, coalesce(v.seq, 0)) END \
         FROM sdsync_watermarks w LEFT JOIN sdsync_verified v ON v.origin = w.origin \
         WHERE w.origin = ?2",
        params![me, origin],
    )?
    .unwrap_or(0))
}

/// What the database claims, where it claims more than the syncer verified:
/// `(origin, claimed, verified)`, for `sdsync status`.
pub fn unverified(conn: &Connection, me: &str) -> rusqlite::Result<Vec<(String, i64, i64)>> {
    let mut stmt = conn.prepare(
        "SELECT w.origin, w.seq, coalesce(v.seq, 0) FROM sdsync_watermarks w \
         LEFT JOIN sdsync_verified v ON v.origin = w.origin \
         WHERE w.origin <> ?1 AND w.seq > coalesce(v.seq, 0) ORDER BY w.origin",
    )?;
    stmt.query_map([me], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect()
}

/// Records, inside the apply transaction, that this device holds `origin`
/// completely up to `seq`: in the database's watermark and in the syncer's own.
pub fn vouch(conn: &Connection, origin: &str, seq: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("SELECT sdsync_mark_complete(?1, ?2)")?
        .query_row(params![origin, seq], |_| Ok(()))?;
    conn.prepare_cached(
        "INSERT INTO sdsync_verified(origin, seq) VALUES (?1, ?2) \
         ON CONFLICT(origin) DO UPDATE SET seq = max(seq, excluded.seq)",
    )?
    .execute(params![origin, seq])?;
    Ok(())
}

/// Vouches for no origin but `kept` any more (see `Store::reverify`).
pub fn forget(conn: &Connection, kept: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE sdsync_verified SET seq = 0 WHERE origin <> ?1",
        [kept],
    )?;
    Ok(())
}

/// `origin` itself has issued nothing beyond `issued`, yet we vouch for more (a
/// watermark taken on trust at first open, a forged page). What we vouched for
/// cannot be believed, and `issued` is not proof of holding either: the claim is
/// cut to the highest change of `origin` this device can show (applied or
/// quarantined), and pulled on from there. Returns the old value when it cut.
///
/// A Hello that is merely stale (the origin wrote since, and a peer forwarded
/// those changes first) cuts nothing: those changes are here to show.
pub fn cut(conn: &Connection, origin: &str, issued: i64) -> rusqlite::Result<Option<i64>> {
    let Some(old) = opt_i64(
        conn,
        "SELECT seq FROM sdsync_verified WHERE origin = ?1 AND seq > ?2",
        params![origin, issued],
    )?
    else {
        return Ok(None);
    };
    // Rare (only on a contradiction), so a scan of the origin's changes is fine.
    let shown = opt_i64(
        conn,
        "SELECT max(s) FROM (SELECT max(seq) AS s FROM sdsync_changes WHERE origin = ?1 AND seq <= ?2 \
         UNION ALL SELECT max(seq) FROM sdsync_quarantine WHERE origin = ?1 AND seq <= ?2)",
        params![origin, old],
    )?
    .unwrap_or(0);
    if shown >= old {
        return Ok(None);
    }
    conn.execute(
        "UPDATE sdsync_verified SET seq = ?2 WHERE origin = ?1",
        params![origin, shown],
    )?;
    Ok(Some(old))
}
