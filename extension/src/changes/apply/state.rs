//! What the database holds of a row: its local id, version groups and tombstone,
//! and the origin ids behind them; and writing them back.
//!
//! ```ignore
//! let (state, rid) = self.state(&spec, &pk)?; // RowState::Alive(groups) | Dead(tombstone) | Absent
//! ```

use sdsync_core::hlc::Hlc;
use sdsync_core::merge::{Group, RowState, Version, normalize};
use sdsync_core::schema::TableSpec;

use super::{Engine, Key};
use crate::changes::parse::{Change, ChangeError};
use crate::changes::rows;
use crate::ffi::{SqlError, Value};
use crate::store;

impl Engine {
    /// The local id of an origin already known here (no write).
    pub(super) fn known_origin(&mut self, uuid: &str) -> Result<Option<i64>, SqlError> {
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

    /// Refuses a change whose origin already issued its sequence number for
    /// another change (another HLC) here: two devices write as that origin
    /// (a copied library folder), and one's changes would hide the other's.
    /// Refused, it is quarantined by the syncer and shown on both sides. Not
    /// when a change of that origin with this very HLC is held: the origin was
    /// restored and renumbered it, and this is its old copy (quarantined
    /// earlier, or forwarded late), which merges as usual. Nor when the
    /// change would write nothing (superseded here): it hides nothing, and
    /// refused, it would stay quarantined for good once the origin renumbered
    /// past it (a restored folder that reused numbers).
    pub(super) fn check_fork(&mut self, change: &Change, v: &Version) -> Result<(), ChangeError> {
        if v.origin_id == 0 || v.seq > self.top_seq(v.origin_id)? {
            return Ok(());
        }
        let params = [Value::Integer(v.origin_id), Value::Integer(v.seq)];
        let mut held = None;
        for sql in [
            "SELECT hlc FROM sdsync_versions WHERE origin = ?1 AND seq = ?2 LIMIT 1",
            "SELECT hlc FROM sdsync_tombstones WHERE origin = ?1 AND seq = ?2 LIMIT 1",
        ] {
            let stmt = self.stmt(sql)?;
            stmt.bind_all(&params)?;
            if stmt.step()? {
                held = Some(stmt.int(0));
            }
            stmt.reset();
            if held.is_some() {
                break;
            }
        }
        match held {
            Some(hlc)
                if hlc as u64 != v.hlc && !self.holds_hlc(v)? && self.would_write(change, v)? =>
            {
                Err(ChangeError::IssuedTwice {
                    origin: v.origin.clone(),
                    seq: v.seq,
                    which: format!(
                        "HLC {} here, {} in this change to {} row {}",
                        Hlc::from_i64(hlc).unwrap_or_default(),
                        change.hlc,
                        change.table.name,
                        change.pk_text()
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// The highest sequence number of `origin` held in versions or
    /// tombstones (0: none), looked up once per transaction.
    fn top_seq(&mut self, origin: i64) -> Result<i64, SqlError> {
        if let Some(top) = self.tx.top_seq.get(&origin) {
            return Ok(*top);
        }
        let stmt = self.stmt(
            "SELECT max(coalesce((SELECT max(seq) FROM sdsync_versions WHERE origin = ?1), 0), \
                        coalesce((SELECT max(seq) FROM sdsync_tombstones WHERE origin = ?1), 0))",
        )?;
        stmt.bind_all(&[Value::Integer(origin)])?;
        let top = if stmt.step()? { stmt.int(0) } else { i64::MAX };
        stmt.reset();
        self.tx.top_seq.insert(origin, top);
        Ok(top)
    }

    /// Apply stores a version or tombstone numbered `seq` for `origin`: the
    /// highest held may have risen.
    fn held_seq(&mut self, origin: i64, seq: i64) {
        if let Some(top) = self.tx.top_seq.get_mut(&origin) {
            *top = (*top).max(seq);
        }
    }

    /// Whether a change of `v`'s origin with `v`'s HLC is held (only asked on
    /// a sequence conflict, so the scan of that origin's rows is rare).
    fn holds_hlc(&mut self, v: &Version) -> Result<bool, SqlError> {
        let stmt = self.stmt(
            "SELECT EXISTS (SELECT 1 FROM sdsync_versions WHERE origin = ?1 AND hlc = ?2) \
                 OR EXISTS (SELECT 1 FROM sdsync_tombstones WHERE origin = ?1 AND hlc = ?2)",
        )?;
        stmt.bind_all(&[Value::Integer(v.origin_id), Value::Integer(v.hlc as i64)])?;
        let held = stmt.step()? && stmt.int(0) != 0;
        stmt.reset();
        Ok(held)
    }

    /// The local id of a version's origin, creating the origin row on first use.
    /// Called only after the change's table write succeeded, so a refused change
    /// leaves no origin behind.
    pub(super) fn origin_id(&mut self, v: &Version) -> Result<i64, SqlError> {
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

    pub(super) fn origin_name(&mut self, id: i64) -> Result<String, SqlError> {
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

    /// What this database holds about a row, and its local id if it exists.
    pub(super) fn state(
        &mut self,
        spec: &TableSpec,
        pk: &Value,
    ) -> Result<(RowState, Option<i64>), SqlError> {
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

    /// A change this row holds already (same origin and HLC) under a higher
    /// sequence number: its origin renumbered it (after a restore). The row
    /// takes the new number, so it serves the change to devices whose
    /// watermarks cover only the old one (they may lack it: the restored
    /// origin reused that number); an older number arriving changes nothing.
    /// Returns the state with the numbers it now holds, and whether it took
    /// the new number (the change is a renumbered copy of one held here).
    pub(super) fn adopt_number(
        &mut self,
        spec: &TableSpec,
        pk: &Value,
        state: RowState,
        rid: Option<i64>,
        v: &Version,
    ) -> Result<(RowState, bool), SqlError> {
        let renumbered = |w: &Version| w.same_as(v) && w.seq < v.seq;
        match state {
            RowState::Alive(mut groups) if groups.iter().any(|g| renumbered(&g.version)) => {
                let Some(rid) = rid else {
                    return Ok((RowState::Alive(groups), false));
                };
                // `+origin`, `+seq`: the row's own groups, by primary key.
                // Left to choose, SQLite searched `sdsync_versions_by_origin`
                // for every change of the origin below the new number, so
                // taking back a restored device's renumbered changes took
                // 17 ms per change at 20,000 (a user's trial).
                self.take_number(
                    "UPDATE sdsync_versions SET seq = ?4 \
                     WHERE tbl = ?1 AND rid = ?2 AND +origin = ?5 AND hlc = ?3 AND +seq < ?4",
                    spec,
                    Value::Integer(rid),
                    v,
                )?;
                for g in groups.iter_mut().filter(|g| renumbered(&g.version)) {
                    g.version.seq = v.seq;
                }
                Ok((RowState::Alive(groups), true))
            }
            RowState::Dead(mut t) if renumbered(&t) => {
                self.take_number(
                    "UPDATE sdsync_tombstones SET seq = ?4 \
                     WHERE tbl = ?1 AND pk = ?2 AND origin = ?5 AND hlc = ?3 AND seq < ?4",
                    spec,
                    pk.clone(),
                    v,
                )?;
                t.seq = v.seq;
                Ok((RowState::Dead(t), true))
            }
            other => Ok((other, false)),
        }
    }

    /// Runs `sql` (one of [`Engine::adopt_number`]'s) for the row `key`.
    fn take_number(
        &mut self,
        sql: &'static str,
        spec: &TableSpec,
        key: Value,
        v: &Version,
    ) -> Result<(), SqlError> {
        let origin = self.origin_id(v)?;
        self.held_seq(origin, v.seq);
        self.run(
            sql,
            &[
                Value::Integer(spec.id),
                key,
                Value::Integer(v.hlc as i64),
                Value::Integer(v.seq),
                Value::Integer(origin),
            ],
        )
    }

    pub(super) fn tombstone(
        &mut self,
        spec: &TableSpec,
        pk: &Value,
    ) -> Result<Option<Version>, SqlError> {
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

    pub(super) fn set_tombstone(
        &mut self,
        spec: &TableSpec,
        pk: &Value,
        v: &Version,
    ) -> Result<(), SqlError> {
        let origin = self.origin_id(v)?;
        self.held_seq(origin, v.seq);
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
    pub(super) fn set_groups(
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
    pub(super) fn put_group(
        &mut self,
        spec: &TableSpec,
        rid: i64,
        g: &Group,
    ) -> Result<(), SqlError> {
        let origin = self.origin_id(&g.version)?;
        self.held_seq(origin, g.version.seq);
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
}
