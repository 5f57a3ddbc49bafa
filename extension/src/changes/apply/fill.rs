//! A column this row holds at a change's own version only as the table's
//! default, where a copy of that change carries a value: the copy fills it.
//!
//! ```ignore
//! let fill = self.defaulted_here(change, &state, rid, &version, planned)?;
//! ```
//!
//! A change that creates a row defines every column (`parse::default_the_rest`):
//! one its copy does not carry takes the default under the change's version.
//! A peer leaves a column out of the copy it serves when a newer group of the
//! row holds it there; if every device holding that newer change loses it
//! (each restored from a backup older than it), the devices that took the
//! partial copy hold the default and those that took a whole one hold the
//! value, both under the same version, for good (simulation seed 23628 with
//! whole-folder restores: a tag's color). Under one version a column holds
//! either what its origin wrote or a default given in its place, so taking
//! the value over the default, never the reverse, settles every device on
//! the value whatever order the copies arrive in (a peer holding the value
//! keeps it when a copy carries the default: `restore_lineage`'s
//! `a_peer_on_the_origins_schema_keeps_the_value_a_renumbered_copy_defaults`).

use sdsync_core::merge::{RowState, Upsert, Version};
use sdsync_core::schema::ROW_BIT;

use super::{Engine, Key, upsert_plan};
use crate::changes::parse::{Change, ChangeError};
use crate::changes::rows;
use crate::ffi::Value;

impl Engine {
    /// [`upsert_plan`], writing also the columns [`Self::defaulted_here`] finds.
    pub(super) fn plan_with_fill(
        &mut self,
        change: &Change,
        state: &RowState,
        rid: Option<i64>,
        v: &Version,
        renumbered_here: bool,
    ) -> Result<Upsert, ChangeError> {
        let plan = upsert_plan(change, state, v, renumbered_here);
        let planned = match plan {
            Upsert::Write(bits) => bits,
            Upsert::Ignore => 0,
            Upsert::Park => return Ok(plan),
        };
        let fill = self.defaulted_here(change, state, rid, v, planned)?;
        Ok(if fill == 0 {
            plan
        } else {
            Upsert::Write(planned | fill)
        })
    }

    /// The columns of `change` that the row holds at the change's own version
    /// (same origin and HLC, owned by no newer group) as the table's default,
    /// where the change carries another value; `planned` are written anyway.
    pub(super) fn defaulted_here(
        &mut self,
        change: &Change,
        state: &RowState,
        rid: Option<i64>,
        v: &Version,
        planned: u64,
    ) -> Result<u64, ChangeError> {
        let (RowState::Alive(groups), Some(rid)) = (state, rid) else {
            return Ok(0);
        };
        // `state` normalizes the groups: each bit is owned by one of them.
        let same = groups
            .iter()
            .filter(|g| g.version.same_as(v))
            .fold(0, |m, g| m | g.mask);
        let candidates = same & change.carried & !ROW_BIT & !planned;
        if candidates == 0 {
            return Ok(0);
        }
        let spec = change.table.clone();
        let defaults = self.catalog.defaults(spec.id);
        let mut params = vec![Value::Integer(rid)];
        let mut asked = 0;
        for (i, _) in spec.columns_in(candidates) {
            // A column without a constant default holds no default to fill.
            if let Some(default) = defaults.get(i).and_then(Option::as_ref) {
                params.extend([default.clone(), change.values[i].clone()]);
                asked |= 1 << (i + 1);
            }
        }
        if asked == 0 {
            return Ok(0);
        }
        let stmt = self.keyed(Key::Defaulted(spec.id, asked), || {
            rows::defaulted_sql(&spec, asked)
        })?;
        stmt.bind_all(&params)?;
        let mut fill = 0;
        if stmt.step()? {
            for (k, (i, _)) in spec.columns_in(asked).enumerate() {
                if stmt.int(k) != 0 {
                    fill |= 1 << (i + 1);
                }
            }
        }
        stmt.reset();
        Ok(fill)
    }
}
