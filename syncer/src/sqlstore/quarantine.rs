//! Changes that cannot be applied here, kept aside in `sdsync_quarantine`.
//!
//! ```sql
//! SELECT id, origin, seq, tbl, pk, reason, attempts FROM sdsync_quarantine;
//! ```
//!
//! A change is quarantined when applying it fails for a reason of its own —
//! a value the column refuses, an app UNIQUE index already taken by another row,
//! a table this device does not track — never for a busy database. The row keeps
//! the whole change (as JSON), its origin, sequence, HLC, table, row, the reason
//! and which peer delivered it, and is written in the transaction that applies
//! the rest of its page (of its part of the page, while an app writes:
//! `split`), which commits before the page's last one advances the watermark,
//! so nothing is lost between "not applied" and "complete". Quarantined changes are retried (the syncer does
//! it on an anti-entropy round when the schema or data changed since the last
//! try; `sdsync quarantine DIR retry` does it on demand); a retry goes through the
//! extension's merge rules, so a change superseded meanwhile changes nothing
//! and just leaves the quarantine. They are also served to peers in pages, so a
//! device syncing from this one still receives them.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params};

use crate::library::{Change, Pk, apply_in};
use crate::proto::message::QuarantineSummary;
use crate::proto::store::{Quarantined, Retried};
use crate::sqlstore::transient;

/// The table, as the extension creates it.
pub use sdsync_core::schema::QUARANTINE_TABLE as SCHEMA;

/// Most changes one automatic retry tries: it holds the write lock meanwhile.
pub const RETRY_BATCH: usize = 500;

/// How many changes are quarantined.
pub fn count(conn: &Connection) -> rusqlite::Result<usize> {
    conn.query_row("SELECT count(*) FROM sdsync_quarantine", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n.max(0) as usize)
}

/// Longest reason carried in a Hello summary.
const SUMMARY_REASON: usize = 200;

/// One quarantined change, for listing.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Its id (for `retry` / `discard`).
    pub id: i64,
    /// Origin device.
    pub origin: String,
    /// Origin sequence.
    pub seq: i64,
    /// Table.
    pub table: String,
    /// Row uuid, typed as its table stores it (a BLOB uuid shows as `x'…'`).
    pub pk: Pk,
    /// Why it did not apply (the last try's reason).
    pub reason: String,
    /// Tries so far.
    pub attempts: i64,
    /// The peer that delivered it.
    pub peer: Option<String>,
    /// When it was first quarantined.
    pub at: String,
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "#{} {} seq {} {} row {} (from {}, {} tries, since {}): {}",
            self.id,
            self.origin,
            self.seq,
            self.table,
            self.pk,
            self.peer.as_deref().unwrap_or("-"),
            self.attempts,
            self.at,
            self.reason
        )
    }
}

/// Creates the table in databases made before it existed.
pub fn ensure(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)
}

/// Whether nothing is quarantined (one index probe).
pub fn is_empty(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT NOT EXISTS (SELECT 1 FROM sdsync_quarantine)")?
        .query_row([], |r| r.get(0))
}

/// Applies `changes` one by one, each under a SAVEPOINT, inside the caller's
/// transaction; a change that fails for a permanent reason is rolled back to its
/// savepoint and quarantined. Returns the applied changes and the quarantined
/// ones; fails (for the caller to roll back) only on a transient error.
pub fn apply_each<'c>(
    tx: &Connection,
    peer: &str,
    changes: &'c [Change],
) -> rusqlite::Result<(Vec<&'c Change>, Vec<Quarantined>)> {
    // The origin's row is created outside any savepoint, so rolling back a
    // failed change cannot take it away under the extension's feet.
    if let Some(first) = changes.first() {
        tx.query_row(
            "SELECT sdsync_mark_complete(?1, 0)",
            [&first.origin],
            |_| Ok(()),
        )?;
    }
    let mut applied = Vec::new();
    let mut quarantined = Vec::new();
    for c in changes {
        tx.execute_batch("SAVEPOINT sdsync_one")?;
        match apply_in(tx, std::slice::from_ref(c)) {
            Ok(()) => {
                tx.execute_batch("RELEASE sdsync_one")?;
                applied.push(c);
            }
            Err(e) if transient(&e) => return Err(e),
            Err(e) => {
                tx.execute_batch("ROLLBACK TO sdsync_one; RELEASE sdsync_one")?;
                let reason = describe(tx, c, &e);
                put(tx, peer, c, &reason)?;
                quarantined.push(Quarantined {
                    seq: c.seq,
                    table: c.tbl.clone(),
                    reason,
                });
            }
        }
    }
    Ok((applied, quarantined))
}

