//! sdsync's own tables inside `database.db`, the clock and the device identity.
//!
//! ```sql
//! SELECT sdsync_device_id();          -- creates the tables and identity on first use
//! SELECT * FROM sdsync_watermarks;    -- (origin, seq): what this database holds
//! ```
//!
//! Everything capture writes lives in the same file as the data (DESIGN.md §2.1), so
//! one SQLite transaction covers a write and its capture.

use sdsync_core::hlc::Hlc;
use sdsync_core::ids::device_uuid;
use sdsync_core::schema::{ISSUED_TABLE, QUARANTINE_TABLE};

use crate::ffi::{Db, SqlError, Value};

/// The metadata schema. `sdsync_versions` (live rows, keyed by rowid) and
/// `sdsync_tombstones` (deleted rows, keyed by uuid) are never pruned: they are how
/// last-writer-wins still knows the winning version of every row and column after
/// any log is gone (§2.4). `sdsync_parked` holds changes that cannot be applied yet (missing parent,
/// row not created yet, or updates newer than a delete) and is served to peers too.
/// Their uuid columns (`pk`, `wait_pk`) are declared BLOB, i.e. no affinity: a
/// uuid is kept exactly as its row stores it (under `ANY`, NUMERIC affinity in an
/// ordinary table, the TEXT uuid '00123' was stored and served as the integer 123).
/// `sdsync_quarantine` is written by the syncer only: changes a peer sent that failed to apply
/// here (kept whole, with the reason), in the transaction that applied the rest of their page.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sdsync_meta(key TEXT PRIMARY KEY, value ANY) WITHOUT ROWID;
INSERT OR IGNORE INTO sdsync_meta(key, value) VALUES ('format', 1), ('max_drift_ms', 300000);
CREATE TABLE IF NOT EXISTS sdsync_clock(
  id INTEGER PRIMARY KEY CHECK (id = 0),
  hlc INTEGER NOT NULL,
  seq INTEGER NOT NULL);
