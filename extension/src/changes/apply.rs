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

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use serde_json::{Map, Value as Json};

use sdsync_core::hlc::Hlc;
use sdsync_core::merge::{
    Delete, Group, Piece, RowState, Upsert, Version, assemble, normalize, plan_delete, plan_upsert,
    with_win,
};
use sdsync_core::schema::{Class, ROW_BIT, TableSpec};

use super::parse::{Change, ChangeError, Fields, Op, column_value};
use super::rows;
use crate::catalog::Catalog;
use crate::ffi::{Db, SqlError, Stmt, Value};
use crate::store;
use crate::values::to_json;

/// A row waiting in `sdsync_parked`.
struct Parked {
    mask: u64,
    version: Version,
    values: Vec<Value>,
}

/// What a cached statement is, so the hot path neither builds nor hashes SQL text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// Fixed SQL.
    Sql(&'static str),
    /// Insert into a table with the columns of a mask.
    Insert(i64, u64),
    /// Update the columns of a mask.
    Update(i64, u64),
    /// Delete a row by uuid.
    Delete(i64),
    /// Read a row by local id.
    Select(i64),
    /// Resolve reference column `usize` of a table.
    Resolve(i64, usize),
    /// A row's id and version groups.
    State(i64),
    /// Rows of a table referencing a row through column `usize`.
    Children(i64, usize),
    /// Rows of a table that parked changes wait for and that exist now.
    Ready(i64),
}

/// FNV-1a: the statement cache is looked up several times per applied change and
/// its keys are a few machine words, for which SipHash is needlessly slow.
#[derive(Default)]
struct FastHash(u64);

impl Hasher for FastHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A row: its table and uuid.
type RowRef = (Rc<TableSpec>, Value);

/// A parked change waiting for a row: its table, row, origin id and sequence.
type Waiting = (Rc<TableSpec>, Value, i64, i64);

/// The per-connection apply state: cached statements, catalog and origin ids.
pub struct Engine {
    db: Db,
    stmts: HashMap<Key, Stmt, BuildHasherDefault<FastHash>>,
    catalog: Catalog,
    schema_version: Option<i64>,
    local_origin: Option<i64>,
    max_drift_ms: u64,
    /// `PRAGMA data_version` (moves when another connection commits) and this
    /// connection's total changes after our last apply (moves when the app on this
    /// connection writes): when either moves, the known-empty flags are stale.
    data_version: Option<(i64, i64)>,
    /// What this transaction taught the engine (see [`TxState`]).
    tx: TxState,
    /// The wall clock of the current apply (the connection's, see `Conn::wall_ms`).
    wall_ms: u64,
}