/// Drops quarantined copies of changes that have now applied. A copy is the
/// same change: same origin, number and HLC. Another change under the same
/// number (a restored origin issued it again before it learned of the first)
/// stays quarantined: dropping it lost the first change for good when its
/// origin had lost it too (simulation seed 22677 with whole-folder restores).
pub fn release(tx: &Connection, applied: &[&Change]) -> rusqlite::Result<()> {
    if is_empty(tx)? {
        return Ok(());
    }
    let mut stmt = tx.prepare_cached(
        "DELETE FROM sdsync_quarantine WHERE origin = ?1 AND seq = ?2 AND hlc = ?3",
    )?;
    for c in applied {
        stmt.execute(params![c.origin, c.seq, c.hlc])?;
    }
    Ok(())
}

fn put(tx: &Connection, peer: &str, c: &Change, reason: &str) -> rusqlite::Result<()> {
    let json = serde_json::to_string(c)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    tx.prepare_cached(
        "INSERT INTO sdsync_quarantine(origin, seq, hlc, tbl, pk, reason, peer, change) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT(origin, seq) DO UPDATE SET reason = excluded.reason, \
           attempts = attempts + 1, peer = excluded.peer, \
           tried_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
    )?
    .execute(params![
        c.origin, c.seq, c.hlc, c.tbl, c.pk, reason, peer, json
    ])?;
    Ok(())
}

/// The error as a reason; for a UNIQUE conflict it names the row already
/// holding the value, which is what a user needs to resolve it.
fn describe(conn: &Connection, c: &Change, e: &rusqlite::Error) -> String {
    let full = e.to_string();
    // The extension adds the statement it was running: noise for a user.
    let base = full
        .split(" (while running: ")
        .next()
        .unwrap_or(&full)
        .to_string();
    let Some(cols) = base.split("UNIQUE constraint failed: ").nth(1) else {
        return base;
    };
    match conflicting_row(conn, c, cols) {
        Some(uuid) => format!("{base} (the value is held by row {uuid} of {})", c.tbl),
        None => base,
    }
}

/// The uuid of the row of `c`'s table holding the values `c` carries for the
/// UNIQUE columns `cols` ("t.a, t.b"), best effort.
fn conflicting_row(conn: &Connection, c: &Change, cols: &str) -> Option<String> {
    let spec: String = conn
        .query_row(
            "SELECT spec FROM sdsync_tables WHERE name = ?1",
            [&c.tbl],
            |r| r.get(0),
        )
        .ok()?;
    let spec: sdsync_core::schema::TableSpec = serde_json::from_str(&spec).ok()?;
    let data: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(c.data.as_deref()?).ok()?;
    let mut conds = Vec::new();
    let mut values = Vec::new();
    for col in cols.split(',').map(str::trim) {
        let name = col.rsplit('.').next()?;
        let v = match data.get(name)? {
            serde_json::Value::String(s) => SqlValue::Text(s.clone()),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => SqlValue::Integer(i),
                None => SqlValue::Real(n.as_f64()?),
            },
            serde_json::Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
            _ => return None,
        };
        values.push(v);
        conds.push(format!(
            "{} = ?{}",
            sdsync_core::schema::quote_ident(name),
            values.len()
        ));
    }
    let sql = format!(
        "SELECT CAST({} AS TEXT) FROM {} WHERE {} LIMIT 1",
        sdsync_core::schema::quote_ident(&spec.uuid_column),
        sdsync_core::schema::quote_ident(&c.tbl),
        conds.join(" AND ")
    );
    conn.query_row(&sql, rusqlite::params_from_iter(values), |r| r.get(0))
        .ok()
}