INSERT OR IGNORE INTO sdsync_clock(id, hlc, seq) VALUES (0, 0, 0);
CREATE TABLE IF NOT EXISTS sdsync_origins(
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  complete INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS sdsync_tables(
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  spec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sdsync_versions(
  tbl INTEGER NOT NULL,
  rid INTEGER NOT NULL,
  mask INTEGER NOT NULL,
  origin INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  hlc INTEGER NOT NULL,
  PRIMARY KEY (tbl, rid, mask)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sdsync_versions_by_origin ON sdsync_versions(origin, seq);
CREATE TABLE IF NOT EXISTS sdsync_tombstones(
  tbl INTEGER NOT NULL,
  pk BLOB NOT NULL,
  origin INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  hlc INTEGER NOT NULL,
  PRIMARY KEY (tbl, pk)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sdsync_tombstones_by_origin ON sdsync_tombstones(origin, seq);
CREATE TABLE IF NOT EXISTS sdsync_parked(
  origin INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  tbl INTEGER NOT NULL,
  pk BLOB NOT NULL,
  mask INTEGER NOT NULL,
  hlc INTEGER NOT NULL,
  data TEXT,
  wait_tbl INTEGER NOT NULL,
  wait_pk BLOB NOT NULL,
  reason TEXT NOT NULL,
  PRIMARY KEY (origin, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sdsync_parked_row ON sdsync_parked(tbl, pk);
CREATE INDEX IF NOT EXISTS sdsync_parked_wait ON sdsync_parked(wait_tbl, wait_pk);
CREATE VIEW IF NOT EXISTS sdsync_watermarks(origin, seq) AS
  SELECT o.uuid, CASE WHEN o.id = (SELECT value FROM sdsync_meta WHERE key = 'origin')
                      THEN (SELECT seq FROM sdsync_clock) ELSE o.complete END
  FROM sdsync_origins o;
";

/// What format 6 added (run by [`ensure`] and by `track::upgrade`).
///
/// `sdsync_kept`: changes for a table or columns this database does not have
/// (yet): a device on a newer schema wrote them. Kept whole, in the form they
/// came in, served to peers like any change, and applied when the schema here
/// catches up (`migrate::retry_kept`).
///
/// The guard trigger never fires (`WHEN 0`); it exists for SQLite to check.
/// `ALTER TABLE … RENAME`, `RENAME COLUMN` and `DROP COLUMN` re-check every
/// trigger of the schema, and this one reads `sdsync_schema`, a table only a
/// connection with the extension has: without it they fail ("error in trigger
/// sdsync_schema_changes_need_the_extension: no such table: main.sdsync_schema"),
/// so a table rebuild (create, copy, drop, rename) cannot leave a tracked table
/// without capture behind the extension's back.
pub const FORMAT_6: &str = "
CREATE TABLE IF NOT EXISTS sdsync_kept(
  origin INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  tbl TEXT NOT NULL,
  pk BLOB NOT NULL,
  op TEXT NOT NULL,
  data TEXT,
  hlc INTEGER NOT NULL,
  creates INTEGER,
  reason TEXT NOT NULL,
  PRIMARY KEY (origin, seq)) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS sdsync_schema_changes_need_the_extension
  BEFORE DELETE ON sdsync_meta WHEN 0 BEGIN SELECT 1 FROM sdsync_schema WHERE 0; END;
";

/// What format 7 added (run by [`ensure`] and by `track::upgrade`).
///
/// `sdsync_issued`: a sparse record of this device's own `(seq, hlc)` as the
/// capture triggers issue them, one row whenever the HLC enters a new second,
/// at a connection's first change, and on a clock gone below what the
/// connection issued (written by `sdsync_next_hlc`). Versions keep only a
/// row's latest change, so after a whole folder is restored from a backup and
/// the app rewrites what it wrote since, nothing in them shows the numbers it
/// reused; the first write after the restore is recorded here, which is
/// how the syncer still tells its peers' copies of the lost changes apart
/// (`syncer/src/sqlstore/lineage.rs`). Reset with the identity.
pub const FORMAT_7: &str = ISSUED_TABLE;

/// Creates sdsync's tables and this database's identity if they do not exist yet.
pub fn ensure(db: Db) -> Result<(), SqlError> {
    if local_origin(db)?.is_some() {
        return Ok(());
    }
    db.exec(SCHEMA)?;
    db.exec(FORMAT_6)?;
    db.exec(FORMAT_7)?;
    db.exec(crate::fold::FORMAT_10)?;
    db.exec(QUARANTINE_TABLE)?;
    // A new library's triggers are installed by this version: the current format.
    db.prepare("UPDATE sdsync_meta SET value = ?1 WHERE key = 'format' AND value < ?1")?
        .run(&[Value::Integer(crate::track::TRIGGER_FORMAT)])?;
    if local_origin(db)?.is_none() {
        assign_identity(db, &device_uuid())?;
    }
    Ok(())
}

/// Whether sdsync's tables exist (reads must not create them).
pub fn exists(db: Db) -> Result<bool, SqlError> {
    Ok(db
        .query_i64(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'sdsync_meta'",
            &[],
        )?
        .unwrap_or(0)
        > 0)
}

/// The local origin id (this device's row in `sdsync_origins`), if assigned.
pub fn local_origin(db: Db) -> Result<Option<i64>, SqlError> {
    if !exists(db)? {
        return Ok(None);
    }
    db.query_i64("SELECT value FROM sdsync_meta WHERE key = 'origin'", &[])
}

/// This database's device uuid.
pub fn device_id(db: Db) -> Result<String, SqlError> {
    ensure(db)?;
    Ok(db
        .query_text(
            "SELECT o.uuid FROM sdsync_origins o JOIN sdsync_meta m ON m.key = 'origin' AND m.value = o.id",
            &[],
        )?
        .unwrap_or_default())
}

/// Gives this database the identity `uuid`: a new origin whose sequence starts at 0.
/// The previous identity's changes keep their origin (they were made by that device);
/// its watermark is set to the last sequence it issued here.
pub fn assign_identity(db: Db, uuid: &str) -> Result<i64, SqlError> {
    // The log's entries are the old identity's changes.
    crate::fold::fold(db)?;
    if let Some(old) = db.query_i64("SELECT value FROM sdsync_meta WHERE key = 'origin'", &[])? {
        db.prepare("UPDATE sdsync_origins SET complete = max(complete, (SELECT seq FROM sdsync_clock)) WHERE id = ?1")?
            .run(&[Value::Integer(old)])?;
    }
    let id = intern_origin(db, uuid)?;
    // The record of issued numbers describes the identity this database had
    // (created first: a library whose upgrade was put off has none yet).
    db.exec(FORMAT_7)?;
    db.exec("DELETE FROM sdsync_issued")?;
    db.prepare("INSERT OR REPLACE INTO sdsync_meta(key, value) VALUES ('origin', ?1)")?
        .run(&[Value::Integer(id)])?;
    let resume = db
        .query_i64(
            "SELECT complete FROM sdsync_origins WHERE id = ?1",
            &[Value::Integer(id)],
        )?
        .unwrap_or(0);
    db.prepare("UPDATE sdsync_clock SET seq = ?1")?
        .run(&[Value::Integer(resume)])?;
    Ok(id)
}

/// The local id of an origin uuid, creating its row if new.
pub fn intern_origin(db: Db, uuid: &str) -> Result<i64, SqlError> {
    let text = Value::Text(uuid.to_string());
    db.prepare("INSERT OR IGNORE INTO sdsync_origins(uuid) VALUES (?1)")?
        .run(std::slice::from_ref(&text))?;
    Ok(db
        .query_i64("SELECT id FROM sdsync_origins WHERE uuid = ?1", &[text])?
        .unwrap_or(0))
}

/// Issues the next HLC (send rule) and persists it, inside the caller's transaction.
pub fn hlc_now(db: Db, wall_ms: u64) -> Result<Hlc, SqlError> {
    ensure(db)?;
    crate::fold::fold(db)?;
    let wall = Hlc::from_wall(wall_ms).as_i64();
    let raw = db
        .query_i64(
            "UPDATE sdsync_clock SET hlc = max(hlc + 1, ?1) RETURNING hlc",
            &[Value::Integer(wall)],
        )?
        .unwrap_or(wall);
    Ok(Hlc::from_i64(raw).unwrap_or_default())
}

/// Records that this database holds every change of `origin` up to `seq`.
pub fn mark_complete(db: Db, origin: &str, seq: i64) -> Result<i64, SqlError> {
    ensure(db)?;
    let id = intern_origin(db, origin)?;
    db.prepare("UPDATE sdsync_origins SET complete = max(complete, ?2) WHERE id = ?1")?
        .run(&[Value::Integer(id), Value::Integer(seq)])?;
    Ok(db
        .query_i64(
            "SELECT complete FROM sdsync_origins WHERE id = ?1",
            &[Value::Integer(id)],
        )?
        .unwrap_or(seq))
}

/// The configured maximum clock drift for incoming changes, in milliseconds.
pub fn max_drift_ms(db: Db) -> Result<u64, SqlError> {
    Ok(db
        .query_i64(
            "SELECT value FROM sdsync_meta WHERE key = 'max_drift_ms'",
            &[],
        )?
        .unwrap_or(300_000)
        .max(0) as u64)
}

/// After a restore from an older copy: peers hold this device's changes up to
/// `floor`, and the changes this copy made since the restore reused some of
/// those sequence numbers, so peers would never take them. Gives every current
/// version, tombstone and parked piece (a change of its own taken back from a
/// peer, waiting for a row) of the local origin a new sequence number above both
/// `floor` and the local sequence, in their old order, HLCs unchanged: peers
/// take them again, ignore the ones they hold already (same version) and apply
/// the rest. The clock moves to at least `hlc` (a peer's clock, at or above
/// every change of ours it holds), so what this copy writes from now on never
/// reuses the HLC of a change it lost. Returns how many were renumbered.
pub fn restamp(db: Db, floor: i64, hlc: i64) -> Result<i64, SqlError> {
    let Some(origin) = local_origin(db)? else {
        return Ok(0);
    };
    crate::fold::fold(db)?;
    let mut rows = Vec::new();
    let mut stmt = db.prepare(
        "SELECT 0, tbl, rid, mask, seq FROM sdsync_versions WHERE origin = ?1 \
         UNION ALL SELECT 1, tbl, pk, 0, seq FROM sdsync_tombstones WHERE origin = ?1 \
         UNION ALL SELECT 2, 0, NULL, seq, seq FROM sdsync_parked WHERE origin = ?1 ORDER BY 5",
    )?;
    stmt.bind_all(&[Value::Integer(origin)])?;
    while stmt.step()? {
        rows.push((stmt.int(0), stmt.int(1), stmt.value(2), stmt.int(3)));
    }
    drop(stmt);
    let base = db
        .query_i64(
            "SELECT max(seq, ?1) FROM sdsync_clock",
            &[Value::Integer(floor)],
        )?
        .unwrap_or(floor);
    let mut version = db
        .prepare("UPDATE sdsync_versions SET seq = ?4 WHERE tbl = ?1 AND rid = ?2 AND mask = ?3")?;
    let mut tombstone =
        db.prepare("UPDATE sdsync_tombstones SET seq = ?3 WHERE tbl = ?1 AND pk = ?2")?;
    let mut parked =
        db.prepare("UPDATE sdsync_parked SET seq = ?3 WHERE origin = ?1 AND seq = ?2")?;
    for (n, (kind, tbl, key, mask)) in rows.iter().enumerate() {
        let seq = Value::Integer(base + n as i64 + 1);
        match kind {
            0 => version.run(&[
                Value::Integer(*tbl),
                key.clone(),
                Value::Integer(*mask),
                seq,
            ])?,
            1 => tombstone.run(&[Value::Integer(*tbl), key.clone(), seq])?,
            // A parked piece's old sequence number (its key) is in `mask`.
            _ => parked.run(&[Value::Integer(origin), Value::Integer(*mask), seq])?,
        }
    }
    let count = rows.len() as i64;
    db.prepare("UPDATE sdsync_clock SET seq = ?1, hlc = max(hlc, ?2)")?
        .run(&[Value::Integer(base + count), Value::Integer(hlc)])?;
    mark_monotone_from(db, base + count)?;
    Ok(count)
}

/// Records that this device issued change `seq` at `hlc` (see [`FORMAT_7`]).
pub fn record_issued(db: Db, seq: i64, hlc: i64) -> Result<(), SqlError> {
    db.prepare(
        "INSERT INTO sdsync_issued(seq, hlc) VALUES (?1, ?2) \
         ON CONFLICT(seq) DO UPDATE SET hlc = excluded.hlc",
    )?
    .run(&[Value::Integer(seq), Value::Integer(hlc)])
}

/// Records that this device's own changes numbered above `seq` are issued in
/// HLC order again. A write issues its sequence number and HLC together, so
/// they rise together; renumbering (a restore) and re-issuing a change taken
/// back under a new number with its old HLC break that up to where they
/// numbered. The syncer relies on the order above this mark to tell whether a
/// peer's copy of this device's changes is its own history (two histories
/// under one origin: a restored folder that reused numbers).
pub fn mark_monotone_from(db: Db, seq: i64) -> Result<(), SqlError> {
    db.prepare(
        "INSERT INTO sdsync_meta(key, value) VALUES ('monotone_from', ?1) \
         ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
    )?
    .run(&[Value::Integer(seq)])?;
    Ok(())
}
