//! Changes for tables or columns this database does not have yet: kept whole in
//! `sdsync_kept`, applied when the schema here catches up.
//!
//! ```sql
//! -- a device on a newer app added tags.color; this one has not yet:
//! SELECT tbl, reason FROM sdsync_kept;   -- tags | table tags has no synced column color …
//! ALTER TABLE tags ADD COLUMN color TEXT; -- then any apply or sweep applies them
//! ```
//!
//! Why keep rather than refuse: a refused change is quarantined and, before
//! that, stalled its origin's stream; devices run different app versions for
//! weeks. The known part of such a change applies at once; the whole change is
//! kept, served to peers like any change (a third device on the newer schema
//! gets it from this one), and re-applied after every schema change here.

use sdsync_core::merge::Version;

use super::Engine;
use crate::changes::parse::{Change, ChangeError, Fields, Kept, Op};
use crate::ffi::{ResultCode, Value, is_transient};

impl Engine {
    /// Stores a change to keep (replacing an earlier copy of the same change).
    pub(super) fn keep(&mut self, kept: &Kept) -> Result<(), ChangeError> {
        let version = Version::new(kept.hlc.as_i64() as u64, &kept.origin, 0, kept.seq);
        let origin = self.origin_id(&version)?;
        self.run(
            "INSERT INTO sdsync_kept(origin, seq, tbl, pk, op, data, hlc, creates, reason) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(origin, seq) DO UPDATE SET \
             tbl = excluded.tbl, pk = excluded.pk, op = excluded.op, data = excluded.data, \
             hlc = excluded.hlc, creates = excluded.creates, reason = excluded.reason",
            &[
                Value::Integer(origin),
                Value::Integer(kept.seq),
                Value::Text(kept.tbl.clone()),
                kept.pk.clone(),
                Value::Text(op_text(kept.op).into()),
                kept.data.clone().map_or(Value::Null, Value::Text),
                Value::Integer(kept.hlc.as_i64()),
                kept.creates.clone(),
                Value::Text(kept.reason.clone()),
            ],
        )?;
        Ok(())
    }

    /// Replaces the reason of the kept change `key` (origin id, seq).
    fn kept_reason(&mut self, key: &[Value; 2], reason: &str) -> Result<(), ChangeError> {
        self.run(
            "UPDATE sdsync_kept SET reason = ?3 WHERE origin = ?1 AND seq = ?2",
            &[
                key[0].clone(),
                key[1].clone(),
                Value::Text(reason.to_string()),
            ],
        )?;
        Ok(())
    }

    /// Re-applies (at a sweep after a schema change) every kept change whose table is tracked now: what the schema
    /// here has gained applies; a change that fits whole is no longer kept.
    pub(super) fn retry_kept(&mut self) -> Result<(), ChangeError> {
        let exists = self
            .db
            .query_i64(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'sdsync_kept'",
                &[],
            )?
            .unwrap_or(0)
            > 0;
        if !exists {
            return Ok(());
        }
        let mut rows = Vec::new();
        let mut stmt = self.db.prepare(
            "SELECT k.tbl, k.pk, k.op, k.data, o.uuid, k.seq, k.hlc, k.creates, k.origin \
             FROM sdsync_kept k JOIN sdsync_origins o ON o.id = k.origin ORDER BY k.hlc",
        )?;
        while stmt.step()? {
            let known =
                matches!(stmt.value(0), Value::Text(t) if self.catalog.present(&t).is_some());
            if known {
                rows.push((
                    (0..8).map(|i| stmt.value(i)).collect::<Vec<_>>(),
                    stmt.int(8),
                ));
            }
        }
        drop(stmt);
        for (values, origin_id) in rows {
            let key = [Value::Integer(origin_id), values[5].clone()];
            let mut parsed = match Change::parse(Fields { values }, &self.catalog) {
                Ok(parsed) => parsed,
                // Fits this schema no longer (a column's type changed): it
                // stays kept, saying why, and the others go on.
                Err(e) => {
                    self.kept_reason(&key, &format!("failed: {e}"))?;
                    continue;
                }
            };
            if let Some(change) = &mut parsed.change {
                // Only a renamed column can hold this change's default where
                // its sender wrote a value (under the new name, which this
                // database lacked then): those bits it takes again.
                change.carried &= change.table.renamed_mask();
                change.again = change.carried != 0;
                // A change that fails loses nothing (apply writes the table
                // first; an eviction parks what it removed before anything
                // after it can fail); it stays kept, with the error as its reason.
                if let Err(e) = self.apply_parsed(change) {
                    if is_transient(e.result_code()) {
                        return Err(e);
                    }
                    self.forget_transaction(false);
                    self.kept_reason(&key, &format!("failed: {e}"))?;
                    continue;
                }
            }
            match &parsed.kept {
                None => self.run(
                    "DELETE FROM sdsync_kept WHERE origin = ?1 AND seq = ?2",
                    &key,
                )?,
                Some(kept) => self.kept_reason(&key, &kept.reason)?,
            }
        }
        Ok(())
    }
}

/// The `op` text of a change.
pub(super) fn op_text(op: Op) -> &'static str {
    match op {
        Op::Upsert => "upsert",
        Op::Delete => "delete",
    }
}
