//! Applying a peer's change: the merge rules of `sdsync_core::merge`, executed.
//!
//! ```sql
//! -- Copying changes between two databases makes them converge:
//! INSERT INTO sdsync_changes SELECT * FROM other.changes_copy;
//! ```
//!
//! One change at a time: parse it (refusing bad input before any write), check the
//! clock drift and ownership, load the row's version groups, decide with the pure
//! merge rules, write the row and its versions with the writer's own transaction,
//! then wake the parked changes that were waiting for this row. Statements are
//! prepared once per connection and kept in [`Engine`]; the `sdsync_changes` table
//! finalizes them when SQLite disconnects it, before the connection closes.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::rc::Rc;

use serde_json::{Map, Value as Json};

use sdsync_core::hlc::Hlc;
use sdsync_core::merge::{
    Delete, RowState, Upsert, Version, plan_delete, plan_reapply, plan_upsert, renumbered,
};
use sdsync_core::schema::{Class, TableSpec};

use super::parse::{Change, ChangeError, Fields, Op, column_value};
use super::rows;
use crate::catalog::Catalog;
use crate::ffi::{Db, SqlError, Stmt, Value};
use crate::store;

use stmts::{FastHash, Key};

mod claims;
mod evict;
mod fill;
mod kept;
mod live;
mod own;
mod parking;
mod refs;
mod state;
mod stmts;

/// A row waiting in `sdsync_parked`.
struct Parked {
    mask: u64,
    version: Version,
    values: Vec<Value>,
}

/// The engine's maps: small keys, hashed by [`FastHash`].
type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHash>>;

/// A row: its table and uuid.
type RowRef = (Rc<TableSpec>, Value);

/// A parked change waiting for a row: its table, row, origin id and sequence.
type Waiting = (Rc<TableSpec>, Value, i64, i64);

/// The per-connection apply state: cached statements, catalog and origin ids.
pub struct Engine {
    db: Db,
    stmts: FastMap<Key, Stmt>,
    catalog: Catalog,
    schema_version: Option<i64>,
    local_origin: Option<i64>,
    max_drift_ms: u64,
    /// `PRAGMA data_version` (moves when another connection commits) and this
    /// connection's `Conn::local_writes` after our last apply (moves when the
    /// app on this connection writes a tracked table): when either moves, the
    /// known-empty flags are stale.
    data_version: Option<(i64, u64)>,
    /// What this transaction taught the engine (see [`TxState`]).
    tx: TxState,
    /// The wall clock of the current apply (the connection's, see `Conn::wall_ms`).
    wall_ms: u64,
    /// The HLC of the change being applied: a local change apply makes itself
    /// (`evict::unlink_own_row`) must be newer. The clock is raised to it only
    /// after the change's own writes succeeded, so a refused change moves nothing.
    incoming_hlc: u64,
    /// The schema changed since kept changes were last retried (at a sweep).
    kept_due: bool,
}

/// What the engine knows of the database's *contents*, valid only as long as the
/// transaction that learnt it: a rollback can undo an origin row apply created,
/// the clock it raised, a parent whose id it cached or a parked row it wrote.
/// Kept past a rollback, these once made a change of one origin be stored as
/// another's. The `sdsync_changes` table drops it when a transaction or
/// savepoint begins or rolls back, and after any failed (or panicked) apply.
#[derive(Default)]
struct TxState {
    origin_ids: FastMap<String, i64>,
    origin_names: FastMap<i64, String>,
    /// Whether `sdsync_parked` is known to be empty (`None`: look).
    parked_empty: Option<bool>,
    /// Whether `sdsync_tombstones` is known to be empty (`None`: look).
    tombstones_empty: Option<bool>,
    /// Referenced rows' local ids by uuid, per (table, column). Valid while no one
    /// else writes and apply deletes nothing (ids are never reused otherwise).
    refs: FastMap<(i64, usize), FastMap<String, Value>>,
    /// A value the persisted clock is known to have reached.
    clock_floor: u64,
    /// The highest sequence number of each origin (by local id) that
    /// `sdsync_versions` or `sdsync_tombstones` hold, raised as apply writes
    /// more: a change above it cannot have been issued twice, so
    /// [`Engine::check_fork`] skips its two lookups (most changes of a
    /// backfill or a live stream are above what is held).
    top_seq: FastMap<i64, i64>,
    /// `PRAGMA data_version` as this transaction sees it: another connection's
    /// commit cannot show inside a transaction (its snapshot is fixed until it
    /// ends), so it is read once per transaction rather than per change.
    data_version: Option<i64>,
}

