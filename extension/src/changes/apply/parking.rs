//! Changes that cannot be applied yet wait in `sdsync_parked` for the row they
//! need (a parent, the row's creation, a NOT NULL column), and are woken when it
//! appears: assembled with the row's other pieces and applied.
//!
//! ```ignore
//! self.park(&change, &version, &(parent_spec, parent_uuid), "waiting for a referenced row")?;
//! self.wake(vec![(spec, pk)])?; // rows that came into existence
//! ```

use std::rc::Rc;

use serde_json::{Map, Value as Json};

use sdsync_core::merge::{Group, Piece, RowState, Version, assemble};
use sdsync_core::schema::{ROW_BIT, TableSpec};

use super::{Engine, Key, Parked, RowRef, Waiting, decode, row_params, upsert};
use crate::changes::parse::{Change, ChangeError};
use crate::changes::rows;
use crate::ffi::{ResultCode, SQLITE_ERROR, SqlError, Value};
use crate::values::to_json;

/// A parked piece as stored: `(origin id, seq, mask, hlc, data)`.
pub(super) type StoredPiece = (i64, i64, i64, i64, Option<String>);

impl Engine {
    /// Builds a row that is not alive from its parked pieces plus `incoming`; parks
    /// `incoming` when the row cannot be built yet. Returns whether the row now exists.
    pub(super) fn materialize(
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
        let parked: Vec<Parked> = if self.parked_is_empty()? {
            Vec::new()
        } else {
            self.parked_for_row(spec, pk)?
                .into_iter()
                .map(|(_, p)| p)
                .collect()
        };
        // The pieces: the parked ones, then the incoming change (its values
        // borrowed, not copied: most rows are made by one change alone).
        let mut shapes: Vec<Piece> = parked
            .iter()
            .map(|p| Piece {
                mask: p.mask,
                version: p.version.clone(),
            })
            .collect();
        if let Some((c, v)) = incoming {
            shapes.push(Piece {
                mask: c.mask,
                version: v.clone(),
            });
        }
        // `shapes` has one piece per parked piece, then the incoming one.
        let values_of = |i: usize| {
            parked
                .get(i)
                .map(|p| &p.values)
                .or(incoming.map(|(c, _)| &c.values))
        };
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
            let Some(from) = values_of(*i) else { continue };
            for (c, _) in spec.columns_in(*bits) {
                values[c] = from[c].clone();
            }
        }
        if let Some((_, c)) = spec.columns_in(!asm.covered).find(|(_, c)| c.required) {
            let reason = format!("incomplete: required column {} not received yet", c.name);
            return self.park_incoming(&me, incoming, &me, &reason);
        }
        let resolved = match self.resolve(spec, values, asm.covered)? {
            Ok(resolved) => resolved,
            Err(parent) => {
                return self.park_incoming(&me, incoming, &parent, "waiting for a referenced row");
            }
        };
        let columns = asm.covered & !ROW_BIT;
        let params = row_params(pk, columns, resolved);
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
                version: shapes[*i].version.clone(),
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
        if !parked.is_empty() {
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
    pub(super) fn park_incoming(
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
    pub(super) fn park(
        &mut self,
        c: &Change,
        v: &Version,
        wait: &RowRef,
        reason: &str,
    ) -> Result<(), ChangeError> {
        let origin = self.origin_id(v)?;
        // This device's own change may come back under two numbers (its old
        // one and the one it was issued again with): one copy waits.
        if Some(origin) == self.local_origin && self.parked_waits(c, v)? {
            return Ok(());
        }
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
    pub(super) fn parked_is_empty(&mut self) -> Result<bool, SqlError> {
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

    pub(super) fn unpark(&mut self, origin_id: i64, seq: i64) -> Result<(), SqlError> {
        self.tx.parked_empty = None;
        self.run(
            "DELETE FROM sdsync_parked WHERE origin = ?1 AND seq = ?2",
            &[Value::Integer(origin_id), Value::Integer(seq)],
        )
    }

    /// Applies parked changes whose wait is over, until nothing more moves
    /// (`queue`: rows that came into existence, or were just deleted, which
    /// ends the wait of a live row's pieces another way: `live::unresolved`). A
    /// woken change that fails (say, it breaks a UNIQUE constraint of the app) stays
    /// parked with the error as its reason, visible, and does not fail the change
    /// that woke it.
    pub(super) fn wake(&mut self, mut queue: Vec<RowRef>) -> Result<(), ChangeError> {
        // Rows queued because they are gone, once each (two rows not alive
        // may wait for each other).
        let mut gone: Vec<(i64, Value)> = Vec::new();
        while let Some((spec, pk)) = queue.pop() {
            if self.parked_is_empty()? {
                return Ok(());
            }
            for (table, row, origin_id, seq) in self.waiting_for(&spec, &pk)? {
                let (state, _) = self.state(&table, &row)?;
                let result = if matches!(state, RowState::Alive(_)) {
                    self.retry_piece(&table, &row, origin_id, seq)
                } else {
                    let me = (table.clone(), row.clone());
                    match self.materialize(&table, &row, &state, None) {
                        Ok(true) => Ok(vec![me]),
                        // Waiting for a row gone, it is gone too, and what
                        // waits for it must know (`live::unresolved`).
                        Ok(false) if !gone.contains(&(table.id, row.clone())) => {
                            if self.gone_with_waiters(&me)? {
                                gone.push((table.id, row.clone()));
                                Ok(vec![me])
                            } else {
                                Ok(Vec::new())
                            }
                        }
                        Ok(false) => Ok(Vec::new()),
                        Err(e) => Err(e),
                    }
                };
                match result {
                    Ok(rows) => queue.extend(rows),
                    // Busy, interrupted, I/O: SQLite may have rolled the whole
                    // transaction back, so nothing more may be written here.
                    Err(e) if e.result_code() != SQLITE_ERROR => return Err(e),
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
    pub(super) fn retry_piece(
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
        match self.apply_one(&change, &v) {
            Ok(rows) => Ok(rows),
            // A transient failure may have rolled the transaction back (the
            // unpark with it): write nothing more.
            Err(e) if e.result_code() != SQLITE_ERROR => Err(e),
            Err(e) => {
                // The failed write changed nothing, or (a row evicted, then a
                // later statement failed) parked what it removed: put the
                // change back where it was.
                self.park(&change, &v, &(table.clone(), row.clone()), "failed")?;
                Err(e)
            }
        }
    }

    pub(super) fn waiting_for(
        &mut self,
        spec: &TableSpec,
        pk: &Value,
    ) -> Result<Vec<Waiting>, SqlError> {
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

    pub(super) fn parked_change(
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

    pub(super) fn parked_for_row(
        &mut self,
        spec: &Rc<TableSpec>,
        pk: &Value,
    ) -> Result<Vec<(i64, Parked)>, SqlError> {
        let mut out = Vec::new();
        for (origin_id, seq, mask, hlc, data) in self.parked_rows(spec, pk)? {
            let map = match serde_json::from_str::<Json>(data.as_deref().unwrap_or_default()) {
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

    /// The parked pieces of a row as stored.
    pub(super) fn parked_rows(
        &mut self,
        spec: &TableSpec,
        pk: &Value,
    ) -> Result<Vec<StoredPiece>, SqlError> {
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
                stmt.text(4),
            ));
        }
        stmt.reset();
        Ok(raw)
    }
}
