//! A change of this device's own origin coming back from a peer (after a
//! restore, or a quarantined or kept one of those retried): written here, it
//! is issued again under a new number; held already, it keeps its number.
//!
//! ```ignore
//! if self.issues_again(change, &version)? {
//!     version.seq = self.reissue(change.seq)?;
//! }
//! ```

use sdsync_core::merge::{Delete, RowState, Upsert, Version, plan_delete, plan_upsert};
use sdsync_core::schema::{Class, ROW_BIT};

use super::{Engine, lifted, row_params, upsert_plan};
use crate::changes::parse::{Change, ChangeError, Op};
use crate::changes::rows;
use crate::ffi::{SqlError, Value};
use crate::store;

impl Engine {
    /// A change of this device's own origin that apply writes here (taken
    /// back from a peer after a restore, or a quarantined or kept one of those
    /// retried) is issued again under the next local sequence number, above
    /// its old one: peers whose watermarks cover its old number may lack it
    /// (the restored device may have reused that number), and they take the
    /// new one. Its HLC stays, so devices that hold it skip it (and this
    /// device's own HLCs no longer rise with their numbers up to it: see
    /// [`store::mark_monotone_from`]). One it does not
    /// write (held already, or older than what the row holds) keeps its number,
    /// so taking changes back settles. Returns the number.
    pub(super) fn reissue(&mut self, old: i64) -> Result<i64, ChangeError> {
        let stmt = self.stmt("UPDATE sdsync_clock SET seq = max(seq, ?1) + 1 RETURNING seq")?;
        stmt.bind_all(&[Value::Integer(old)])?;
        let seq = if stmt.step()? { stmt.int(0) } else { 0 };
        stmt.reset();
        store::mark_monotone_from(self.db, seq)?;
        Ok(seq)
    }

    /// Whether this device's own change, back from a peer, is issued again:
    /// it writes here ([`Self::would_write`]), and it is not a delete that a
    /// newer re-creation parked here supersedes. (The row was evicted, a
    /// piece of it meeting a deleted reference, after that re-creation had
    /// replaced the device's tombstone; a peer that parked the re-creation
    /// beside the tombstone hands the delete back. Written here, under its
    /// old number, it puts back what that peer holds, and no peer lacks it:
    /// found by `convergence_prop`.)
    pub(super) fn issues_again(
        &mut self,
        change: &Change,
        v: &Version,
    ) -> Result<bool, ChangeError> {
        if matches!(change.op, Op::Delete) && self.parked_newer(change, v)? & ROW_BIT != 0 {
            return Ok(false);
        }
        self.would_write(change, v)
    }

    /// Whether applying the change writes anything to the row as it is (a
    /// piece already parked here counts as held).
    pub(super) fn would_write(
        &mut self,
        change: &Change,
        v: &Version,
    ) -> Result<bool, ChangeError> {
        let (state, rid) = self.state(&change.table, &change.pk)?;
        Ok(match change.op {
            Op::Delete => !matches!(plan_delete(&state, v), Delete::Ignore),
            Op::Upsert => match (plan_upsert(&state, change.mask, v), &state) {
                (Upsert::Ignore, RowState::Alive(_)) => {
                    self.writes_again(change, &state, rid, v)?
                }
                (Upsert::Ignore, _) => false,
                // An owned row takes only its owner's newest version.
                (Upsert::Write(_), RowState::Alive(groups))
                    if change.table.class == Class::Owned
                        && groups.iter().any(|g| g.version.beats(v)) =>
                {
                    false
                }
                // Parked already, waiting for a referenced row (woken when it
                // comes): writing it again would only park it again. One
                // that failed when woken may write now, so it counts as new.
                (Upsert::Write(_), _) => !self.parked_waits(change, v)?,
                (Upsert::Park, _) => !self.parked_covers(change, v)?,
            },
        })
    }

