//! Device-owned rows claimed by two devices: the same outcome whatever the order
//! in which the claims arrive.
//!
//! ```ignore
//! let state = self.claim(&change, state, rid)?; // Err(Forged) when the claim loses
//! ```
//!
//! A device-owned row is written by one device only, so a second device sending
//! a version of it (a create, an update or a delete) is a second *claim*: two
//! devices that built the same uuid for their own rows (a deterministic uuid of
//! an owned row, say a volume's serial number), or a device that is wrong. A
//! device cannot tell the real creator from arrival order, which differs from
//! device to device. So every device that owns neither claim keeps the claim of
//! the **smaller device id** (a total order all devices share): a losing claim
//! that arrives after the winner is refused as forged (the syncer quarantines
//! it); a winning claim that arrives after the loser takes the row over, and the
//! loser's version moves to `sdsync_quarantine` here. Either way the losing
//! version is kept, listed and served to peers, never dropped. The two claiming
//! devices each keep their own row (a device never gives up a row it wrote) and
//! show the other's change in quarantine, so the conflict is visible on both
//! until a user deletes one of the rows.

use sdsync_core::merge::{Group, RowState, Version};
use sdsync_core::schema::{Class, QUARANTINE_TABLE, ROW_BIT, TableSpec};
use serde_json::json;

use super::{Engine, Key};
use crate::changes::parse::{Change, ChangeError};
use crate::changes::rows;
use crate::ffi::{SqlError, Value};

/// A version taken out of the row's state here, to be quarantined.
struct Displaced {
    /// Whether it was a parked piece (else the row's live version or tombstone).
    parked: bool,
    op: &'static str,
    data: Option<String>,
    version: Version,
    creates: bool,
}

impl Engine {
    /// Checks `change`'s claim on its row against the claim the row holds here
    /// (its live version, tombstone or parked pieces); returns the state to merge
    /// the change against. Shared rows have no owner: their state is returned as is.
    pub(super) fn claim(
        &mut self,
        change: &Change,
        state: RowState,
        rid: Option<i64>,
    ) -> Result<RowState, ChangeError> {
        let spec = change.table.clone();
        if spec.class != Class::Owned {
            return Ok(state);
        }
        let parked = self.parked_claims(&spec, &change.pk, &change.origin)?;
        let sender = change.origin.as_str();
        let owner = state.owner().filter(|o| *o != sender).map(str::to_string);
        // Every other claim the row holds here: its state's and its parked pieces'.
        let others: Vec<String> = owner
            .iter()
            .cloned()
            .chain(parked.iter().map(|p| p.version.origin.clone()))
            .collect();
        let Some(mut holder) = others.iter().min().cloned() else {
            return Ok(state);
        };
        let mut holder_is_local = false;
        for other in &others {
            if self.local_origin.is_some() && self.known_origin(other)? == self.local_origin {
                (holder, holder_is_local) = (other.clone(), true);
            }
        }
        if holder_is_local || sender > holder.as_str() {
            return Err(ChangeError::Forged {
                table: spec.name.clone(),
                pk: change.pk_text(),
                owner: holder,
                origin: change.origin.clone(),
            });
        }
        let reason = format!(
            "sdsync_changes: row {} of device-owned table {} is also claimed by device {}; devices \
             owning neither claim keep the smaller device id's (delete one of the two rows to end it)",
            change.pk_text(),
            spec.name,
            change.origin
        );
        let mut displaced = parked;
        // The losing claim leaves the row's state entirely, as if it had never
        // arrived: the winning change then applies exactly as it does when it
        // comes first (parked if it lacks a parent, and so on).
        let next = match (state, rid) {
            (RowState::Alive(groups), Some(rid)) if owner.is_some() => {
                if let Some(d) = self.live_claim(&spec, rid, &groups)? {
                    displaced.push(d);
                }
                // The rows referencing it wait for the row to exist again.
                self.tx.refs.clear();
                self.evict_children(&spec, rid, &change.pk, 0)?;
                self.run_keyed(
                    Key::Delete(spec.id),
                    || rows::delete_sql(&spec),
                    std::slice::from_ref(&change.pk),
                )?;
                RowState::Unknown
            }
            (RowState::Dead(v), _) if owner.is_some() => {
                self.run(
                    "DELETE FROM sdsync_tombstones WHERE tbl = ?1 AND pk = ?2",
                    &[Value::Integer(spec.id), change.pk.clone()],
                )?;
                displaced.push(Displaced {
                    parked: false,
                    op: "delete",
                    data: None,
                    version: v,
                    creates: false,
                });
                RowState::Unknown
            }
            (state, _) => state,
        };
        self.db.exec(QUARANTINE_TABLE)?;
        for d in displaced {
            if d.parked {
                self.unpark(d.version.origin_id, d.version.seq)?;
            }
            self.quarantine(&spec, &change.pk, &d, &reason)?;
        }
        Ok(next)
    }

