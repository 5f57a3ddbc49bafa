//! Capture that follows the app's schema changes.
//!
//! ```sql
//! -- Any documented way of changing a tracked table, by any tool with the
//! -- extension loaded: ADD / RENAME / DROP COLUMN, RENAME TO, the 12-step rebuild.
//! ALTER TABLE tags ADD COLUMN color TEXT;
//! SELECT tbl, state, detail FROM sdsync_schema;   -- tags | ok |
//! ```
//!
//! SQLite has no DDL triggers, and a rebuild (create a new table, copy, drop the
//! old one, rename) drops the capture triggers with the old table. So the
//! extension watches DDL itself (`watch`: the authorizer sees it, the WAL hook
//! repairs right after the commit) and every entry point that can write runs
//! [`repair`] when the schema moved: the table is re-tracked in place, its
//! versions following its columns by name ([`relayout`]). A table that can no
//! longer be synced as it is gets triggers that refuse every write until it is
//! fixed. Without the extension, renames and column drops fail on the guard
//! trigger (`store::FORMAT_6`), so no tool can rebuild a table behind its back.

pub mod copies;
pub mod renames;
pub mod sqltext;
pub mod status;
mod trace;
pub mod watch;

use std::rc::Rc;
use std::time::{Duration, Instant};

use sdsync_core::hlc::Hlc;
use sdsync_core::schema::{Class, ROW_BIT, TableSpec, quote_ident, quote_literal};
use sdsync_core::triggers::trigger_names;

use crate::catalog::{Catalog, CatalogError};
use crate::ffi::{Db, SqlError, Value};
use crate::track::{self, TrackError};

/// What a tracked table looks like now, against its stored spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Capture matches the table.
    Ok,
    /// The table is gone (dropped); its versions wait in case it comes back.
    Missing,
    /// The table was renamed (its capture triggers moved with it) to this name.
    Renamed(String),
    /// Columns changed, or capture triggers are missing (a rebuild): re-track.
    Changed,
    /// The table can no longer be synced as it is (the error says why).
    Unsyncable(String),
}

impl State {
    /// The word `sdsync_schema` shows.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Missing => "missing",
            Self::Renamed(_) => "renamed",
            Self::Changed => "changed",
            Self::Unsyncable(_) => "unsyncable",
        }
    }

    /// What a person should know about it.
    pub fn detail(&self, table: &str) -> String {
        match self {
            Self::Ok => String::new(),
            Self::Missing => format!(
                "table {table} does not exist: changes for it are kept until it is created again; \
                 SELECT sdsync_untrack('{table}') forgets it"
            ),
            Self::Renamed(to) => format!("renamed to {to}; capture follows at the next write"),
            Self::Changed => format!(
                "{table} changed (columns or a rebuild); capture is re-installed at the next write"
            ),
            Self::Unsyncable(why) => format!("writes to {table} are refused: {why}"),
        }
    }
}

/// Compares every tracked table with the live schema.
pub fn inspect(db: Db) -> Result<Vec<(Rc<TableSpec>, State)>, TrackError> {
    let catalog = Catalog::load(db)?;
    let mut out = Vec::new();
    for spec in &catalog.ordered {
        let state = state_of(db, &catalog, spec)?;
        out.push((spec.clone(), state));
    }
    Ok(out)
}

fn state_of(db: Db, catalog: &Catalog, spec: &TableSpec) -> Result<State, TrackError> {
    let exists = db
        .query_i64(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            &[Value::Text(spec.name.clone())],
        )?
        .unwrap_or(0)
        > 0;
    if !exists {
        // A renamed table keeps its triggers, and their names keep the old name.
        let moved = db.query_text(
            "SELECT tbl_name FROM sqlite_schema WHERE type = 'trigger' AND name = ?1",
            &[Value::Text(trigger_names(&spec.name)[0].clone())],
        )?;
        return Ok(moved.map_or(State::Missing, State::Renamed));
    }
    let raw = track::read_raw(db, &spec.name)?;
    let options = spec.surviving_options(|c| raw.columns.iter().any(|r| r.name == c));
    let lookup = |name: &str| {
        catalog
            .by_name(name)
            .map(|s| (s.uuid_column.clone(), Some(s.local_id.clone())))
    };
    let live = match TableSpec::validate(raw, spec.class, &options, spec.id, &lookup) {
        Ok(live) => live,
        Err(e) => return Ok(State::Unsyncable(e.to_string())),
    };
    let same = live.columns == spec.columns
        && live.uuid_column == spec.uuid_column
        && live.local_id == spec.local_id;
    Ok(if same && capture_installed(db, spec)? {
        State::Ok
    } else {
        State::Changed
    })
}

