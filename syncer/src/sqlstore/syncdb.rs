//! The syncer's own tables in `sync.db`: dead letters, what peers report holding
//! in quarantine, and the last sequence each origin reported itself.
//!
//! ```no_run
//! let sync = sdsync_syncer::sqlstore::syncdb::open("sync.db".as_ref()).unwrap();
//! sdsync_syncer::sqlstore::syncdb::ensure(&sync).unwrap();
//! sdsync_syncer::sqlstore::syncdb::dead_letter(&sync, "peer", "pull of origin o: no answer", "pull after 3", "no answer after 6 attempts").unwrap();
//! ```
//!
//! Dead letters are bounded: one row per `(peer, cause)` — a cause names the
//! kind of failure and its origin, without the changing details — with a count,
//! the first and last time, and the last occurrence's details. A failure that
//! repeats every anti-entropy round adds to a count instead of a row.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::proto::message::{Incarnation, QuarantineSummary};
use crate::proto::node::PeerState;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dead_letters(
  id INTEGER PRIMARY KEY, peer TEXT NOT NULL, cause TEXT NOT NULL,
  what TEXT NOT NULL, reason TEXT NOT NULL, count INTEGER NOT NULL DEFAULT 1,
  at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  last_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  UNIQUE (peer, cause));
CREATE TABLE IF NOT EXISTS peer_quarantine(
  peer TEXT NOT NULL, origin TEXT NOT NULL, count INTEGER NOT NULL, reason TEXT NOT NULL,
  at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  PRIMARY KEY (peer, origin));
