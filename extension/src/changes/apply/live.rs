//! Writing the columns a change won to a live row, and what happens when the
//! change references a row that is not here: it waits for a row not received
//! yet; a row deleted here takes the live row the way the delete would have.
//!
//! ```ignore
//! let woke = self.write(change, &version, bits, &groups, rid)?; // from apply_one
//! ```
//!
//! Why a deleted reference evicts: had the change arrived before the delete,
//! the delete would have parked and removed the row (`evict_children`), or,
//! on the row's owner, cleared the reference. Only parking the change kept the
//! row with its older values, so the device that saw the delete first and the
//! one that saw the change first ended different for good (a membership moved
//! to an entry its owner deleted meanwhile; a restored device taking back its
//! own change to a child of a row it deleted since: simulation seed 793).

use sdsync_core::merge::{Group, Version, with_win};
use sdsync_core::schema::{Class, ROW_BIT};

use super::{Engine, Key, RowRef, row_params};
use crate::changes::parse::{Change, ChangeError};
use crate::changes::rows;
use crate::ffi::Value;

/// SQLite's primary result code for a constraint violation.
const SQLITE_CONSTRAINT: i32 = 19;

impl Engine {
    /// Writes the bits a change won to a live row; returns the rows that exist
    /// again afterwards.
    pub(super) fn write(
        &mut self,
        change: &Change,
        v: &Version,
        bits: u64,
        groups: &[Group],
        rid: i64,
    ) -> Result<Vec<RowRef>, ChangeError> {
        match self.resolve(&change.table, change.values.clone(), bits)? {
            Ok(resolved) => {
                self.write_resolved(change, v, bits, groups, rid, resolved)?;
                Ok(Vec::new())
            }
            Err(parent) => self.unresolved(change, v, bits, groups, rid, parent),
        }
    }

    fn write_resolved(
        &mut self,
        change: &Change,
        v: &Version,
        bits: u64,
        groups: &[Group],
        rid: i64,
        resolved: Vec<Value>,
    ) -> Result<(), ChangeError> {
        let spec = &change.table;
        let columns = bits & !ROW_BIT;
        if columns != 0 {
            let params = row_params(&change.pk, columns, resolved);
            self.run_keyed(
                Key::Update(spec.id, columns),
                || rows::update_sql(spec, columns),
                &params,
            )?;
        }
        // An owned row keeps one version for the whole row: a change that wins
        // only columns the row's version lacks (a kept change re-applied after
        // the schema here gained them) widens it.
        if spec.class == Class::Owned {
            let newest = groups
                .iter()
                .map(|g| &g.version)
                .fold(v, |a, b| if b.beats(a) { b } else { a });
            let whole = Group {
                mask: groups.iter().fold(bits, |m, g| m | g.mask),
                version: newest.clone(),
            };
            self.set_groups(spec, rid, &[whole], false)?;
        } else if groups
            .iter()
            .all(|g| g.mask & !bits != 0 && !g.version.same_as(v))
        {
            // Groups may overlap (the newest owns a bit): when every existing
            // group keeps some bit, adding the new group is enough; otherwise
            // rewrite them.
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

    /// The change references `parent`, which is not here. Not received yet:
    /// the change waits for it and the row keeps its values. Deleted here:
    /// the row this device owns takes the change with the deleted references
    /// cleared, as a new change of its own (what `unlink_own_row` does when
    /// the delete comes second); any other row is evicted with the change.
    fn unresolved(
        &mut self,
        change: &Change,
        v: &Version,
        bits: u64,
        groups: &[Group],
        rid: i64,
        parent: RowRef,
    ) -> Result<Vec<RowRef>, ChangeError> {
        if !self.is_deleted(&parent)? {
            self.park(change, v, &parent, "waiting for a referenced row")?;
            return Ok(Vec::new());
        }
        if change.table.class == Class::Owned
            && self.local_origin == Some(v.origin_id)
            && let Some(values) = self.without_deleted(change, bits)?
        {
            match self.resolve(&change.table, values, bits)? {
                Err(missing) => {
                    self.park(change, v, &missing, "waiting for a referenced row")?;
                    return Ok(Vec::new());
                }
                Ok(resolved) => match self.write_resolved(change, v, bits, groups, rid, resolved) {
                    Ok(()) => {
                        self.restamp_own(&change.table, rid)?;
                        return Ok(Vec::new());
                    }
                    // A NOT NULL column with a default, or an app CHECK: the
                    // row is evicted like others (the failed UPDATE wrote nothing).
                    Err(ChangeError::Sql(e)) if e.code & 0xff == SQLITE_CONSTRAINT => {}
                    Err(e) => return Err(e),
                },
            }
        }
        self.tx.refs.clear();
        let evicted = self.evict_row(&change.table, rid, &change.pk, &parent, 0)?;
        self.park(change, v, &parent, "its referenced row was deleted")?;
        self.reassemble(evicted)
    }

    /// Whether `row` was deleted here (it has a tombstone).
    pub(super) fn is_deleted(&mut self, row: &RowRef) -> Result<bool, ChangeError> {
        let stmt = self.stmt("SELECT 1 FROM sdsync_tombstones WHERE tbl = ?1 AND pk = ?2")?;
        stmt.bind_all(&[Value::Integer(row.0.id), row.1.clone()])?;
        let found = stmt.step()?;
        stmt.reset();
        Ok(found)
    }

    /// The change's values with every reference among `bits` to a deleted row
    /// set to NULL; `None` when such a reference is required.
    fn without_deleted(
        &mut self,
        change: &Change,
        bits: u64,
    ) -> Result<Option<Vec<Value>>, ChangeError> {
        let mut values = change.values.clone();
        for (i, col) in change.table.columns_in(bits) {
            let Some(target) = col
                .reference
                .as_ref()
                .and_then(|r| self.catalog.by_name(&r.table).cloned())
            else {
                continue;
            };
            if values[i] == Value::Null || !self.is_deleted(&(target, values[i].clone()))? {
                continue;
            }
            if col.required {
                return Ok(None);
            }
            values[i] = Value::Null;
        }
        Ok(Some(values))
    }
}