/// What the engine knows of the database's *contents*, valid only as long as the
/// transaction that learnt it: a rollback can undo an origin row apply created,
/// the clock it raised, a parent whose id it cached or a parked row it wrote.
/// Kept past a rollback, these once made a change of one origin be stored as
/// another's. The `sdsync_changes` table drops it when a transaction or
/// savepoint begins or rolls back, and after any failed (or panicked) apply.
#[derive(Default)]
struct TxState {
    origin_ids: HashMap<String, i64, BuildHasherDefault<FastHash>>,
    origin_names: HashMap<i64, String, BuildHasherDefault<FastHash>>,
    /// Whether `sdsync_parked` is known to be empty (`None`: look).
    parked_empty: Option<bool>,
    /// Whether `sdsync_tombstones` is known to be empty (`None`: look).
    tombstones_empty: Option<bool>,
    /// Referenced rows' local ids by uuid, per (table, column). Valid while no one
    /// else writes and apply deletes nothing (ids are never reused otherwise).
    refs: HashMap<(i64, usize), HashMap<String, Value>, BuildHasherDefault<FastHash>>,
    /// A value the persisted clock is known to have reached.
    clock_floor: u64,
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
        }
    }

    /// Forgets what the current transaction taught the engine: a transaction or
    /// savepoint began (`rolled_back` false) or was rolled back. After a rollback
    /// the schema may have moved back too, so the catalog is reloaded.
    pub fn forget_transaction(&mut self, rolled_back: bool) {
        self.tx = TxState::default();
        self.data_version = None;
        if rolled_back {
            self.schema_version = None;
        }
    }

    /// Applies one inserted `sdsync_changes` row. A failed apply is rolled back
    /// by SQLite (the statement's changes), so what it learnt is forgotten.
    pub fn apply(&mut self, fields: Fields, wall_ms: u64) -> Result<(), ChangeError> {
        let result = self.apply_row(fields, wall_ms);
        if result.is_err() {
            self.forget_transaction(true);
        }
        result
    }

    fn apply_row(&mut self, fields: Fields, wall_ms: u64) -> Result<(), ChangeError> {
        self.wall_ms = wall_ms;
        let others_wrote = self.refresh()?;
        if fields.is_sweep() {
            return self.sweep();
        }
        if others_wrote {
            self.sweep()?;
        }
        let change = Change::parse(fields, &self.catalog)?;
        self.check_drift(&change)?;
        let version = Version {
            hlc: change.hlc.as_i64() as u64,
            origin_id: self.known_origin(&change.origin)?.unwrap_or(0),
            origin: change.origin.clone(),
            seq: change.seq,
        };
        let woke = self.apply_one(&change, &version)?;
        self.wake(woke)?;
        self.raise_clock(&version)?;
        if let Some((data, _)) = self.data_version {
            self.data_version = Some((data, self.db.total_changes()));
        }
        Ok(())
    }

    /// Reloads the catalog and drops cached statements after any schema change;
    /// forgets what it knew of the parked table after another connection's commit.
    /// Returns whether anyone else wrote since this engine last applied.
    fn refresh(&mut self) -> Result<bool, ChangeError> {
        // Plain PRAGMA statements read a header field; the pragma_* table-valued
        // functions would prepare a nested statement on every call.
        let now = self.pragma("PRAGMA schema_version")?;
        let data = self.pragma("PRAGMA data_version")?;
        let seen = Some((data, self.db.total_changes()));
        let moved = self.data_version != seen;
        if moved {
            self.data_version = seen;
            self.tx.parked_empty = None;
            self.tx.tombstones_empty = None;
            self.tx.refs.clear();
        }
        if self.schema_version == Some(now) {
            return Ok(moved);
        }
        self.tx.parked_empty = None;
        self.tx.refs.clear();
        self.stmts.clear();
        self.catalog = Catalog::load(self.db)?;
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

    fn pragma(&mut self, sql: &'static str) -> Result<i64, SqlError> {
        let stmt = self.stmt(sql)?;
        stmt.bind_all(&[])?;
        let v = if stmt.step()? { stmt.int(0) } else { 0 };
        stmt.reset();
        Ok(v)
    }

    fn keyed(&mut self, key: Key, build: impl FnOnce() -> String) -> Result<&mut Stmt, SqlError> {
        if !self.stmts.contains_key(&key) {
            let stmt = self.db.prepare(&build())?;
            self.stmts.insert(key, stmt);
        }
        // Invariant: inserted just above if it was missing.
        Ok(self.stmts.get_mut(&key).expect("statement cached above"))
    }

    fn stmt(&mut self, sql: &'static str) -> Result<&mut Stmt, SqlError> {
        self.keyed(Key::Sql(sql), || sql.to_string())
    }

    fn run(&mut self, sql: &'static str, params: &[Value]) -> Result<(), SqlError> {
        self.stmt(sql)?.run(params)
    }

    fn run_keyed(
        &mut self,
        key: Key,
        build: impl FnOnce() -> String,
        params: &[Value],
    ) -> Result<(), SqlError> {
        self.keyed(key, build)?.run(params)
    }

    fn check_drift(&self, change: &Change) -> Result<(), ChangeError> {
        let ahead = change.hlc.ahead_of(self.wall_ms);
        if ahead <= self.max_drift_ms {
            return Ok(());
        }
        Err(ChangeError::FarFuture {
            table: change.table.name.clone(),
            pk: change.pk_text(),
            origin: change.origin.clone(),
            hlc: change.hlc.to_string(),
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

    /// The local id of an origin already known here (no write).
    fn known_origin(&mut self, uuid: &str) -> Result<Option<i64>, SqlError> {
        if let Some(id) = self.tx.origin_ids.get(uuid) {
            return Ok(Some(*id));
        }
        let stmt = self.stmt("SELECT id FROM sdsync_origins WHERE uuid = ?1")?;
        stmt.bind_all(&[Value::Text(uuid.to_string())])?;
        let id = if stmt.step()? {
            Some(stmt.int(0))
        } else {
            None
        };
        stmt.reset();
        if let Some(id) = id {
            self.tx.origin_ids.insert(uuid.to_string(), id);
            self.tx.origin_names.insert(id, uuid.to_string());
        }
        Ok(id)
    }

    /// The local id of a version's origin, creating the origin row on first use.
    /// Called only after the change's table write succeeded, so a refused change
    /// leaves no origin behind.
    fn origin_id(&mut self, v: &Version) -> Result<i64, SqlError> {
        if v.origin_id > 0 {
            return Ok(v.origin_id);
        }
        if let Some(id) = self.known_origin(&v.origin)? {
            return Ok(id);
        }
        let id = store::intern_origin(self.db, &v.origin)?;
        self.tx.origin_ids.insert(v.origin.clone(), id);
        self.tx.origin_names.insert(id, v.origin.clone());
        Ok(id)
    }

    fn origin_name(&mut self, id: i64) -> Result<String, SqlError> {
        if let Some(name) = self.tx.origin_names.get(&id) {
            return Ok(name.clone());
        }
        let stmt = self.stmt("SELECT uuid FROM sdsync_origins WHERE id = ?1")?;
        stmt.bind_all(&[Value::Integer(id)])?;
        let name = if stmt.step()? {
            stmt.text(0).unwrap_or_default()
        } else {
            String::new()
        };
        stmt.reset();
        self.tx.origin_names.insert(id, name.clone());
        Ok(name)
    }

    /// Merges one change; returns the rows that came into existence.
    fn apply_one(&mut self, change: &Change, v: &Version) -> Result<Vec<RowRef>, ChangeError> {
        let spec = change.table.clone();
        let (state, rid) = self.state(&spec, &change.pk)?;
        if let Some(owner) = state
            .owner()
            .filter(|o| spec.class == Class::Owned && *o != change.origin)
        {
            return Err(ChangeError::Forged {
                table: spec.name.clone(),
                pk: change.pk_text(),
                owner: owner.to_string(),
                origin: change.origin.clone(),
            });
        }
        match change.op {
            Op::Delete => self.delete(&spec, &change.pk, &state, rid, v),
            Op::Upsert => match plan_upsert(&state, change.mask, v) {
                Upsert::Ignore => Ok(Vec::new()),
                Upsert::Write(bits) => {
                    let (RowState::Alive(groups), Some(rid)) = (&state, rid) else {
                        return Ok(Vec::new());
                    };
                    self.write(change, v, bits, groups, rid)?;
                    Ok(Vec::new())
                }
                Upsert::Park => {
                    let became = self.materialize(&spec, &change.pk, &state, Some((change, v)))?;
                    Ok(if became {
                        vec![(spec, change.pk.clone())]
                    } else {
                        Vec::new()
                    })
                }
            },
        }
    }

    /// Writes the bits a change won to a live row, unless a referenced row is missing.
    fn write(
        &mut self,
        change: &Change,
        v: &Version,
        bits: u64,
        groups: &[Group],
        rid: i64,
    ) -> Result<(), ChangeError> {
        let spec = &change.table;
        let resolved = match self.resolve(spec, &change.values, bits)? {
            Ok(resolved) => resolved,
            Err(parent) => return self.park(change, v, &parent, "waiting for a referenced row"),
        };
        let columns = bits & !ROW_BIT;
        if columns != 0 {
            let params = row_params(spec, &change.pk, columns, &resolved);
            self.run_keyed(
                Key::Update(spec.id, columns),
                || rows::update_sql(spec, columns),
                &params,
            )?;
        }
        // Groups may overlap (the newest owns a bit): when every existing group
        // keeps some bit, adding the new group is enough; otherwise rewrite them.
        if groups.iter().all(|g| g.mask & !bits != 0) {
            self.put_group(
                spec,
                rid,
                &Group {
                    mask: bits,
                    version: v.clone(),
                },
            )?;
        } else {
            self.set_groups(spec, rid, &with_win(groups, bits, v), false)?;
        }
        Ok(())
    }

    /// Applies a delete; returns the rows that exist again afterwards (evicted
    /// children whose newer pieces no longer reference the deleted row).
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
                Ok(Vec::new())
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
                let mut back = Vec::new();
                if self.parked_is_empty()? {
                    return Ok(back);
                }
                for row in std::iter::once(me).chain(evicted) {
                    let (state, _) = self.state(&row.0, &row.1)?;
                    if self.materialize(&row.0, &row.1, &state, None)? {
                        back.push(row);
                    }
                }
                Ok(back)
            }
        }
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

    /// Parks and removes the rows that reference a row apply is about to delete,
    /// instead of letting ON DELETE CASCADE drop them unrecorded (or RESTRICT refuse
    /// the delete). The origin deleted only the children it knew of and sends its
    /// own tombstones for them; a child added concurrently elsewhere must come back
    /// if the row is re-created, exactly as on the devices that never saw it go.
    ///
    /// Returns the evicted rows, parents before their own children.
    fn evict_children(
        &mut self,
        spec: &Rc<TableSpec>,
        rid: i64,
        pk: &Value,
        depth: usize,
    ) -> Result<Vec<RowRef>, ChangeError> {
        let mut evicted = Vec::new();
        if depth > 64 {
            return Ok(evicted);
        }
        let links: Vec<(Rc<TableSpec>, usize)> = self
            .catalog
            .ordered
            .iter()
            .flat_map(|c| {
                c.columns
                    .iter()
                    .enumerate()
                    .filter(|(_, col)| col.reference.as_ref().is_some_and(|r| r.table == spec.name))
                    .map(|(i, _)| (c.clone(), i))
                    .collect::<Vec<_>>()
            })
            .collect();
        let wait = (spec.clone(), pk.clone());
        for (child, i) in links {
            let stmt = self.keyed(Key::Children(child.id, i), || {
                rows::children_sql(&child, i, spec)
            })?;
            stmt.bind_all(&[Value::Integer(rid)])?;
            let mut found = Vec::new();
            while stmt.step()? {
                found.push((stmt.int(0), stmt.value(1)));
            }
            stmt.reset();
            for (crid, cpk) in found {
                if child.id == spec.id && crid == rid {
                    continue;
                }
                let below = self.evict_children(&child, crid, &cpk, depth + 1)?;
                let (RowState::Alive(groups), _) = self.state(&child, &cpk)? else {
                    evicted.extend(below);
                    continue;
                };
                let mut keep = Vec::new();
                for g in &groups {
                    keep.push(self.group_change(&child, &cpk, crid, g)?);
                }
                self.run_keyed(
                    Key::Delete(child.id),
                    || rows::delete_sql(&child),
                    std::slice::from_ref(&cpk),
                )?;
                for (change, version) in keep {
                    self.park(&change, &version, &wait, "its referenced row was deleted")?;
                }
                evicted.push((child.clone(), cpk));
                evicted.extend(below);
            }
        }
        Ok(evicted)
    }

    /// A live row's group (an update newer than a delete) as a change to park.
    fn group_change(
        &mut self,
        spec: &Rc<TableSpec>,
        pk: &Value,
        rid: i64,
        group: &Group,
    ) -> Result<(Change, Version), ChangeError> {
        let data = {
            let stmt = self.keyed(Key::Select(spec.id), || rows::select_sql(spec))?;
            rows::read_json(stmt, spec, rid, group.mask)?
                .map(|(_, d)| d)
                .unwrap_or_default()
        };
        let values = decode(spec, &data);
        let change = upsert(spec, pk, values, group.mask, &group.version);
        Ok((change, group.version.clone()))
    }

    /// Builds a row that is not alive from its parked pieces plus `incoming`; parks
    /// `incoming` when the row cannot be built yet. Returns whether the row now exists.
    fn materialize(
        &mut self,
        spec: &Rc<TableSpec>,
        pk: &Value,
        state: &RowState,
        incoming: Option<(&Change, &Version)>,
    ) -> Result<bool, ChangeError> {
        let tomb = match state {
            RowState::Dead(v) => Some(v.clone()),
            _ => None,
        };
        let mut pieces: Vec<Parked> = if self.parked_is_empty()? {
            Vec::new()
        } else {
            self.parked_for_row(spec, pk)?
                .into_iter()
                .map(|(_, p)| p)
                .collect()
        };
        if let Some((c, v)) = incoming {
            pieces.push(Parked {
                mask: c.mask,
                version: v.clone(),
                values: c.values.clone(),
            });
        }
        let shapes: Vec<Piece> = pieces
            .iter()
            .map(|p| Piece {
                mask: p.mask,
                version: p.version.clone(),
            })
            .collect();
        let me = (spec.clone(), pk.clone());
        let Some(asm) = assemble(tomb.as_ref(), &shapes) else {
            return self.park_incoming(
                &me,
                incoming,
                &me,
                "waiting for the change that creates the row",
            );
        };
        let mut values = vec![Value::Null; spec.columns.len()];
        for (i, bits) in &asm.winners {
            for (c, _) in spec.columns_in(*bits) {
                values[c] = pieces[*i].values[c].clone();
            }
        }
        if let Some((_, c)) = spec.columns_in(!asm.covered).find(|(_, c)| c.required) {
            let reason = format!("incomplete: required column {} not received yet", c.name);
            return self.park_incoming(&me, incoming, &me, &reason);
        }
        let resolved = match self.resolve(spec, &values, asm.covered)? {
            Ok(resolved) => resolved,
            Err(parent) => {
                return self.park_incoming(&me, incoming, &parent, "waiting for a referenced row");
            }
        };
        let columns = asm.covered & !ROW_BIT;
        let params = row_params(spec, pk, columns, &resolved);
        self.run_keyed(
            Key::Insert(spec.id, columns),
            || rows::insert_sql(spec, columns),
            &params,
        )?;
        let groups: Vec<Group> = asm
            .winners
            .iter()
            .map(|(i, bits)| Group {
                mask: *bits,
                version: pieces[*i].version.clone(),
            })
            .collect();
        let rid = self.db.last_insert_rowid();
        self.set_groups(spec, rid, &groups, true)?;
        if tomb.is_some() {
            self.run(
                "DELETE FROM sdsync_tombstones WHERE tbl = ?1 AND pk = ?2",
                &[Value::Integer(spec.id), pk.clone()],
            )?;
        }
        if pieces.len() > usize::from(incoming.is_some()) {
            self.tx.parked_empty = None;
            self.run(
                "DELETE FROM sdsync_parked WHERE tbl = ?1 AND pk = ?2",
                &[Value::Integer(spec.id), pk.clone()],
            )?;
        }
        Ok(true)
    }

    /// A row that is not alive cannot be built yet: parks `incoming` and sends
    /// every piece of the row to wait for the same thing, since they are
    /// assembled together.
    fn park_incoming(
        &mut self,
        row: &RowRef,
        incoming: Option<(&Change, &Version)>,
        wait: &RowRef,
        reason: &str,
    ) -> Result<bool, ChangeError> {
        if let Some((c, v)) = incoming {
            self.park(c, v, wait, reason)?;
        } else if self.parked_is_empty()? {
            return Ok(false);
        }
        self.run(
            "UPDATE sdsync_parked SET wait_tbl = ?3, wait_pk = ?4, reason = ?5 WHERE tbl = ?1 AND pk = ?2",
            &[
                Value::Integer(row.0.id),
                row.1.clone(),
                Value::Integer(wait.0.id),
                wait.1.clone(),
                Value::Text(reason.to_string()),
            ],
        )?;
        Ok(false)
    }

    /// Stores a change durably until `wait` exists. Pieces of a live row wait
    /// each for their own reference; see `park_incoming` for rows not alive.
    fn park(
        &mut self,
        c: &Change,
        v: &Version,
        wait: &RowRef,
        reason: &str,
    ) -> Result<(), ChangeError> {
        let origin = self.origin_id(v)?;
        self.tx.parked_empty = Some(false);
        let mut data = Map::new();
        for (i, col) in c.table.columns_in(c.mask) {
            data.insert(col.name.clone(), to_json(&c.values[i]));
        }
        self.run(
            "INSERT OR REPLACE INTO sdsync_parked(origin, seq, tbl, pk, mask, hlc, data, wait_tbl, wait_pk, reason) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            &[
                Value::Integer(origin),
                Value::Integer(v.seq),
                Value::Integer(c.table.id),
                c.pk.clone(),
                Value::Integer(c.mask as i64),
                Value::Integer(v.hlc as i64),
                Value::Text(Json::Object(data).to_string()),
                Value::Integer(wait.0.id),
                wait.1.clone(),
                Value::Text(reason.to_string()),
            ],
        )?;
        Ok(())
    }

    /// Whether nothing is parked (looked up once, then tracked as this engine
    /// parks and unparks; another connection's commit makes it look again).
    fn parked_is_empty(&mut self) -> Result<bool, SqlError> {
        if let Some(empty) = self.tx.parked_empty {
            return Ok(empty);
        }
        let stmt = self.stmt("SELECT NOT EXISTS (SELECT 1 FROM sdsync_parked)")?;
        stmt.bind_all(&[])?;
        let empty = stmt.step()? && stmt.int(0) != 0;
        stmt.reset();
        self.tx.parked_empty = Some(empty);
        Ok(empty)
    }

    fn unpark(&mut self, origin_id: i64, seq: i64) -> Result<(), SqlError> {
        self.tx.parked_empty = None;
        self.run(
            "DELETE FROM sdsync_parked WHERE origin = ?1 AND seq = ?2",
            &[Value::Integer(origin_id), Value::Integer(seq)],
        )
    }

    /// Applies parked changes whose wait is over, until nothing more moves. A
    /// woken change that fails (say, it breaks a UNIQUE constraint of the app) stays
    /// parked with the error as its reason, visible, and does not fail the change
    /// that woke it.
    fn wake(&mut self, mut queue: Vec<RowRef>) -> Result<(), ChangeError> {
        while let Some((spec, pk)) = queue.pop() {
            if self.parked_is_empty()? {
                return Ok(());
            }
            for (table, row, origin_id, seq) in self.waiting_for(&spec, &pk)? {
                let (state, _) = self.state(&table, &row)?;
                let result = if matches!(state, RowState::Alive(_)) {
                    self.retry_piece(&table, &row, origin_id, seq)
                } else {
                    self.materialize(&table, &row, &state, None).map(|made| {
                        if made {
                            vec![(table.clone(), row.clone())]
                        } else {
                            Vec::new()
                        }
                    })
                };
                match result {
                    Ok(rows) => queue.extend(rows),
                    Err(e) => self.run(
                        "UPDATE sdsync_parked SET reason = ?3 WHERE tbl = ?1 AND pk = ?2",
                        &[
                            Value::Integer(table.id),
                            row.clone(),
                            Value::Text(format!("failed: {e}")),
                        ],
                    )?,
                }
            }
        }
        Ok(())
    }

    /// Re-applies one parked change to a live row; on failure it is parked again.
    fn retry_piece(
        &mut self,
        table: &Rc<TableSpec>,
        row: &Value,
        origin_id: i64,
        seq: i64,
    ) -> Result<Vec<RowRef>, ChangeError> {
        let Some((change, v)) = self.parked_change(table, row, origin_id, seq)? else {
            return Ok(Vec::new());
        };
        self.unpark(origin_id, seq)?;
        self.apply_one(&change, &v).inspect_err(|_| {
            // The failed write changed nothing; put the change back where it was.
            let _ = self.park(&change, &v, &(table.clone(), row.clone()), "failed");
        })
    }

    fn waiting_for(&mut self, spec: &TableSpec, pk: &Value) -> Result<Vec<Waiting>, SqlError> {
        let stmt = self.stmt(
            "SELECT tbl, pk, origin, seq FROM sdsync_parked WHERE wait_tbl = ?1 AND wait_pk = ?2",
        )?;
        stmt.bind_all(&[Value::Integer(spec.id), pk.clone()])?;
        let mut found = Vec::new();
        while stmt.step()? {
            found.push((stmt.int(0), stmt.value(1), stmt.int(2), stmt.int(3)));
        }
        stmt.reset();
        Ok(found
            .into_iter()
            .filter_map(|(t, pk, o, s)| self.catalog.by_id(t).map(|spec| (spec.clone(), pk, o, s)))
            .collect())
    }

    fn parked_change(
        &mut self,
        spec: &Rc<TableSpec>,
        pk: &Value,
        origin_id: i64,
        seq: i64,
    ) -> Result<Option<(Change, Version)>, ChangeError> {
        let found = self
            .parked_for_row(spec, pk)?
            .into_iter()
            .find(|(_, p)| p.version.origin_id == origin_id && p.version.seq == seq);
        let Some((_, p)) = found else {
            return Ok(None);
        };
        let change = upsert(spec, pk, p.values, p.mask, &p.version);
        Ok(Some((change, p.version)))
    }

    fn parked_for_row(
        &mut self,
        spec: &Rc<TableSpec>,
        pk: &Value,
    ) -> Result<Vec<(i64, Parked)>, SqlError> {
        let stmt = self.stmt(
            "SELECT origin, seq, mask, hlc, data FROM sdsync_parked WHERE tbl = ?1 AND pk = ?2",
        )?;
        stmt.bind_all(&[Value::Integer(spec.id), pk.clone()])?;
        let mut raw = Vec::new();
        while stmt.step()? {
            raw.push((
                stmt.int(0),
                stmt.int(1),
                stmt.int(2),
                stmt.int(3),
                stmt.text(4).unwrap_or_default(),
            ));
        }
        stmt.reset();
        let mut out = Vec::new();
        for (origin_id, seq, mask, hlc, data) in raw {
            let map = match serde_json::from_str::<Json>(&data) {
                Ok(Json::Object(map)) => map,
                _ => Map::new(),
            };
            let origin = self.origin_name(origin_id)?;
            out.push((
                origin_id,
                Parked {
                    mask: mask as u64,
                    version: Version {
                        hlc: hlc as u64,
                        origin,
                        origin_id,
                        seq,
                    },
                    values: decode(spec, &map),
                },
            ));
        }
        Ok(out)
    }

    /// What this database holds about a row, and its local id if it exists.
    fn state(&mut self, spec: &TableSpec, pk: &Value) -> Result<(RowState, Option<i64>), SqlError> {
        let stmt = self.keyed(Key::State(spec.id), || rows::state_sql(spec))?;
        stmt.bind_all(std::slice::from_ref(pk))?;
        let mut rid = None;
        let mut raw = Vec::new();
        while stmt.step()? {
            rid = Some(stmt.int(0));
            if let Value::Integer(mask) = stmt.value(1) {
                raw.push((mask, stmt.int(2), stmt.int(3), stmt.int(4)));
            }
        }
        stmt.reset();
        let Some(rid) = rid else {
            let tomb = self.tombstone(spec, pk)?;
            return Ok((tomb.map_or(RowState::Unknown, RowState::Dead), None));
        };
        let mut groups = Vec::with_capacity(raw.len());
        for (mask, origin_id, seq, hlc) in raw {
            let origin = self.origin_name(origin_id)?;
            let version = Version {
                hlc: hlc as u64,
                origin,
                origin_id,
                seq,
            };
            groups.push(Group {
                mask: mask as u64,
                version,
            });
        }
        Ok((RowState::Alive(normalize(groups)), Some(rid)))
    }

    fn tombstone(&mut self, spec: &TableSpec, pk: &Value) -> Result<Option<Version>, SqlError> {
        if self.tx.tombstones_empty.is_none() {
            let stmt = self.stmt("SELECT NOT EXISTS (SELECT 1 FROM sdsync_tombstones)")?;
            stmt.bind_all(&[])?;
            let empty = stmt.step()? && stmt.int(0) != 0;
            stmt.reset();
            self.tx.tombstones_empty = Some(empty);
        }
        if self.tx.tombstones_empty == Some(true) {
            return Ok(None);
        }
        let stmt =
            self.stmt("SELECT origin, seq, hlc FROM sdsync_tombstones WHERE tbl = ?1 AND pk = ?2")?;
        stmt.bind_all(&[Value::Integer(spec.id), pk.clone()])?;
        let found = if stmt.step()? {
            Some((stmt.int(0), stmt.int(1), stmt.int(2)))
        } else {
            None
        };
        stmt.reset();
        let Some((origin_id, seq, hlc)) = found else {
            return Ok(None);
        };
        let origin = self.origin_name(origin_id)?;
        Ok(Some(Version {
            hlc: hlc as u64,
            origin,
            origin_id,
            seq,
        }))
    }

    fn set_tombstone(&mut self, spec: &TableSpec, pk: &Value, v: &Version) -> Result<(), SqlError> {
        let origin = self.origin_id(v)?;
        self.tx.tombstones_empty = Some(false);
        self.run("INSERT OR REPLACE INTO sdsync_tombstones(tbl, pk, origin, seq, hlc) VALUES (?1, ?2, ?3, ?4, ?5)",
            &[
                Value::Integer(spec.id),
                pk.clone(),
                Value::Integer(origin),
                Value::Integer(v.seq),
                Value::Integer(v.hlc as i64),
            ],
        )
    }

    /// Replaces the version groups of a live row (`fresh`: the row was just
    /// inserted by apply, so it has none to remove).
    fn set_groups(
        &mut self,
        spec: &TableSpec,
        rid: i64,
        groups: &[Group],
        fresh: bool,
    ) -> Result<(), SqlError> {
        if !fresh {
            self.run(
                "DELETE FROM sdsync_versions WHERE tbl = ?1 AND rid = ?2",
                &[Value::Integer(spec.id), Value::Integer(rid)],
            )?;
        }
        for g in groups {
            self.put_group(spec, rid, g)?;
        }
        Ok(())
    }

    /// Stores one version group (replacing a stored group of the same mask).
    fn put_group(&mut self, spec: &TableSpec, rid: i64, g: &Group) -> Result<(), SqlError> {
        let origin = self.origin_id(&g.version)?;
        self.run(
            "INSERT OR REPLACE INTO sdsync_versions(tbl, rid, mask, origin, seq, hlc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &[
                Value::Integer(spec.id),
                Value::Integer(rid),
                Value::Integer(g.mask as i64),
                Value::Integer(origin),
                Value::Integer(g.version.seq),
                Value::Integer(g.version.hlc as i64),
            ],
        )
    }

    /// Maps reference columns of `mask` from uuids to local values; `Err` names the
    /// first referenced row that does not exist yet.
    fn resolve(
        &mut self,
        spec: &TableSpec,
        values: &[Value],
        mask: u64,
    ) -> Result<Result<Vec<Value>, RowRef>, SqlError> {
        let mut out = values.to_vec();
        for (i, col) in spec.columns_in(mask) {
            let Some(r) = &col.reference else { continue };
            if values[i] == Value::Null {
                continue;
            }
            let cached = match &values[i] {
                Value::Text(uuid) => self
                    .tx
                    .refs
                    .get(&(spec.id, i))
                    .and_then(|m| m.get(uuid))
                    .cloned(),
                _ => None,
            };
            let found = match cached {
                Some(local) => Some(local),
                None => {
                    let stmt = self.keyed(Key::Resolve(spec.id, i), || rows::resolve_sql(r))?;
                    stmt.bind_all(std::slice::from_ref(&values[i]))?;
                    let found = if stmt.step()? {
                        Some(stmt.value(0))
                    } else {
                        None
                    };
                    stmt.reset();
                    if let (Some(local), Value::Text(uuid)) = (&found, &values[i]) {
                        self.tx
                            .refs
                            .entry((spec.id, i))
                            .or_default()
                            .insert(uuid.clone(), local.clone());
                    }
                    found
                }
            };
            match found {
                Some(local) => out[i] = local,
                None => {
                    let Some(target) = self.catalog.by_name(&r.table).cloned() else {
                        continue;
                    };
                    return Ok(Err((target, values[i].clone())));
                }
            }
        }
        Ok(Ok(out))
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
    }
}

/// Parameters of an insert or update: the uuid, then the columns of `columns`.
fn row_params(spec: &TableSpec, pk: &Value, columns: u64, values: &[Value]) -> Vec<Value> {
    let mut params = vec![pk.clone()];
    params.extend(spec.columns_in(columns).map(|(i, _)| values[i].clone()));
    params
}

/// Column values of a stored JSON object (validated when it arrived).
fn decode(spec: &TableSpec, data: &Map<String, Json>) -> Vec<Value> {
    let mut values = vec![Value::Null; spec.columns.len()];
    for (i, col) in spec.columns.iter().enumerate() {
        if let Some(json) = data.get(&col.name) {
            values[i] = column_value(spec, i, json).unwrap_or(Value::Null);
        }
    }
    values
}