CREATE TABLE IF NOT EXISTS reported(origin TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS announced(peer TEXT PRIMARY KEY, seq INTEGER NOT NULL, hlc INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reclaim(peer TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS incarnation(
  file_ino INTEGER NOT NULL, since_ms INTEGER NOT NULL, id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS stopped(
  reason TEXT NOT NULL, at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')));
CREATE TABLE IF NOT EXISTS own_clock(
  device TEXT PRIMARY KEY, seq INTEGER NOT NULL, hlc INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS peer_state(
  device TEXT PRIMARY KEY, connected INTEGER NOT NULL, last_contact_ms INTEGER NOT NULL,
  holds TEXT NOT NULL, refused TEXT, at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS peers(
  device TEXT PRIMARY KEY, cert BLOB NOT NULL, addr TEXT,
  paired_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')));
CREATE TABLE IF NOT EXISTS revoked(
  device TEXT PRIMARY KEY, at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')));
CREATE TABLE IF NOT EXISTS revoked_certs(cert_sha256 TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS behind(origin TEXT PRIMARY KEY, since_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS peer_schema(
  peer TEXT NOT NULL, detail TEXT NOT NULL,
  at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  PRIMARY KEY (peer, detail));";

/// A dead letter as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// The peer involved.
    pub peer: String,
    /// The kind of failure.
    pub cause: String,
    /// The last occurrence: what failed and why.
    pub what: String,
    /// Why.
    pub reason: String,
    /// How many times.
    pub count: i64,
    /// First and last time.
    pub at: (String, String),
}

impl std::fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} time(s) {}..{}, last {}: {}",
            self.peer, self.cause, self.count, self.at.0, self.at.1, self.what, self.reason
        )
    }
}

/// Opens `sync.db` in WAL mode: a commit costs one fsync (the rollback
/// journal it used to be in cost three). Commits are durable (`synchronous =
/// FULL`, SQLite's default) except the three a syncer makes for every page and
/// commit, which a power loss may take back (see [`relaxed`]).
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // Best effort: another process holding the file in the old mode keeps it
    // there until it closes; the next open switches.
    let _ = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0));
    Ok(conn)
}

/// Runs `write` with `synchronous = NORMAL` when `sync.db` is in WAL mode (in
/// a rollback journal NORMAL is not safe against power loss): atomic, and
/// safe from the process being killed, without waiting for the disk. For what
/// a syncer writes for every page it takes from an origin (what the origin
/// reported issuing: it says so again with its next page; and the last change
/// taken from it, `points::note_taken`: a power loss may cost the newest, and with
/// them the evidence of a restore that reused their numbers) and for every
/// local commit (the own-clock record: it only ever lags the library after a
/// power loss, so a restore is still told from the library being behind it).
/// These fsyncs were on the path between a commit and its peers seeing it.
pub(super) fn relaxed<T>(
    conn: &Connection,
    write: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let wal = conn
        .prepare_cached("PRAGMA journal_mode")?
        .query_row([], |r| r.get::<_, String>(0))?
        .eq_ignore_ascii_case("wal");
    if !wal {
        return write(conn);
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let written = write(conn);
    conn.pragma_update(None, "synchronous", "FULL")?;
    written
}

/// Creates the tables; a `dead_letters` table of the earlier one-row-per-failure
/// form is folded into the counted form.
pub fn ensure(conn: &Connection) -> rusqlite::Result<()> {
    let old: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'dead_letters'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if old.is_some_and(|sql| !sql.contains("cause")) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch("ALTER TABLE dead_letters RENAME TO dead_letters_v1;")?;
        tx.execute_batch(SCHEMA)?;
        tx.execute_batch(
            "INSERT INTO dead_letters(peer, cause, what, reason, count, at, last_at) \
               SELECT peer, what, max(what), max(reason), count(*), min(at), max(at) \
               FROM dead_letters_v1 GROUP BY peer, what; \
             DROP TABLE dead_letters_v1;",
        )?;
        tx.commit()?;
    } else {
        conn.execute_batch(SCHEMA)?;
    }
    conn.execute_batch(super::notices::SCHEMA)?;
    super::points::ensure(conn)
}

/// Records a failure: a new row for a new `(peer, cause)`, else one more count.
pub fn dead_letter(
    conn: &Connection,
    peer: &str,
    cause: &str,
    what: &str,
    reason: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO dead_letters(peer, cause, what, reason) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT(peer, cause) DO UPDATE SET what = excluded.what, reason = excluded.reason, \
           count = count + 1, last_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
    )?
    .execute(params![peer, cause, what, reason])?;
    Ok(())
}

/// The most recent dead letters.
pub fn dead_letters(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<DeadLetter>> {
    let mut stmt = conn.prepare(
        "SELECT peer, cause, what, reason, count, at, last_at FROM dead_letters \
         ORDER BY last_at DESC LIMIT ?1",
    )?;
    stmt.query_map([limit as i64], |r| {
        Ok(DeadLetter {
            peer: r.get(0)?,
            cause: r.get(1)?,
            what: r.get(2)?,
            reason: r.get(3)?,
            count: r.get(4)?,
            at: (r.get(5)?, r.get(6)?),
        })
    })?
    .collect()
}

/// Replaces what `peer` last reported holding in quarantine.
/// The clock `(seq, hlc)` `peer` announced in its Hello with the highest HLC
/// (`(0, 0)` before any).
pub fn announced(conn: &Connection, peer: &str) -> rusqlite::Result<(i64, i64)> {
    let mut stmt = conn.prepare_cached("SELECT seq, hlc FROM announced WHERE peer = ?1")?;
    let mut rows = stmt.query([peer])?;
    match rows.next()? {
        Some(row) => Ok((row.get(0)?, row.get(1)?)),
        None => Ok((0, 0)),
    }
}

/// Keeps `(seq, hlc)` as what `peer` announced, if its HLC is the highest yet.
pub fn note_announced(conn: &Connection, peer: &str, seq: i64, hlc: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO announced(peer, seq, hlc) VALUES (?1, ?2, ?3) \
         ON CONFLICT(peer) DO UPDATE SET seq = excluded.seq, hlc = excluded.hlc \
         WHERE excluded.hlc > announced.hlc",
    )?
    .execute(params![peer, seq, hlc])?;
    Ok(())
}

pub fn peer_quarantine(
    conn: &Connection,
    peer: &str,
    summary: &[QuarantineSummary],
) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute("DELETE FROM peer_quarantine WHERE peer = ?1", [peer])?;
    for q in summary {
        tx.execute(
            "INSERT OR REPLACE INTO peer_quarantine(peer, origin, count, reason) \
             VALUES (?1, ?2, ?3, ?4)",
            params![peer, q.origin, q.count, q.reason],
        )?;
    }
    tx.commit()
}

/// What peers last reported holding in quarantine: `(peer, summary)`.
pub fn peer_reports(conn: &Connection) -> rusqlite::Result<Vec<(String, QuarantineSummary)>> {
    let mut stmt = conn
        .prepare("SELECT peer, origin, count, reason FROM peer_quarantine ORDER BY peer, origin")?;
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            QuarantineSummary {
                origin: r.get(1)?,
                count: r.get(2)?,
                reason: r.get(3)?,
            },
        ))
    })?
    .collect()
}

