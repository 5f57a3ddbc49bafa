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

use sdsync_core::merge::{Group, RowState, Version, with_win};
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
        // the schema here gained them) widens it, and so does a copy filling
        // a default (`fill`). The row keeps the higher of two numbers of one
        // change (a renumbered copy's: simulation seed 696; found by review).
        if spec.class == Class::Owned {
            let newest = groups.iter().map(|g| &g.version).fold(v, |a, b| {
                if b.beats(a) || (b.same_as(a) && b.seq > a.seq) {
                    b
                } else {
                    a
                }
            });
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

    /// The change references `parent`, which is not here. Not received yet
    /// (and no other reference of the change gone): the change waits for it
    /// and the row keeps its values. Gone here (deleted, or evicted because
    /// what it referenced was deleted): the row this device owns takes the
    /// change with the gone references cleared, as a new change of its own
    /// (what `unlink_own_row` does when the delete comes second), unless one
    /// of them may not be NULL; any other row is evicted with the change.
    fn unresolved(
        &mut self,
        change: &Change,
        v: &Version,
        bits: u64,
        groups: &[Group],
        rid: i64,
        parent: RowRef,
    ) -> Result<Vec<RowRef>, ChangeError> {
        let gone = self.gone_references(change, bits)?;
        let Some((_, first)) = gone.first().cloned() else {
            self.park(change, v, &parent, "waiting for a referenced row")?;
            return Ok(Vec::new());
        };
        if change.table.class == Class::Owned
            && self.local_origin == Some(v.origin_id)
            && self.all_nullable(change, &gone)?
        {
            let mut values = change.values.clone();
            for (i, _) in &gone {
                values[*i] = Value::Null;
            }
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
                    // An app CHECK or trigger refusing the NULL: the row goes
                    // as on the peers (the failed UPDATE wrote nothing), unless
                    // SQLite rolled the whole transaction back.
                    Err(ChangeError::Sql(e))
                        if e.code & 0xff == SQLITE_CONSTRAINT && !self.db.autocommit() => {}
                    Err(e) => return Err(e),
                },
            }
        }
        self.tx.refs.clear();
        let evicted = self.evict_row(&change.table, rid, &change.pk, &first, 0)?;
        self.park(change, v, &first, "its referenced row was deleted")?;
        self.reassemble(evicted)
    }

    /// The references among `bits` to rows gone here, with their columns.
    fn gone_references(
        &mut self,
        change: &Change,
        bits: u64,
    ) -> Result<Vec<(usize, RowRef)>, ChangeError> {
        let mut gone = Vec::new();
        for (i, col) in change.table.columns_in(bits) {
            if col.reference.is_none() || change.values[i] == Value::Null {
                continue;
            }
            let one = 1u64 << (i + 1);
            if let Err(row) = self.resolve(&change.table, change.values.clone(), one)?
                && self.is_gone(&row, 0)?
            {
                gone.push((i, row));
            }
        }
        Ok(gone)
    }

    /// Whether `row` is gone here until something re-creates it: deleted (it
    /// has a tombstone), or not alive with pieces parked waiting for a row
    /// gone itself (evicted: a row referencing it on another device went with
    /// it, `evict_children`, so one referencing it here must too).
    fn is_gone(&mut self, row: &RowRef, depth: usize) -> Result<bool, ChangeError> {
        if self.is_deleted(row)? {
            return Ok(true);
        }
        if depth >= 64 || self.parked_is_empty()? {
            return Ok(false);
        }
        if matches!(self.state(&row.0, &row.1)?.0, RowState::Alive(_)) {
            return Ok(false);
        }
        for wait in self.waits_of(row)? {
            let itself = wait.0.id == row.0.id && wait.1 == row.1;
            if !itself && self.is_gone(&wait, depth + 1)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether `row` is gone and other rows' pieces wait for it: the one
    /// question a row that just parked asks (looking for waiters first keeps
    /// a backfill that parks children from walking their parents' waits).
    pub(super) fn gone_with_waiters(&mut self, row: &RowRef) -> Result<bool, ChangeError> {
        let stmt = self.stmt(
            "SELECT 1 FROM sdsync_parked WHERE wait_tbl = ?1 AND wait_pk = ?2 \
             AND NOT (tbl = ?1 AND pk = ?2) LIMIT 1",
        )?;
        stmt.bind_all(&[Value::Integer(row.0.id), row.1.clone()])?;
        let waited = stmt.step()?;
        stmt.reset();
        Ok(waited && self.is_gone(row, 0)?)
    }

    /// Whether `row` was deleted here (it has a tombstone).
    fn is_deleted(&mut self, row: &RowRef) -> Result<bool, ChangeError> {
        let stmt = self.stmt("SELECT 1 FROM sdsync_tombstones WHERE tbl = ?1 AND pk = ?2")?;
        stmt.bind_all(&[Value::Integer(row.0.id), row.1.clone()])?;
        let found = stmt.step()?;
        stmt.reset();
        Ok(found)
    }

    /// What the parked pieces of `row` wait for.
    fn waits_of(&mut self, row: &RowRef) -> Result<Vec<RowRef>, ChangeError> {
        let stmt = self.stmt(
            "SELECT DISTINCT wait_tbl, wait_pk FROM sdsync_parked WHERE tbl = ?1 AND pk = ?2",
        )?;
        stmt.bind_all(&[Value::Integer(row.0.id), row.1.clone()])?;
        let mut found = Vec::new();
        while stmt.step()? {
            found.push((stmt.int(0), stmt.value(1)));
        }
        stmt.reset();
        Ok(found
            .into_iter()
            .filter_map(|(t, pk)| self.catalog.by_id(t).map(|spec| (spec.clone(), pk)))
            .collect())
    }

    /// Whether every column of `gone` may be set to NULL (neither `required`
    /// nor declared NOT NULL with a default): only then does the owner clear
    /// them, so the write cannot fail for it.
    fn all_nullable(
        &mut self,
        change: &Change,
        gone: &[(usize, RowRef)],
    ) -> Result<bool, ChangeError> {
        for (i, _) in gone {
            let col = &change.table.columns[*i];
            if col.required {
                return Ok(false);
            }
            let stmt =
                self.stmt("SELECT \"notnull\" FROM pragma_table_info(?1) WHERE name = ?2")?;
            stmt.bind_all(&[
                Value::Text(change.table.name.clone()),
                Value::Text(col.name.clone()),
            ])?;
            let not_null = stmt.step()? && stmt.int(0) != 0;
            stmt.reset();
            if not_null {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
