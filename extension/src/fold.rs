//! The log of this device's own updates, and its fold into `sdsync_versions`.
//!
//! ```sql
//! UPDATE lean SET a = a + 1;      -- the update trigger appends one sdsync_log row per row
//! SELECT sdsync_fold();           -- moves them into sdsync_versions (readers do it first)
//! ```
//!
//! Why a log: a captured UPDATE used to rewrite the row's version and move its
//! `(origin, seq)` index entry in the writer's transaction, most of a bulk
//! update's cost (README "Performance", sessions 25–27). Appending to a table
//! keyed by the sequence number costs a third of that. The log is part of the
//! device's state like the versions (same file, same transaction, restored
//! with it); it holds each update's `(seq, tbl, rid, mask, hlc)`, for an owned
//! row the mask of the version group it moves.
//!
//! Folding raises the clock row to the entries' last number and clock,
//! writes each entry into `sdsync_versions` as the update trigger once did,
//! in sequence order, and deletes them (three statements). An
//! entry whose row was deleted after it (no version left: the aggregate over
//! none is NULL) or deleted and created again under the same rowid (a version
//! of this device numbered above it) is dropped: the tombstone or the new row
//! already describes the row. The statements need not commit together: a
//! clock raised over entries still in the log says nothing the log does not
//! (the watermark counts it, and readers fold first), and entries folded but
//! not yet deleted fold again to the same versions (an entry is dropped only
//! for a version numbered above it).
//!
//! Everything that reads versions or the clock folds first: apply (before
//! its first change after anyone wrote), `sdsync_changes`, schema repairs,
//! tracking and identity changes, and the syncer before it reads its own
//! changes or clock. Until then a reader would see the rows' older versions.

use crate::ffi::{Db, SqlError, Value};

/// What format 10 added (run by `store::ensure` and by `track::upgrade`).
/// The watermark view counts the log: its numbers are issued (and
/// committed) before they are folded. It also calls `sdsync_logging()`,
/// which no older extension has: a syncer still running one would neither
/// fold nor serve the log, yet vouch for it through this view, so its reads
/// of the view fail instead (its writes fail on `sdsync_next_stamp`).
pub const FORMAT_10: &str = "
CREATE TABLE IF NOT EXISTS sdsync_log(
  seq INTEGER PRIMARY KEY,
  tbl INTEGER NOT NULL,
  rid INTEGER NOT NULL,
  mask INTEGER NOT NULL,
  hlc INTEGER NOT NULL);
DROP VIEW IF EXISTS sdsync_watermarks;
CREATE VIEW sdsync_watermarks(origin, seq) AS
  SELECT o.uuid, CASE WHEN o.id = (SELECT value FROM sdsync_meta WHERE key = 'origin')
                      THEN max((SELECT seq FROM sdsync_clock),
                               coalesce((SELECT max(seq) FROM sdsync_log), 0))
                      ELSE o.complete END
  FROM sdsync_origins o WHERE sdsync_logging();
";

/// Folds the whole log (see the module docs); returns how many entries it
/// folded. A library whose format-10 upgrade is still pending has no log:
/// nothing to fold.
pub fn fold(db: Db) -> Result<i64, SqlError> {
    fold_some(db, None)
}

/// Folds the oldest `limit` entries, or all. The syncer folds a large log in
/// bounded transactions, so no app writer waits behind one long fold.
pub fn fold_some(db: Db, limit: Option<i64>) -> Result<i64, SqlError> {
    match db.query_i64("SELECT EXISTS (SELECT 1 FROM sdsync_log)", &[]) {
        Ok(Some(0)) => return Ok(0),
        Ok(_) => {}
        Err(e) if e.to_string().contains("no such table") => return Ok(0),
        Err(e) => return Err(e),
    }
    let upto = Value::Integer(match limit {
        None => i64::MAX,
        Some(n) => db
            .query_i64(
                "SELECT max(seq) FROM (SELECT seq FROM sdsync_log ORDER BY seq LIMIT ?1)",
                &[Value::Integer(n.max(1))],
            )?
            .unwrap_or(0),
    });
    // Numbers and clocks rise together in the log: its last entry has both.
    db.prepare(
        "UPDATE sdsync_clock SET seq = max(sdsync_clock.seq, l.seq), \
         hlc = max(sdsync_clock.hlc, l.hlc) \
         FROM (SELECT seq, hlc FROM sdsync_log WHERE seq <= ?1 ORDER BY seq DESC LIMIT 1) l",
    )?
    .run(std::slice::from_ref(&upto))?;
    db.prepare(FOLD)?.run(std::slice::from_ref(&upto))?;
    db.prepare("DELETE FROM sdsync_log WHERE seq <= ?1")?
        .run(&[upto])?;
    Ok(db.changes())
}

/// Writes the log's entries up to `?1` into `sdsync_versions`, in sequence
/// order, as the update trigger once wrote each (see the module docs for
/// the entries it drops).
const FOLD: &str = "INSERT INTO sdsync_versions(tbl, rid, mask, origin, seq, hlc)
  SELECT l.tbl, l.rid, l.mask, m.value, l.seq, l.hlc
  FROM sdsync_log l, sdsync_meta m
  WHERE l.seq <= ?1 AND m.key = 'origin'
    AND (SELECT max(+v.origin = m.value AND +v.seq > l.seq) FROM sdsync_versions v
         WHERE v.tbl = l.tbl AND v.rid = l.rid) = 0
  ORDER BY l.seq
  ON CONFLICT(tbl, rid, mask) DO UPDATE SET
    origin = excluded.origin, seq = excluded.seq, hlc = excluded.hlc";