/// The last local sequence and clock the syncer saw its database at, for
/// `device` (see `SqlStore::restored`).
pub fn own_clock(conn: &Connection, device: &str) -> rusqlite::Result<Option<(i64, i64)>> {
    conn.prepare_cached("SELECT seq, hlc FROM own_clock WHERE device = ?1")?
        .query_row([device], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// Records the local sequence and clock the database is at now.
pub fn set_own_clock(conn: &Connection, device: &str, seq: i64, hlc: i64) -> rusqlite::Result<()> {
    relaxed(conn, |conn| {
        conn.prepare_cached(
            "INSERT INTO own_clock(device, seq, hlc) VALUES (?1, ?2, ?3) \
             ON CONFLICT(device) DO UPDATE SET seq = excluded.seq, hlc = excluded.hlc",
        )?
        .execute(params![device, seq, hlc])
    })?;
    Ok(())
}

/// Replaces how `peer`'s tables last differed from ours.
pub fn peer_schema(conn: &Connection, peer: &str, mismatches: &[String]) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute("DELETE FROM peer_schema WHERE peer = ?1", [peer])?;
    for detail in mismatches {
        tx.execute(
            "INSERT OR IGNORE INTO peer_schema(peer, detail) VALUES (?1, ?2)",
            params![peer, detail],
        )?;
    }
    tx.commit()
}

/// How peers' tables differ from ours: `(peer, detail)`.
pub fn peer_schemas(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare("SELECT peer, detail FROM peer_schema ORDER BY peer, detail")?;
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// The highest sequence `origin` itself reported (0: never heard from it).
pub fn reported(conn: &Connection, origin: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .prepare_cached("SELECT seq FROM reported WHERE origin = ?1")?
        .query_row([origin], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Raises what `origin` reported to `seq`; returns the highest report so far.
pub fn report(conn: &Connection, origin: &str, seq: i64) -> rusqlite::Result<i64> {
    relaxed(conn, |conn| {
        conn.prepare_cached(
            "INSERT INTO reported(origin, seq) VALUES (?1, ?2) \
             ON CONFLICT(origin) DO UPDATE SET seq = max(seq, excluded.seq)",
        )?
        .execute(params![origin, seq])
    })?;
    reported(conn, origin)
}

/// After a restore: the peers this device still takes its own changes back
/// from (each may hold some no other peer has).
pub fn reclaim_from(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached("SELECT peer FROM reclaim ORDER BY peer")?
        .query_map([], |r| r.get(0))?
        .collect()
}

/// Sets the peers to take own changes back from (replacing the set).
pub fn set_reclaim(conn: &Connection, peers: &[String]) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute("DELETE FROM reclaim", [])?;
    for peer in peers {
        tx.execute("INSERT INTO reclaim(peer) VALUES (?1)", [peer])?;
    }
    tx.commit()
}

/// This device took its own changes back from `peer`.
pub fn reclaimed(conn: &Connection, peer: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM reclaim WHERE peer = ?1", [peer])
        .map(|_| ())
}

/// Which running copy of the library folder this is (see
/// `proto::node::copies`): the one recorded for the database file's inode
/// `ino`, or a new one (a copied or moved file) started at `now_ms`.
pub fn incarnation(conn: &Connection, ino: u64, now_ms: u64) -> rusqlite::Result<Incarnation> {
    let ino = ino as i64;
    let held: Option<(i64, i64)> = conn
        .query_row(
            "SELECT since_ms, id FROM incarnation WHERE file_ino = ?1",
            params![ino],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((since, id)) = held {
        return Ok(Incarnation {
            since_ms: since as u64,
            id: id as u64,
        });
    }
    let tx = conn.unchecked_transaction()?;
    tx.execute("DELETE FROM incarnation", [])?;
    let id: i64 = tx.query_row(
        "INSERT INTO incarnation(file_ino, since_ms, id) VALUES (?1, ?2, random()) RETURNING id",
        params![ino, now_ms as i64],
        |r| r.get(0),
    )?;
    tx.commit()?;
    Ok(Incarnation {
        since_ms: now_ms,
        id: id as u64,
    })
}

/// Why this copy of the folder was told to stop, if it was.
pub fn stopped(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT reason || ' (' || at || ')' FROM stopped", [], |r| {
        r.get(0)
    })
    .optional()
}

/// Records that this copy was told to stop (replacing an older record), or
/// with `None` clears it.
pub fn set_stopped(conn: &Connection, reason: Option<&str>) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute("DELETE FROM stopped", [])?;
    if let Some(reason) = reason {
        tx.execute("INSERT INTO stopped(reason) VALUES (?1)", [reason])?;
    }
    tx.commit()
}

/// Records what the running syncer knows of its peers (replacing the last
/// record), at `now_ms`.
pub fn record_peers(conn: &Connection, peers: &[PeerState], now_ms: u64) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute("DELETE FROM peer_state", [])?;
    for p in peers {
        let holds = serde_json::to_string(&p.holds)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        tx.prepare_cached(
            "INSERT INTO peer_state(device, connected, last_contact_ms, holds, refused, at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            p.device,
            p.connected,
            p.last_contact_ms as i64,
            holds,
            p.refused,
            now_ms as i64
        ])?;
    }
    tx.commit()
}