/// Whether every capture trigger of the table is there, on the table.
fn capture_installed(db: Db, spec: &TableSpec) -> Result<bool, SqlError> {
    let names = trigger_names(&spec.name);
    let found = db
        .query_i64(
            "SELECT count(*) FROM sqlite_schema s, json_each(?2) j \
             WHERE s.type = 'trigger' AND s.tbl_name = ?1 AND s.name = j.value",
            &[
                Value::Text(spec.name.clone()),
                Value::Text(serde_json::to_string(&names).unwrap_or_default()),
            ],
        )?
        .unwrap_or(0);
    Ok(found == names.len() as i64)
}

/// [`repair`], when a table needs it: cheap when nothing changed. Runs where
/// SQLite can open a savepoint (not inside a write statement such as an apply):
/// the WAL hook, loading, `sdsync_repair()` (the syncer calls it before every
/// sweep after a schema change).
pub fn repair_if_needed(db: Db, wall_ms: u64) -> Result<Vec<String>, TrackError> {
    if !crate::store::exists(db)? {
        return Ok(Vec::new());
    }
    let mut settled = true;
    for (spec, state) in inspect(db)? {
        settled &= match state {
            State::Ok => true,
            State::Missing => !has_versions(db, spec.id)?,
            State::Unsyncable(_) => refusing(db, &spec)?,
            State::Renamed(_) | State::Changed => false,
        };
    }
    if settled {
        Ok(Vec::new())
    } else {
        repair(db, wall_ms)
    }
}

/// How long the repair after a DDL commit keeps trying while other
/// connections hold the write lock.
const REPAIR_PATIENCE: Duration = Duration::from_secs(2);

/// [`repair_if_needed`], tried again while it fails for a transient
/// reason. Until it succeeds this connection refuses writes to the rebuilt
/// table ("not authorized"), and nothing but its next commit tries again: a
/// repair that read the schema and then found the syncer had committed
/// meanwhile (`SQLITE_BUSY_SNAPSHOT`, which no busy handler waits out) left
/// an app's next write refused (CI, `a_rebuild_while_both_syncers_run_keeps_syncing`).
/// The syncer's transactions last tens of milliseconds.
pub(crate) fn repair_patiently(db: Db, wall_ms: u64) -> Result<Vec<String>, TrackError> {
    let start = Instant::now();
    let mut wait = Duration::from_millis(1);
    loop {
        match repair_if_needed(db, wall_ms) {
            Err(e) if transient(&e) && start.elapsed() < REPAIR_PATIENCE => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(50));
            }
            done => return done,
        }
    }
}

/// Whether the repair failed for the environment (busy, locked, …).
fn transient(e: &TrackError) -> bool {
    match e {
        TrackError::Sql(e) | TrackError::Catalog(CatalogError::Sql(e)) => {
            crate::ffi::is_transient(e.code)
        }
        _ => false,
    }
}

/// Whether a table has version rows.
fn has_versions(db: Db, id: i64) -> Result<bool, SqlError> {
    Ok(db
        .query_i64(
            "SELECT EXISTS (SELECT 1 FROM sdsync_versions WHERE tbl = ?1)",
            &[Value::Integer(id)],
        )?
        .unwrap_or(0)
        > 0)
}

/// Whether the table already has the triggers that refuse its writes.
fn refusing(db: Db, spec: &TableSpec) -> Result<bool, SqlError> {
    Ok(db
        .query_i64(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND name = ?1 AND sql LIKE '%RAISE(ABORT%'",
            &[Value::Text(trigger_names(&spec.name)[0].clone())],
        )?
        .unwrap_or(0)
        > 0)
}

/// Brings capture in line with the schema; returns what it did, one line per table.
/// Runs in a savepoint: all or nothing.
pub fn repair(db: Db, wall_ms: u64) -> Result<Vec<String>, TrackError> {
    track::in_savepoint(db, || repair_steps(db, wall_ms))
}