/// Quarantined changes of `origin` in `(after, upto]`, to serve in a page.
pub fn held_between(
    conn: &Connection,
    origin: &str,
    after: i64,
    upto: i64,
) -> rusqlite::Result<Vec<Change>> {
    if is_empty(conn)? {
        return Ok(vec![]);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT change FROM sdsync_quarantine WHERE origin = ?1 AND seq > ?2 AND seq <= ?3 \
         ORDER BY seq",
    )?;
    let texts: Vec<String> = stmt
        .query_map(params![origin, after, upto], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    // A row that does not parse (written by another version) is not served;
    // `list` still shows it.
    Ok(texts
        .iter()
        .filter_map(|t| serde_json::from_str(t).ok())
        .collect())
}

/// Retries quarantined changes inside the caller's transaction: the one with
/// `id`, or up to `limit` of those tried least recently (applied in origin and
/// sequence order, parents first). Those that apply leave the quarantine; the
/// others keep their place with the new reason and one more attempt.
pub fn retry_in(tx: &Connection, id: Option<i64>, limit: usize) -> rusqlite::Result<Retried> {
    let rows: Vec<(i64, String)> = {
        let mut stmt = tx.prepare(
            "SELECT id, change FROM (SELECT id, change, origin, seq FROM sdsync_quarantine \
               WHERE ?1 IS NULL OR id = ?1 ORDER BY coalesce(tried_at, at) LIMIT ?2) \
             ORDER BY origin, seq",
        )?;
        stmt.query_map(params![id, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?
    };
    let mut out = Retried::default();
    for (id, text) in rows {
        let outcome = match serde_json::from_str::<Change>(&text) {
            Err(e) => Err(format!("stored change does not parse: {e}")),
            Ok(c) => {
                tx.execute_batch("SAVEPOINT sdsync_one")?;
                match apply_in(tx, std::slice::from_ref(&c)) {
                    Ok(()) => {
                        tx.execute_batch("RELEASE sdsync_one")?;
                        Ok(())
                    }
                    Err(e) if transient(&e) => return Err(e),
                    Err(e) => {
                        tx.execute_batch("ROLLBACK TO sdsync_one; RELEASE sdsync_one")?;
                        Err(describe(tx, &c, &e))
                    }
                }
            }
        };
        match outcome {
            Ok(()) => {
                tx.execute("DELETE FROM sdsync_quarantine WHERE id = ?1", [id])?;
                out.applied += 1;
            }
            Err(reason) => {
                tx.execute(
                    "UPDATE sdsync_quarantine SET reason = ?2, attempts = attempts + 1, \
                     tried_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1",
                    params![id, reason],
                )?;
                out.kept += 1;
            }
        }
    }
    Ok(out)
}

/// Discards quarantined changes (all, or the one with `id`): the user's explicit
/// decision that this device will never hold them. Returns what was dropped.
pub fn discard(tx: &Connection, id: Option<i64>) -> rusqlite::Result<Vec<Entry>> {
    let gone = list(tx)?
        .into_iter()
        .filter(|e| id.is_none_or(|id| e.id == id))
        .collect::<Vec<_>>();
    tx.execute(
        "DELETE FROM sdsync_quarantine WHERE ?1 IS NULL OR id = ?1",
        [id],
    )?;
    Ok(gone)
}

/// Every quarantined change, oldest first.
pub fn list(conn: &Connection) -> rusqlite::Result<Vec<Entry>> {
    let mut stmt = conn.prepare(
        "SELECT id, origin, seq, tbl, pk, reason, attempts, peer, at \
         FROM sdsync_quarantine ORDER BY id",
    )?;
    stmt.query_map([], |r| {
        Ok(Entry {
            id: r.get(0)?,
            origin: r.get(1)?,
            seq: r.get(2)?,
            table: r.get(3)?,
            pk: r.get(4)?,
            reason: r.get(5)?,
            attempts: r.get(6)?,
            peer: r.get(7)?,
            at: r.get(8)?,
        })
    })?
    .collect()
}

/// Per origin: how many changes are quarantined and the oldest one's reason.
pub fn summary(conn: &Connection) -> rusqlite::Result<Vec<QuarantineSummary>> {
    if is_empty(conn)? {
        return Ok(vec![]);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT origin, count(*), (SELECT reason FROM sdsync_quarantine r \
           WHERE r.origin = q.origin ORDER BY r.id LIMIT 1) \
         FROM sdsync_quarantine q GROUP BY origin ORDER BY origin",
    )?;
    stmt.query_map([], |r| {
        let reason: String = r.get(2)?;
        Ok(QuarantineSummary {
            origin: r.get(0)?,
            count: r.get(1)?,
            reason: truncate(&reason, SUMMARY_REASON),
        })
    })?
    .collect()
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