    /// Parked pieces of the row from origins other than `origin`.
    fn parked_claims(
        &mut self,
        spec: &TableSpec,
        pk: &Value,
        origin: &str,
    ) -> Result<Vec<Displaced>, SqlError> {
        if self.parked_is_empty()? {
            return Ok(Vec::new());
        }
        let raw = self.parked_rows(spec, pk)?;
        let mut out = Vec::new();
        for (origin_id, seq, mask, hlc, data) in raw {
            let name = self.origin_name(origin_id)?;
            if name != origin {
                out.push(Displaced {
                    parked: true,
                    op: "upsert",
                    data,
                    version: Version {
                        hlc: hlc as u64,
                        origin: name,
                        origin_id,
                        seq,
                    },
                    creates: mask as u64 & ROW_BIT != 0,
                });
            }
        }
        Ok(out)
    }

    /// The live row as the change that wrote it (an owned row has one version).
    fn live_claim(
        &mut self,
        spec: &TableSpec,
        rid: i64,
        groups: &[Group],
    ) -> Result<Option<Displaced>, SqlError> {
        let Some(group) = groups.first() else {
            return Ok(None);
        };
        let stmt = self.keyed(Key::Select(spec.id), || rows::select_sql(spec))?;
        let data = rows::read_json(stmt, spec, rid, group.mask)?
            .map(|(_, map)| serde_json::Value::Object(map).to_string());
        Ok(Some(Displaced {
            parked: false,
            op: "upsert",
            data,
            version: group.version.clone(),
            creates: true,
        }))
    }

    /// Keeps a displaced version in `sdsync_quarantine`, as the syncer keeps the
    /// changes it could not apply (the same JSON, so `sdsync quarantine` lists,
    /// retries and serves it like any other).
    fn quarantine(
        &mut self,
        spec: &TableSpec,
        pk: &Value,
        d: &Displaced,
        reason: &str,
    ) -> Result<(), SqlError> {
        let change = json!({
            "tbl": spec.name,
            "pk": pk_json(pk),
            "op": d.op,
            "data": d.data,
            "origin": d.version.origin,
            "seq": d.version.seq,
            "hlc": d.version.hlc as i64,
            "creates": i64::from(d.creates),
        });
        self.run(
            "INSERT INTO sdsync_quarantine(origin, seq, hlc, tbl, pk, reason, change) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT(origin, seq) DO UPDATE SET reason = excluded.reason, \
               attempts = attempts + 1, tried_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            &[
                Value::Text(d.version.origin.clone()),
                Value::Integer(d.version.seq),
                Value::Integer(d.version.hlc as i64),
                Value::Text(spec.name.clone()),
                pk.clone(),
                Value::Text(reason.to_string()),
                Value::Text(change.to_string()),
            ],
        )
    }
}

/// A uuid as the syncer's `Pk` serializes it (`{"Text": "…"}`, `{"Blob": [..]}`…).
fn pk_json(pk: &Value) -> serde_json::Value {
    match pk {
        Value::Text(s) => json!({ "Text": s }),
        Value::RawText(b) => json!({ "RawText": b }),
        Value::Blob(b) => json!({ "Blob": b }),
        Value::Integer(i) => json!({ "Integer": i }),
        // Capture refuses REAL and NULL uuids; kept readable all the same.
        Value::Real(r) => json!({ "Text": r.to_string() }),
        Value::Null => json!({ "Text": "" }),
    }
}
