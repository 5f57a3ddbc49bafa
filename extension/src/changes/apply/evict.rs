//! Before apply deletes a row, the rows referencing it are parked with all their
//! versions and removed, instead of being cascaded away unrecorded: the origin
//! deleted only the children it knew of, and a child added concurrently elsewhere
//! must come back if the row is re-created.
//!
//! ```ignore
//! let evicted = self.evict_children(&spec, rid, &pk, 0)?;
//! ```

use std::rc::Rc;

use sdsync_core::hlc::Hlc;
use sdsync_core::merge::{Group, RowState, Version};
use sdsync_core::schema::{Class, TableSpec};

use super::{Engine, Key, RowRef, decode, upsert};
use crate::changes::parse::{Change, ChangeError};
use crate::changes::rows;
use crate::ffi::Value;

/// SQLite's primary result code for a constraint violation.
const SQLITE_CONSTRAINT: i32 = 19;

impl Engine {
    /// Parks and removes the rows that reference a row apply is about to delete,
    /// instead of letting ON DELETE CASCADE drop them unrecorded (or RESTRICT refuse
    /// the delete). The origin deleted only the children it knew of and sends its
    /// own tombstones for them; a child added concurrently elsewhere must come back
    /// if the row is re-created, exactly as on the devices that never saw it go.
    ///
    /// Returns the evicted rows, parents before their own children.
    pub(super) fn evict_children(
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
                if self.unlink_own_row(&child, i, crid)? {
                    continue;
                }
                evicted.extend(self.evict_row(&child, crid, &cpk, &wait, depth)?);
            }
        }
        Ok(evicted)
    }

    /// Parks a live row with all its versions, waiting for `wait`, and removes
    /// it, its own children first. Returns the rows evicted, this one first.
    pub(super) fn evict_row(
        &mut self,
        spec: &Rc<TableSpec>,
        rid: i64,
        pk: &Value,
        wait: &RowRef,
        depth: usize,
    ) -> Result<Vec<RowRef>, ChangeError> {
        let below = self.evict_children(spec, rid, pk, depth + 1)?;
        let (RowState::Alive(groups), _) = self.state(spec, pk)? else {
            return Ok(below);
        };
        let mut keep = Vec::new();
        for g in &groups {
            keep.push(self.group_change(spec, pk, rid, g)?);
        }
        self.run_keyed(
            Key::Delete(spec.id),
            || rows::delete_sql(spec),
            std::slice::from_ref(pk),
        )?;
        for (change, version) in keep {
            self.park(&change, &version, wait, "its referenced row was deleted")?;
        }
        let mut evicted = vec![(spec.clone(), pk.clone())];
        evicted.extend(below);
        Ok(evicted)
    }

    /// A row this device owns is its own data: a peer deleting the row it
    /// references must not make it vanish here. When the reference can be NULL, the
    /// owner clears it instead, as a local change of its own (captured like the
    /// owned-row update trigger does: the next sequence, the whole row's version
    /// moved forward), which every peer then applies, bringing the row back there
    /// too. Returns whether the row was kept.
    fn unlink_own_row(
        &mut self,
        child: &Rc<TableSpec>,
        column: usize,
        rid: i64,
    ) -> Result<bool, ChangeError> {
        let Some(local) = self.local_origin else {
            return Ok(false);
        };
        if child.class != Class::Owned || child.columns[column].required {
            return Ok(false);
        }
        let owner = {
            let stmt =
                self.stmt("SELECT origin FROM sdsync_versions WHERE tbl = ?1 AND rid = ?2")?;
            stmt.bind_all(&[Value::Integer(child.id), Value::Integer(rid)])?;
            let owner = if stmt.step()? {
                Some(stmt.int(0))
            } else {
                None
            };
            stmt.reset();
            owner
        };
        if owner != Some(local) {
            return Ok(false);
        }
        let cleared = self.run_keyed(
            Key::Unlink(child.id, column),
            || rows::unlink_sql(child, column),
            &[Value::Integer(rid)],
        );
        match cleared {
            Ok(()) => {}
            // A NOT NULL column with a default, or an app CHECK: the row is
            // evicted like others. Any other failure fails the apply.
            Err(e) if e.code & 0xff == SQLITE_CONSTRAINT => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        self.restamp_own(child, rid)?;
        Ok(true)
    }

    /// Moves a row this device owns to a new version of its own, as its
    /// update trigger would: the next sequence, an HLC above the clock and
    /// above the change being applied (a change apply makes here must be
    /// newer than the one that caused it).
    pub(super) fn restamp_own(&mut self, spec: &TableSpec, rid: i64) -> Result<(), ChangeError> {
        let wall = Hlc::from_wall(self.wall_ms).as_i64();
        let above = self.incoming_hlc.saturating_add(1).min(i64::MAX as u64) as i64;
        self.run(
            "UPDATE sdsync_clock SET hlc = max(hlc + 1, ?1, ?2), seq = seq + 1",
            &[Value::Integer(wall), Value::Integer(above)],
        )?;
        self.run(
            "UPDATE sdsync_versions SET (seq, hlc) = (SELECT seq, hlc FROM sdsync_clock) \
             WHERE tbl = ?1 AND rid = ?2",
            &[Value::Integer(spec.id), Value::Integer(rid)],
        )?;
        Ok(())
    }

    /// A live row's group (an update newer than a delete) as a change to park.
    pub(super) fn group_change(
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
}