fn repair_steps(db: Db, wall_ms: u64) -> Result<Vec<String>, TrackError> {
    // The log's masks are in the columns' order the catalog still has.
    crate::fold::fold(db)?;
    {
        let mut done = Vec::new();
        // A rename changes what other tables' references name: look again.
        for _ in 0..3 {
            let mut renamed = false;
            for (spec, state) in inspect(db)? {
                match state {
                    State::Ok => {}
                    // Dropped in a committed transaction (a rebuild's drop and
                    // rename commit together): a table created under its name
                    // later is another table, whose rows must not inherit these
                    // versions. Tombstones stay: they are keyed by uuid.
                    State::Missing => {
                        if has_versions(db, spec.id)? {
                            db.prepare("DELETE FROM sdsync_versions WHERE tbl = ?1")?
                                .run(&[Value::Integer(spec.id)])?;
                            done.push(format!("{} dropped: its row versions forgotten", spec.name));
                        }
                    }
                    State::Renamed(to) => {
                        rename(db, &spec, &to, wall_ms)?;
                        done.push(format!("{} renamed to {to}", spec.name));
                        renamed = true;
                    }
                    State::Changed => {
                        let line = track::track_parsed(db, &spec.name, spec.class, None, wall_ms)?;
                        done.push(line);
                    }
                    State::Unsyncable(_) if refusing(db, &spec)? => {}
                    State::Unsyncable(why) => {
                        refuse_writes(db, &spec, &why)?;
                        done.push(format!("{}: writes refused: {why}", spec.name));
                    }
                }
            }
            if !renamed {
                break;
            }
        }
        Ok(done)
    }
}

/// `sdsync_alter(sql)`: runs DDL that SQLite refuses while capture triggers name
/// a column (`ALTER TABLE … DROP COLUMN` of a synced column) with capture lifted
/// for its duration and re-tracked after, all in one savepoint: either the
/// migration and capture both land, or neither. Data changes to tracked tables
/// in `sql` are refused ("not authorized"): they would not be captured; run
/// them before or after.
pub fn alter(db: Db, sql: &str, wall_ms: u64, watch: &watch::Watch) -> Result<String, TrackError> {
    let names: Vec<String> = Catalog::load(db)?
        .ordered
        .iter()
        .map(|s| s.name.clone())
        .collect();
    track::in_savepoint(db, || {
        for name in &names {
            track::drop_triggers(db, name)?;
        }
        watch.deny(&names);
        let ran = watch::app(|| db.exec(sql));
        watch.allow(&names);
        ran?;
        // What the transaction moved before (the statements `sql` runs are
        // nested, which the trace callback skips: see `copies`).
        copies::during(watch.take_statements(), || repair_steps(db, wall_ms)).0
    })
    .map(|done| {
        if done.is_empty() {
            "no tracked table changed".into()
        } else {
            done.join("; ")
        }
    })
}

/// Records that `spec`'s table is now called `to`: its spec, and the references
/// of the tables that name it.
fn rename(db: Db, spec: &TableSpec, to: &str, wall_ms: u64) -> Result<(), TrackError> {
    // A tracked table of that name was dropped earlier: the renamed one takes
    // its name, and the dropped one is forgotten.
    if let Some(gone) = Catalog::load(db)?.exact(to).filter(|g| g.id != spec.id) {
        track::forget(db, gone.id)?;
    }
    let catalog = Catalog::load(db)?;
    for other in &catalog.ordered {
        let mut updated = TableSpec::clone(other);
        if other.id == spec.id {
            updated.name = to.to_string();
            updated.aliases.push(spec.name.clone());
        }
        for r in updated
            .columns
            .iter_mut()
            .filter_map(|c| c.reference.as_mut())
        {
            if r.table == spec.name {
                r.table = to.to_string();
            }
        }
        for target in updated.options.refs.values_mut() {
            if *target == spec.name {
                *target = to.to_string();
            }
        }
        if updated != **other {
            let text = serde_json::to_string(&updated).unwrap_or_default();
            db.prepare("UPDATE sdsync_tables SET name = ?2, spec = ?3 WHERE id = ?1")?
                .run(&[
                    Value::Integer(updated.id),
                    Value::Text(updated.name.clone()),
                    Value::Text(text),
                ])?;
        }
    }
    // The triggers still carry the old name; re-tracking replaces them.
    track::track_parsed(db, to, spec.class, None, wall_ms)?;
    Ok(())
}

/// What the triggers of a table that cannot be synced say (and how the
/// changes reader tells such a table from one waiting for its repair).
pub const UNSYNCABLE: &str = "cannot be synced as it is now";