    /// Whether a change the row holds at its own version already writes
    /// something all the same. A retried kept change also takes again the
    /// renamed columns it carries, which its first apply here may have left
    /// at the default: one that writes a value new to the row is issued
    /// again, or the peers that took the first copy (with the default) would
    /// keep it (simulation seed 9714); one that writes nothing new keeps its
    /// number, or every retry (after each schema change) would issue it
    /// again. Any copy fills the columns the row holds at its version only as
    /// the default (`fill`), unless it waits parked for a referenced row to
    /// do so (else every copy would issue it again: found by review).
    fn writes_again(
        &mut self,
        change: &Change,
        state: &RowState,
        rid: Option<i64>,
        v: &Version,
    ) -> Result<bool, ChangeError> {
        let again = match change.again.then(|| plan_as_apply(change, state, v)) {
            Some(Upsert::Write(bits)) => bits,
            _ => 0,
        };
        if again != 0 && self.writes_new_values(change, v, again)? {
            return Ok(true);
        }
        Ok(self.defaulted_here(change, state, rid, v, again)? != 0
            && !self.parked_waits(change, v)?)
    }

    /// Whether writing the columns of `bits` would change the row's values,
    /// byte for byte (references compared as the rows they name here). One
    /// naming a row this database lacks is new unless the change waits
    /// parked for that row already, as in [`Self::would_write`]: else each
    /// retry would issue it again.
    fn writes_new_values(
        &mut self,
        change: &Change,
        v: &Version,
        bits: u64,
    ) -> Result<bool, ChangeError> {
        let columns = bits & !ROW_BIT;
        if columns == 0 {
            return Ok(false);
        }
        let Ok(resolved) = self.resolve(&change.table, change.values.clone(), columns)? else {
            return Ok(!self.parked_waits(change, v)?);
        };
        let same = self.db.query_i64(
            &rows::same_values_sql(&change.table, columns),
            &row_params(&change.pk, columns, resolved),
        )?;
        Ok(same != Some(1))
    }

    /// Whether parking the change would add nothing: the row holds it parked
    /// already (same origin and HLC), or its parked pieces newer than `v`
    /// carry every bit of it, so beside them it would never win anything. (A
    /// device whose own update lost a column to a peer's, then saw the row
    /// deleted in between, took its old update back from a peer for one it
    /// lacked and issued it again: found by `convergence_prop`.)
    fn parked_covers(&mut self, change: &Change, v: &Version) -> Result<bool, SqlError> {
        Ok(change.mask & !self.parked_newer(change, v)? == 0)
    }

    /// The bits the row's parked pieces newer than `v` carry (all of them if
    /// it holds this very change parked: same origin and HLC). On a
    /// device-owned table only the change's own origin counts: another
    /// device's pieces there are a claim on the row, which `claim` may take
    /// out of the way right after (then the change is written after all).
    fn parked_newer(&mut self, change: &Change, v: &Version) -> Result<u64, SqlError> {
        if self.parked_is_empty()? {
            return Ok(0);
        }
        let owned = change.table.class == Class::Owned;
        let mut newer = 0;
        for (origin_id, seq, mask, hlc, _) in self.parked_rows(&change.table, &change.pk)? {
            if origin_id == v.origin_id && hlc as u64 == v.hlc {
                return Ok(u64::MAX);
            }
            if owned && origin_id != v.origin_id {
                continue;
            }
            let piece = Version {
                hlc: hlc as u64,
                origin: self.origin_name(origin_id)?,
                origin_id,
                seq,
            };
            if piece.beats(v) {
                newer |= mask as u64;
            }
        }
        Ok(newer)
    }

    /// Whether the row holds this very change parked and waiting (same origin
    /// and HLC, under any number: a device's own change taken back comes under
    /// its old number and under the one it was issued again with), not failed.
    pub(super) fn parked_waits(&mut self, change: &Change, v: &Version) -> Result<bool, SqlError> {
        if self.parked_is_empty()? {
            return Ok(false);
        }
        let stmt = self.stmt(
            "SELECT 1 FROM sdsync_parked WHERE tbl = ?1 AND pk = ?2 AND origin = ?3 AND hlc = ?4 \
             AND reason NOT LIKE 'failed:%'",
        )?;
        stmt.bind_all(&[
            Value::Integer(change.table.id),
            change.pk.clone(),
            Value::Integer(v.origin_id),
            Value::Integer(v.hlc as i64),
        ])?;
        let found = stmt.step()?;
        stmt.reset();
        Ok(found)
    }
}

/// The plan [`Engine::apply_one`] makes for an upsert of this device's own
/// origin (a kept copy retried plans under the number the row holds it at).
fn plan_as_apply(change: &Change, state: &RowState, v: &Version) -> Upsert {
    let lifted = lifted(change, state, v);
    upsert_plan(change, state, lifted.as_ref().unwrap_or(v), false)
}