/// What the syncer last recorded of its peers, and when (ms since the epoch).
pub fn peer_states(conn: &Connection) -> rusqlite::Result<Vec<(PeerState, u64)>> {
    let mut stmt = conn.prepare(
        "SELECT device, connected, last_contact_ms, holds, refused, at_ms \
         FROM peer_state ORDER BY device",
    )?;
    stmt.query_map([], |r| {
        let holds: String = r.get(3)?;
        let holds = serde_json::from_str(&holds).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
        })?;
        let state = PeerState {
            device: r.get(0)?,
            connected: r.get(1)?,
            last_contact_ms: r.get::<_, i64>(2)? as u64,
            holds,
            refused: r.get(4)?,
        };
        Ok((state, r.get::<_, i64>(5)? as u64))
    })?
    .collect()
}

/// A paired device as `sync.db` pins it: `(device, certificate, address)`.
pub type Pinned = (String, Vec<u8>, Option<String>);

/// The paired devices, if another connection committed `sync.db` since
/// `seen` (its `PRAGMA data_version`, updated). The `peers` table belongs to
/// the library folder (`home`); a store without it pins nothing.
pub fn pinned_if_changed(
    conn: &Connection,
    seen: &mut Option<i64>,
) -> rusqlite::Result<Option<Vec<Pinned>>> {
    let version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
    if *seen == Some(version) {
        return Ok(None);
    }
    *seen = Some(version);
    if !crate::library::table_exists(conn, "peers")? {
        return Ok(Some(Vec::new()));
    }
    pinned(conn).map(Some)
}

/// Records the origins this device lags on and since when (`crate::lag`),
/// replacing what was recorded.
pub fn record_behind(
    conn: &Connection,
    since: &std::collections::BTreeMap<String, u64>,
) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute("DELETE FROM behind", [])?;
    for (origin, ms) in since {
        tx.execute(
            "INSERT INTO behind(origin, since_ms) VALUES (?1, ?2)",
            params![origin, *ms as i64],
        )?;
    }
    tx.commit()
}

/// Since when (ms since the epoch) this device lags on each origin, as the
/// syncer last recorded it.
pub fn behind(conn: &Connection) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut stmt = conn.prepare_cached("SELECT origin, since_ms FROM behind ORDER BY origin")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?;
    rows.collect()
}

/// Forgets `device` for good: it is recorded as removed (never accepted
/// again, whatever the library's `devices` row says later), with the
/// fingerprints of its certificates (refused under any other id), and unpinned.
pub fn revoke(conn: &Connection, device: &str, certs: &[String]) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "INSERT OR IGNORE INTO revoked(device) VALUES (?1)",
        [device],
    )?;
    for print in certs {
        tx.execute(
            "INSERT OR IGNORE INTO revoked_certs(cert_sha256) VALUES (?1)",
            [print],
        )?;
    }
    tx.execute("DELETE FROM peers WHERE device = ?1", [device])?;
    tx.commit()
}

/// The certificate fingerprints of removed devices.
pub fn revoked_certs(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT cert_sha256 FROM revoked_certs ORDER BY 1")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// The devices this one saw removed from the library.
pub fn revoked(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT device FROM revoked ORDER BY device")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// Remembers the certificate a connected peer presented (its SHA-256:
/// `print`) and, if none is stored, where it connected from: a member
/// admitted by its fingerprint stays paired, a rotated certificate replaces
/// the old one. Never for a removed device or certificate.
pub fn remember(
    conn: &Connection,
    device: &str,
    cert: &[u8],
    print: &str,
    addr: &str,
) -> rusqlite::Result<()> {
    // An address given by pairing or `peer-add` is kept (one seen behind a
    // NAT may not be dialable); the learned one is tried from memory.
    conn.prepare_cached(
        "INSERT INTO peers(device, cert, addr) \
         SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM revoked WHERE device = ?1) \
           AND NOT EXISTS (SELECT 1 FROM revoked_certs WHERE cert_sha256 = ?4) \
         ON CONFLICT(device) DO UPDATE SET cert = excluded.cert, addr = coalesce(addr, excluded.addr) \
         WHERE cert IS NOT excluded.cert OR addr IS NULL",
    )?
    .execute(params![device, cert, addr, print])?;
    Ok(())
}

/// The paired devices, by id (the library folder's `peers` table).
pub fn pinned(conn: &Connection) -> rusqlite::Result<Vec<Pinned>> {
    let mut stmt = conn.prepare_cached("SELECT device, cert, addr FROM peers ORDER BY device")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}