impl Engine {
    /// An engine for one connection.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            stmts: HashMap::default(),
            catalog: Catalog::default(),
            schema_version: None,
            local_origin: None,
            max_drift_ms: 300_000,
            data_version: None,
            tx: TxState::default(),
            wall_ms: 0,
            incoming_hlc: 0,
            kept_due: true,
        }
    }

    /// Forgets what the current transaction taught the engine: a transaction or
    /// savepoint began (`rolled_back` false) or was rolled back. After a rollback
    /// the schema may have moved back too, so the catalog is reloaded.
    pub fn forget_transaction(&mut self, rolled_back: bool) {
        self.tx = TxState::default();
        if rolled_back {
            // Forces a fresh look (and a sweep) at the next apply; a mere begin
            // keeps it, or every transaction would start with a sweep.
            self.data_version = None;
            self.schema_version = None;
        }
    }

    /// Applies one inserted `sdsync_changes` row. A failed apply is rolled back
    /// by SQLite (the statement's changes), so what it learnt is forgotten.
    pub fn apply(
        &mut self,
        fields: Fields,
        wall_ms: u64,
        local_writes: &Cell<u64>,
    ) -> Result<(), ChangeError> {
        let result = self.apply_row(fields, wall_ms, local_writes);
        if result.is_err() {
            self.forget_transaction(true);
        }
        result
    }

    fn apply_row(
        &mut self,
        fields: Fields,
        wall_ms: u64,
        local_writes: &Cell<u64>,
    ) -> Result<(), ChangeError> {
        self.wall_ms = wall_ms;
        let others_wrote = self.refresh(local_writes.get())?;
        if fields.is_sweep() {
            if std::mem::take(&mut self.kept_due) {
                self.retry_kept()?;
            }
            return self.sweep();
        }
        if others_wrote {
            self.sweep()?;
        }
        let parsed = Change::parse(fields, &self.catalog)?;
        if let Some(kept) = &parsed.kept {
            self.check_drift(&kept.tbl, &kept.pk, &kept.origin, kept.hlc)?;
        }
        if let Some(change) = &parsed.change {
            self.check_drift(&change.table.name, &change.pk, &change.origin, change.hlc)?;
            self.apply_parsed(change)?;
        }
        if let Some(kept) = &parsed.kept {
            self.keep(kept)?;
            let version = Version::new(kept.hlc.as_i64() as u64, &kept.origin, 0, kept.seq);
            self.raise_clock(&version)?;
        }
        if let Some((data, _)) = self.data_version {
            self.data_version = Some((data, local_writes.get()));
        }
        Ok(())
    }

    /// Applies a parsed change and wakes what waited for it.
    fn apply_parsed(&mut self, change: &Change) -> Result<(), ChangeError> {
        let origin_id = self.known_origin(&change.origin)?.unwrap_or(0);
        let mut version = Version {
            hlc: change.hlc.as_i64() as u64,
            origin_id,
            origin: change.origin.clone(),
            seq: change.seq,
        };
        self.incoming_hlc = version.hlc;
        if origin_id != 0 && self.local_origin == Some(origin_id) {
            if self.issues_again(change, &version)? {
                version.seq = self.reissue(change.seq)?;
            }
        } else {
            self.check_fork(change, &version)?;
        }
        let woke = self.apply_one(change, &version)?;
        self.wake(woke)?;
        self.raise_clock(&version)
    }

    /// Reloads the catalog and drops cached statements after any schema change;
    /// forgets what it knew of the parked table after another connection's commit.
    /// Returns whether anyone else wrote since this engine last applied.
    fn refresh(&mut self, local_writes: u64) -> Result<bool, ChangeError> {
        // Plain PRAGMA statements read a header field; the pragma_* table-valued
        // functions would prepare a nested statement on every call.
        let now = self.pragma("PRAGMA schema_version")?;
        let data = match self.tx.data_version {
            Some(data) => data,
            None => {
                let data = self.pragma("PRAGMA data_version")?;
                self.tx.data_version = Some(data);
                data
            }
        };
        // Only writes to tracked tables outside apply can let a parked change
        // go (a row the app re-created). This connection's change count,
        // looked at before, also moved with the syncer's own bookkeeping
        // between pages (what it vouches for, its quarantine): the parked
        // table was swept once per page, and a backfill of a real tree spent
        // a seventh of its time there.
        let moved = match self.data_version {
            Some((d, w)) => d != data || w != local_writes,
            None => true,
        };
        if moved {
            // This device's updates since are in its log: apply merges
            // against versions, so they go there first.
            crate::fold::fold(self.db)?;
            self.data_version = Some((data, local_writes));
            self.tx.parked_empty = None;
            self.tx.tombstones_empty = None;
            self.tx.refs.clear();
            self.tx.top_seq.clear();
        }
        if self.schema_version == Some(now) {
            return Ok(moved);
        }
        self.tx.parked_empty = None;
        self.tx.refs.clear();
        self.tx.top_seq.clear();
        self.stmts.clear();
        self.catalog = Catalog::load_for_apply(self.db)?;
        self.schema_version = Some(now);
        // What the schema gained may be what kept changes wait for.
        self.kept_due = true;
        self.tx.origin_ids.clear();
        self.tx.origin_names.clear();
        if store::exists(self.db)? {
            self.max_drift_ms = store::max_drift_ms(self.db)?;
        }
        // Re-identifying re-creates the triggers, so it moves schema_version too.
        self.local_origin = store::local_origin(self.db)?;
        self.schema_version = Some(now);
        Ok(true)
    }

    /// Applies parked changes whose wait is over although no applied change
    /// announced it: typically a row the app itself re-created. Runs when anyone
    /// else wrote since the last apply, and on `INSERT INTO sdsync_changes(op)
    /// VALUES ('sweep')`.
    fn sweep(&mut self) -> Result<(), ChangeError> {
        if self.parked_is_empty()? {
            return Ok(());
        }
        let tables: Vec<i64> = {
            let stmt = self.stmt("SELECT DISTINCT wait_tbl FROM sdsync_parked")?;
            stmt.bind_all(&[])?;
            let mut t = Vec::new();
            while stmt.step()? {
                t.push(stmt.int(0));
            }
            stmt.reset();
            t
        };
        let mut ready = Vec::new();
        for t in tables {
            let Some(spec) = self.catalog.by_id(t).cloned() else {
                continue;
            };
            let stmt = self.keyed(Key::Ready(t), || rows::ready_sql(&spec))?;
            stmt.bind_all(&[])?;
            while stmt.step()? {
                ready.push((spec.clone(), stmt.value(0)));
            }
            stmt.reset();
        }
        self.wake(ready)
    }

    fn check_drift(
        &self,
        table: &str,
        pk: &Value,
        origin: &str,
        hlc: Hlc,
    ) -> Result<(), ChangeError> {
        let ahead = hlc.ahead_of(self.wall_ms);
        if ahead <= self.max_drift_ms {
            return Ok(());
        }
        Err(ChangeError::FarFuture {
            table: table.to_string(),
            pk: pk.to_string(),
            origin: origin.to_string(),
            hlc: hlc.to_string(),
            ahead_ms: ahead,
            max_ms: self.max_drift_ms,
        })
    }

    /// Receive rule: the local clock never issues a value at or below a received
    /// one. A change of our own origin that we lack (a restored backup) also moves
    /// the local sequence past it, so no sequence number is ever issued twice.
    ///
    /// The clock is raised to the wall clock as well: the send rule would issue
    /// at least that next anyway, and it lets the following changes of the batch
    /// (older than now) skip the write.
    fn raise_clock(&mut self, v: &Version) -> Result<(), ChangeError> {
        let id = self.known_origin(&v.origin)?;
        let local = id.is_some() && self.local_origin == id;
        let target = v.hlc.max(Hlc::from_wall(self.wall_ms).as_i64() as u64);
        if !local && v.hlc <= self.tx.clock_floor {
            return Ok(());
        }
        self.tx.clock_floor = self.tx.clock_floor.max(target);
        let v = &Version {
            hlc: target,
            ..v.clone()
        };
        self.run(
            "UPDATE sdsync_clock SET hlc = max(hlc, ?1), seq = CASE WHEN ?3 THEN max(seq, ?2) ELSE seq END \
             WHERE hlc < ?1 OR (?3 AND seq < ?2)",
            &[
                Value::Integer(v.hlc as i64),
                Value::Integer(v.seq),
                Value::Integer(i64::from(local)),
            ],
        )?;
        Ok(())
    }

    /// Merges one change; returns the rows whose waiting changes may move now
    /// (rows that came into existence, and a row just deleted: see [`Self::wake`]).
    fn apply_one(&mut self, change: &Change, v: &Version) -> Result<Vec<RowRef>, ChangeError> {
        let spec = change.table.clone();
        let (state, rid) = self.state(&spec, &change.pk)?;
        let (state, renumbered_here) = self.adopt_number(&spec, &change.pk, state, rid, v)?;
        let state = self.claim(change, state, rid)?;
        let lifted = lifted(change, &state, v);
        let v = lifted.as_ref().unwrap_or(v);
        match change.op {
            Op::Delete => self.delete(&spec, &change.pk, &state, rid, v),
            Op::Upsert => match self.plan_with_fill(change, &state, rid, v, renumbered_here)? {
                Upsert::Ignore => Ok(Vec::new()),
                Upsert::Write(bits) => {
                    let (RowState::Alive(groups), Some(rid)) = (&state, rid) else {
                        return Ok(Vec::new());
                    };
                    // An owned row is its owner's newest version: an older one
                    // writes nothing, not even columns the row's version lacks
                    // (a kept change re-applied after a newer one).
                    if spec.class == Class::Owned && groups.iter().any(|g| g.version.beats(v)) {
                        return Ok(Vec::new());
                    }
                    self.write(change, v, bits, groups, rid)
                }
                Upsert::Park => {
                    let row = (spec.clone(), change.pk.clone());
                    let became = self.materialize(&spec, &change.pk, &state, Some((change, v)))?;
                    // Parked waiting for a row gone, the row is gone too: what
                    // waits for it meets that (`live::unresolved`).
                    Ok(if became || self.gone_with_waiters(&row)? {
                        vec![row]
                    } else {
                        Vec::new()
                    })
                }
            },
        }
    }

    /// Applies a delete; returns the rows whose waiting changes may move now:
    /// the deleted row and the rows it evicted (some may exist again, their
    /// newer pieces no longer referencing the deleted row).
    fn delete(
        &mut self,
        spec: &Rc<TableSpec>,
        pk: &Value,
        state: &RowState,
        rid: Option<i64>,
        v: &Version,
    ) -> Result<Vec<RowRef>, ChangeError> {
        match plan_delete(state, v) {
            Delete::Ignore => Ok(Vec::new()),
            Delete::Tombstone => {
                self.set_tombstone(spec, pk, v)?;
                self.unpark_older(spec, pk, v)?;
                // Live rows whose newer pieces waited for this row now meet
                // a deleted one (`live::unresolved`).
                Ok(vec![(spec.clone(), pk.clone())])
            }
            Delete::Kill(newer) => {
                let (RowState::Alive(groups), Some(rid)) = (state, rid) else {
                    return Ok(Vec::new());
                };
                let mut keep = Vec::new();
                for i in newer {
                    keep.push(self.group_change(spec, pk, rid, &groups[i])?);
                }
                // Deleting may free ids, so cached references go.
                self.tx.refs.clear();
                let evicted = self.evict_children(spec, rid, pk, 0)?;
                // The apply-mode delete trigger drops the row's version groups.
                self.run_keyed(
                    Key::Delete(spec.id),
                    || rows::delete_sql(spec),
                    std::slice::from_ref(pk),
                )?;
                let me = (spec.clone(), pk.clone());
                for (change, version) in keep {
                    self.park(&change, &version, &me, "updated after a delete")?;
                }
                self.set_tombstone(spec, pk, v)?;
                self.unpark_older(spec, pk, v)?;
                // Pieces parked while the row was alive waited for their own
                // references; now they are assembled together, so they wait for
                // whatever the assembled row lacks (a newer re-creation may even
                // bring it straight back). The same holds for evicted children.
                // Live rows whose newer pieces waited for this row or an
                // evicted one now meet a row gone (`live::unresolved`).
                self.reassemble(std::iter::once(me).chain(evicted).collect())
            }
        }
    }

    /// Assembles again the parked pieces of rows just evicted or deleted, and
    /// returns them all for [`Self::wake`]: those that exist again, and those
    /// gone, for the live rows whose pieces waited for them (`live::unresolved`).
    fn reassemble(&mut self, rows: Vec<RowRef>) -> Result<Vec<RowRef>, ChangeError> {
        if self.parked_is_empty()? {
            return Ok(rows);
        }
        for row in &rows {
            let (state, _) = self.state(&row.0, &row.1)?;
            self.materialize(&row.0, &row.1, &state, None)?;
        }
        Ok(rows)
    }

    /// Drops the parked pieces of a row that a delete at `v` supersedes.
    fn unpark_older(
        &mut self,
        spec: &Rc<TableSpec>,
        pk: &Value,
        v: &Version,
    ) -> Result<(), SqlError> {
        let pieces = self.parked_for_row(spec, pk)?;
        for (_, p) in pieces.iter().filter(|(_, p)| !p.version.beats(v)) {
            self.unpark(p.version.origin_id, p.version.seq)?;
        }
        Ok(())
    }
}