/// Replaces a table's capture with triggers that refuse every write, naming why:
/// writing it uncaptured would be a silent gap.
fn refuse_writes(db: Db, spec: &TableSpec, why: &str) -> Result<(), SqlError> {
    track::drop_triggers(db, &spec.name)?;
    let message = quote_literal(&format!(
        "sdsync: table {} {UNSYNCABLE} ({why}); fix the table, then SELECT sdsync_track('{}', '{}')",
        spec.name,
        spec.name,
        spec.class.as_str()
    ));
    for (name, event) in trigger_names(&spec.name)
        .iter()
        .zip(["INSERT", "UPDATE", "DELETE"])
    {
        db.exec(&format!(
            "CREATE TRIGGER {} BEFORE {event} ON {} BEGIN SELECT RAISE(ABORT, {message}); END",
            quote_ident(name),
            quote_ident(&spec.name)
        ))?;
    }
    Ok(())
}

/// Moves the table's versions (and parked changes) from the old layout's mask
/// bits to the new one's, by column name. Columns that are gone leave their
/// groups; two groups that end with the same columns keep the newer version.
pub fn relayout(db: Db, old: &TableSpec, new: &TableSpec) -> Result<(), SqlError> {
    let map: Vec<Option<usize>> = old
        .columns
        .iter()
        .map(|c| new.columns.iter().position(|n| n.name == c.name))
        .collect();
    if map.iter().enumerate().all(|(i, m)| *m == Some(i)) {
        return Ok(());
    }
    let remap = |mask: u64| {
        map.iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << (i + 1)) != 0)
            .filter_map(|(_, m)| *m)
            .fold(mask & ROW_BIT, |acc, j| acc | (1 << (j + 1)))
    };
    let id = Value::Integer(old.id);
    let mut rows = Vec::new();
    let mut stmt = db.prepare(
        "SELECT rid, mask, origin, seq, hlc FROM sdsync_versions WHERE tbl = ?1 ORDER BY hlc",
    )?;
    stmt.bind_all(std::slice::from_ref(&id))?;
    while stmt.step()? {
        rows.push([
            stmt.int(0),
            remap(stmt.int(1) as u64) as i64,
            stmt.int(2),
            stmt.int(3),
            stmt.int(4),
        ]);
    }
    drop(stmt);
    db.prepare("DELETE FROM sdsync_versions WHERE tbl = ?1")?
        .run(std::slice::from_ref(&id))?;
    // Oldest first, so a later (newer) group with the same columns replaces it.
    let mut insert = db.prepare(
        "INSERT INTO sdsync_versions(tbl, rid, mask, origin, seq, hlc) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT(tbl, rid, mask) DO UPDATE SET origin = excluded.origin, seq = excluded.seq, hlc = excluded.hlc",
    )?;
    for [rid, mask, origin, seq, hlc] in rows.into_iter().filter(|r| r[1] != 0) {
        insert.run(&[
            id.clone(),
            Value::Integer(rid),
            Value::Integer(mask),
            Value::Integer(origin),
            Value::Integer(seq),
            Value::Integer(hlc),
        ])?;
    }
    drop(insert);
    let mut parked = Vec::new();
    let mut stmt = db.prepare("SELECT origin, seq, mask FROM sdsync_parked WHERE tbl = ?1")?;
    stmt.bind_all(std::slice::from_ref(&id))?;
    while stmt.step()? {
        parked.push((stmt.int(0), stmt.int(1), remap(stmt.int(2) as u64) as i64));
    }
    drop(stmt);
    let mut update =
        db.prepare("UPDATE sdsync_parked SET mask = ?3 WHERE origin = ?1 AND seq = ?2")?;
    for (origin, seq, mask) in parked {
        update.run(&[
            Value::Integer(origin),
            Value::Integer(seq),
            Value::Integer(mask),
        ])?;
    }
    Ok(())
}