/// A stored version (parked piece or live group) as the upsert that re-applies it.
fn upsert(spec: &Rc<TableSpec>, pk: &Value, values: Vec<Value>, mask: u64, v: &Version) -> Change {
    Change {
        table: spec.clone(),
        pk: pk.clone(),
        op: Op::Upsert,
        values,
        mask,
        origin: v.origin.clone(),
        seq: v.seq,
        hlc: Hlc::from_i64(v.hlc as i64).unwrap_or_default(),
        carried: mask,
        again: false,
    }
}

/// The number a change plans and writes under when not its own: a kept copy
/// retried while the row holds its change under a higher number takes that
/// number (`merge::renumbered`).
pub(super) fn lifted(change: &Change, state: &RowState, v: &Version) -> Option<Version> {
    change.again.then(|| renumbered(state, v)).flatten()
}

/// What an upsert does to a row in `state`. A kept change retried also takes
/// the bits its own version holds (`merge::plan_reapply`), and so does a
/// renumbered copy of a change held here (`renumbered_here`): its origin
/// issues a change again under a new number when it writes it again, and
/// that write may carry more than the first copy did (a column the origin
/// lacked when it first applied the change, kept and written after its own
/// schema change: simulation seed 9714). Only a renamed column can hold
/// such a default where its origin wrote a value, as in a kept change's
/// retry (`kept::retry_kept`), so only renamed columns the copy names as
/// this database does are taken again (`Change::carried`). Any other column
/// the copy names may be a default the origin gave it (a creating change
/// defines every column), where this database holds the value: under a
/// former name, the origin had not renamed the column yet; under the same
/// name, this database took the value from the first copy (found by review,
/// `a_change_written_again_after_an_upgrade_reaches_peers_holding_its_first_copy`).
pub(super) fn upsert_plan(
    change: &Change,
    state: &RowState,
    v: &Version,
    renumbered_here: bool,
) -> Upsert {
    if change.again {
        plan_reapply(state, change.mask, v, change.carried)
    } else if renumbered_here {
        let renamed = change.carried & change.table.renamed_mask();
        plan_reapply(state, change.mask, v, renamed)
    } else {
        plan_upsert(state, change.mask, v)
    }
}

/// Parameters of an insert or update: the uuid, then the columns of `columns`
/// (in column order, as `TableSpec::columns_in` lists them), moved out of the
/// row's values.
fn row_params(pk: &Value, columns: u64, values: Vec<Value>) -> Vec<Value> {
    let mut params = Vec::with_capacity(1 + columns.count_ones() as usize);
    params.push(pk.clone());
    params.extend(
        values
            .into_iter()
            .enumerate()
            .filter(|(i, _)| columns & (1u64 << (i + 1)) != 0)
            .map(|(_, v)| v),
    );
    params
}

/// Column values of a stored JSON object (validated when it arrived).
fn decode(spec: &TableSpec, data: &Map<String, Json>) -> Vec<Value> {
    let mut values = vec![Value::Null; spec.columns.len()];
    for (i, col) in spec.columns.iter().enumerate() {
        // Stored before the column was renamed: under its former name.
        let former = || {
            spec.column_aliases
                .iter()
                .filter(|(_, current)| *current == col.name)
                .find_map(|(former, _)| data.get(former))
        };
        if let Some(json) = data.get(&col.name).or_else(former) {
            values[i] = column_value(spec, i, json).unwrap_or(Value::Null);
        }
    }
    values
}