/// Records, as this device's changes, the values rows hold in columns `new` has
/// and `old` had not (written between `ALTER TABLE … ADD COLUMN` and re-tracking,
/// when capture did not know the column). A value equal to the column's default
/// is what every device has after the same ALTER, so it is not recorded. This
/// device's owned rows travel whole again: their versions cover the new columns.
pub fn capture_added(
    db: Db,
    old: &TableSpec,
    new: &TableSpec,
    origin: i64,
    wall_ms: u64,
) -> Result<i64, SqlError> {
    let added: Vec<(usize, &str)> = new
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !old.columns.iter().any(|o| o.name == c.name))
        .map(|(i, c)| (i, c.name.as_str()))
        .collect();
    if new.class == Class::Owned {
        // Owned versions cover the whole row; the update trigger keeps the mask.
        db.prepare("UPDATE sdsync_versions SET mask = ?2 WHERE tbl = ?1 AND origin = ?3")?
            .run(&[
                Value::Integer(new.id),
                Value::Integer(new.all_mask() as i64),
                Value::Integer(origin),
            ])?;
    }
    if added.is_empty() {
        return Ok(0);
    }
    let defaults = crate::catalog::column_defaults(db, new)?;
    let bits: Vec<String> = added
        .iter()
        .map(|(i, name)| {
            // The default as a literal SQL value: bound text would not compare
            // equal to a stored number, so numbers are written out.
            let default = match defaults.get(*i).cloned().flatten() {
                Some(Value::Integer(n)) => n.to_string(),
                Some(Value::Real(r)) if r.is_finite() => format!("{r:?}"),
                Some(Value::Real(r)) => (if r > 0.0 { "9e999" } else { "-9e999" }).into(),
                Some(Value::Text(t)) => quote_literal(&t),
                Some(Value::Blob(b)) => format!(
                    "x'{}'",
                    b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                ),
                _ => "NULL".into(),
            };
            format!("((t.{} IS NOT {default}) << {})", quote_ident(name), i + 1)
        })
        .collect();
    let differs = format!("({})", bits.join(" | "));
    let rid = quote_ident(&new.local_id);
    let rows = match new.class {
        Class::Shared => format!(
            "SELECT t.{rid} AS rid, {differs} AS mask FROM {t} t WHERE {differs} <> 0",
            t = quote_ident(&new.name)
        ),
        Class::Owned => format!(
            "SELECT t.{rid} AS rid, {all} AS mask FROM {t} t WHERE {differs} <> 0 AND EXISTS \
             (SELECT 1 FROM sdsync_versions v WHERE v.tbl = {id} AND v.rid = t.{rid} AND +v.origin = {origin})",
            all = new.all_mask(),
            t = quote_ident(&new.name),
            id = new.id,
        ),
    };
    stamp(db, new.id, origin, &rows, wall_ms)
}

/// Forgets the versions of rows that no longer exist. After a rebuild only: a
/// rebuild keeps every row's `INTEGER PRIMARY KEY`, so this finds nothing unless
/// a row was deleted while capture was missing.
pub fn prune_vanished(db: Db, spec: &TableSpec) -> Result<(), SqlError> {
    db.prepare(&format!(
        "DELETE FROM sdsync_versions WHERE tbl = ?1 AND rid NOT IN (SELECT {} FROM {})",
        quote_ident(&spec.local_id),
        quote_ident(&spec.name)
    ))?
    .run(&[Value::Integer(spec.id)])
}

/// Gives each row `rows` yields (`rid`, `mask`) a new local version: the next
/// sequence numbers and HLCs, as if each had just been written.
pub fn stamp(
    db: Db,
    table_id: i64,
    origin: i64,
    rows: &str,
    wall_ms: u64,
) -> Result<i64, SqlError> {
    let count = db
        .query_i64(&format!("SELECT count(*) FROM ({rows})"), &[])?
        .unwrap_or(0);
    if count == 0 {
        return Ok(0);
    }
    let wall = Value::Integer(Hlc::from_wall(wall_ms).as_i64());
    db.prepare(&format!(
        "INSERT INTO sdsync_versions(tbl, rid, mask, origin, seq, hlc) \
         SELECT ?1, r.rid, r.mask, ?2, c.seq + row_number() OVER (), \
                max(c.hlc, ?3) + row_number() OVER () FROM ({rows}) r, sdsync_clock c WHERE true \
         ON CONFLICT(tbl, rid, mask) DO UPDATE SET origin = excluded.origin, seq = excluded.seq, hlc = excluded.hlc"
    ))?
    .run(&[Value::Integer(table_id), Value::Integer(origin), wall.clone()])?;
    db.prepare("UPDATE sdsync_clock SET seq = seq + ?1, hlc = max(hlc, ?2) + ?1")?
        .run(&[Value::Integer(count), wall])?;
    Ok(count)
}
