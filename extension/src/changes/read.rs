//! Serving `SELECT … FROM sdsync_changes`: the current version of every change.
//!
//! ```sql
//! -- Everything device D changed after its sequence 41, oldest first (index lookup):
//! SELECT tbl, pk, op, data, seq, hlc FROM sdsync_changes WHERE origin = 'D…' AND seq > 41;
//! ```
//!
//! One output row per version group of a row (columns sharing one version), per
//! tombstone, and per parked change. Values are read from the table itself at
//! read time, so capture stays a metadata write; references come out as uuids.

use std::collections::HashMap;
use std::rc::Rc;

use sdsync_core::merge::{Version, effective_mask};
use sdsync_core::schema::{Class, ROW_BIT};

use super::parse::ChangeError;
use super::rows;
use super::shelf::{Schema, Shelf};
use crate::ffi::{Db, SqlError, Stmt, Value};

/// Constraints the planner handed to the cursor (see `best_index`).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// `origin = ?`.
    pub origin: Option<String>,
    /// Lowest sequence excluded (`seq > after`).
    pub after: Option<i64>,
}

/// One output row.
pub struct ChangeRow {
    /// Table name.
    pub tbl: String,
    /// Row uuid.
    pub pk: Value,
    /// `upsert` or `delete`.
    pub op: &'static str,
    /// JSON object of column values (NULL for deletes).
    pub data: Option<String>,
    /// Origin device uuid.
    pub origin: String,
    /// Origin sequence.
    pub seq: i64,
    /// HLC.
    pub hlc: i64,
    /// 1 when this version created the row.
    pub creates: i64,
}

/// A streaming reader over versions and parked changes. Its statements come
/// from the connection's shelf and go back to it when the reader is dropped.
pub struct Reader {
    /// Invariant: `Some` until the reader is dropped.
    query: Option<Stmt>,
    schema: Rc<Schema>,
    selects: HashMap<i64, Stmt>,
    groups: Option<Stmt>,
    shelf: Shelf,
    db: Db,
    /// The row the cursor is on (`None` at the end).
    pub current: Option<ChangeRow>,
    /// Rows produced so far (serves as rowid).
    pub count: i64,
}

/// Live rows: the second column is the local id; kind 0.
const VERSIONS: &str = "SELECT v.tbl, v.rid, v.mask, o.uuid, v.seq, v.hlc, NULL, 0, NULL \
                        FROM sdsync_versions v JOIN sdsync_origins o ON o.id = v.origin";
/// Parked changes, with their data; kind 1.
const PARKED: &str = "SELECT p.tbl, p.pk, p.mask, o.uuid, p.seq, p.hlc, p.data, 1, NULL \
                      FROM sdsync_parked p JOIN sdsync_origins o ON o.id = p.origin";
/// Deleted rows; kind 2.
const TOMBSTONES: &str = "SELECT t.tbl, t.pk, 0, o.uuid, t.seq, t.hlc, NULL, 2, NULL \
                          FROM sdsync_tombstones t JOIN sdsync_origins o ON o.id = t.origin";
/// Kept changes (tables or columns this database lacks), as they came: the
/// table's name, and the op in place of a mask; kind 3.
const KEPT: &str = "SELECT k.tbl, k.pk, k.op, o.uuid, k.seq, k.hlc, k.data, 3, k.creates \
                    FROM sdsync_kept k JOIN sdsync_origins o ON o.id = k.origin";

impl Reader {
    /// Starts reading with the given constraints.
    pub fn open(db: Db, filter: &Filter, shelf: &Shelf) -> Result<Self, ChangeError> {
        let schema = shelf.schema(db)?;
        let empty = !schema.exists;
        // This device's updates not folded yet are served from their versions.
        if !empty {
            crate::fold::fold(db)?;
        }
        let kept = schema.kept_table;
        // A change kept here is served whole, as it came: the part of it this
        // database applied (a version group, or a parked piece) lacks the
        // columns it does not have, and served too it would tell a peer on the
        // newer schema that those columns took their default.
        let any_kept = kept && {
            let mut stmt = shelf.take(db, "SELECT EXISTS (SELECT 1 FROM sdsync_kept)")?;
            let read = stmt.step().map(|row| row && stmt.int(0) > 0);
            shelf.give(stmt);
            read?
        };
        let (not_kept_v, not_kept_p) = if any_kept {
            (
                " AND NOT EXISTS (SELECT 1 FROM sdsync_kept k WHERE k.origin = v.origin AND k.seq = v.seq)",
                " AND NOT EXISTS (SELECT 1 FROM sdsync_kept k WHERE k.origin = p.origin AND k.seq = p.seq)",
            )
        } else {
            ("", "")
        };
        let sql = if empty {
            "SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL WHERE 0".to_string()
        } else if filter.origin.is_some() {
            let origin = "(SELECT id FROM sdsync_origins WHERE uuid = ?1)";
            let kept = if kept {
                format!(" UNION ALL {KEPT} WHERE k.origin = {origin} AND k.seq > ?2")
            } else {
                String::new()
            };
            format!(
                "{VERSIONS} WHERE v.origin = {origin} AND v.seq > ?2{not_kept_v} \
                 UNION ALL {TOMBSTONES} WHERE t.origin = {origin} AND t.seq > ?2 \
                 UNION ALL {PARKED} WHERE p.origin = {origin} AND p.seq > ?2{not_kept_p}{kept} \
                 ORDER BY 5"
            )
        } else {
            let kept = if kept {
                format!(" UNION ALL {KEPT} WHERE k.seq > ?2")
            } else {
                String::new()
            };
            format!(
                "{VERSIONS} WHERE v.seq > ?2{not_kept_v} UNION ALL {TOMBSTONES} WHERE t.seq > ?2 \
                 UNION ALL {PARKED} WHERE p.seq > ?2{not_kept_p}{kept}"
            )
        };
        let mut query = shelf.take(db, &sql)?;
        if !empty {
            let origin = filter.origin.clone().map_or(Value::Null, Value::Text);
            if let Err(e) =
                query.bind_all(&[origin, Value::Integer(filter.after.unwrap_or(i64::MIN))])
            {
                shelf.give(query);
                return Err(e.into());
            }
        }
        let mut reader = Self {
            query: Some(query),
            schema,
            selects: HashMap::new(),
            groups: None,
            shelf: shelf.clone(),
            db,
            current: None,
            count: 0,
        };
        reader.advance()?;
        Ok(reader)
    }

    /// Moves to the next output row (skipping versions of untracked tables).
    pub fn advance(&mut self) -> Result<(), SqlError> {
        self.current = None;
        while self.query_mut().step()? {
            if let Some(row) = self.build()? {
                self.count += 1;
                self.current = Some(row);
                return Ok(());
            }
        }
        Ok(())
    }

    fn build(&mut self) -> Result<Option<ChangeRow>, SqlError> {
        if self.query().int(7) == 3 {
            return Ok(Some(self.kept_row()));
        }
        let q = self.query();
        let (tbl, key, mask) = (q.int(0), q.value(1), q.int(2) as u64);
        let (origin, seq, hlc) = (q.text(3).unwrap_or_default(), q.int(4), q.int(5));
        let (stored, kind) = (q.text(6), q.int(7));
        let Some(spec) = self.schema.catalog.by_id(tbl).cloned() else {
            return Ok(None);
        };
        let creates = i64::from(mask & ROW_BIT != 0);
        let (pk, op, data) = match kind {
            1 => (key, "upsert", stored),
            2 => (key, "delete", None),
            _ => {
                if !self.selects.contains_key(&tbl) {
                    match self.shelf.take(self.db, &rows::select_sql(&spec)) {
                        Ok(stmt) => {
                            self.selects.insert(tbl, stmt);
                        }
                        // A tracked table that was dropped, or that its
                        // repair found cannot be synced (its writes are
                        // refused until it is fixed): its rows cannot be read;
                        // the other tables still sync.
                        Err(e)
                            if !crate::ffi::is_transient(e.code)
                                && !self.repair_pending(&spec.name)? =>
                        {
                            return Ok(None);
                        }
                        // Changed and not repaired yet (a column renamed or
                        // dropped; the WAL hook repairs right after the DDL's
                        // commit, the syncer at its next sweep): busy, so the
                        // page stops here and is read again once repaired.
                        // Skipped, its rows were lost to peers whose
                        // watermark moved past them (session 22, a Django
                        // RenameField while the syncer served a page).
                        Err(e) if !crate::ffi::is_transient(e.code) => {
                            return Err(SqlError {
                                code: crate::ffi::SQLITE_BUSY,
                                message: format!(
                                    "sdsync: table {} changed and its capture is not repaired yet \
                                     ({}); its changes are served once it is",
                                    spec.name, e.message
                                ),
                                sql: e.sql,
                            });
                        }
                        Err(e) => return Err(e),
                    }
                }
                let Value::Integer(rid) = key else {
                    return Ok(None);
                };
                let mask = match spec.class {
                    Class::Owned => mask,
                    Class::Shared => self.effective(tbl, rid, mask, hlc, &origin)?,
                };
                if mask == 0 {
                    return Ok(None);
                }
                // Invariant: inserted above if it was missing.
                let stmt = self.selects.get_mut(&tbl).expect("select cached above");
                match rows::read_text(stmt, &spec, rid, mask)? {
                    Some((uuid, text)) => (uuid, "upsert", Some(text)),
                    None => return Ok(None),
                }
            }
        };
        Ok(Some(ChangeRow {
            tbl: spec.name.clone(),
            pk,
            op,
            data,
            origin,
            seq,
            hlc,
            creates,
        }))
    }
}

impl Reader {
    /// Whether table `name` exists and its capture still waits for a repair
    /// (not replaced by the triggers that refuse an unsyncable table's writes).
    fn repair_pending(&self, name: &str) -> Result<bool, SqlError> {
        let found = self.db.query_i64(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1) \
               AND NOT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'trigger' \
                 AND tbl_name = ?1 AND instr(sql, ?2) > 0)",
            &[
                Value::Text(name.to_string()),
                Value::Text(crate::migrate::UNSYNCABLE.to_string()),
            ],
        )?;
        Ok(found == Some(1))
    }

    fn query(&self) -> &Stmt {
        // Invariant: `query` is taken only by `drop`.
        self.query
            .as_ref()
            .expect("reader's query present until drop")
    }

    fn query_mut(&mut self) -> &mut Stmt {
        // Invariant: `query` is taken only by `drop`.
        self.query
            .as_mut()
            .expect("reader's query present until drop")
    }

    /// A kept change, as it came.
    fn kept_row(&self) -> ChangeRow {
        let q = self.query();
        let delete = q.text(2).as_deref() == Some("delete");
        ChangeRow {
            tbl: q.text(0).unwrap_or_default(),
            pk: q.value(1),
            op: if delete { "delete" } else { "upsert" },
            data: q.text(6),
            origin: q.text(3).unwrap_or_default(),
            seq: q.int(4),
            hlc: q.int(5),
            creates: match q.value(8) {
                Value::Integer(c) => c,
                _ => 0,
            },
        }
    }

    /// The bits of a shared row's group that no newer group of the row holds
    /// (capture lets groups overlap; see `merge::normalize`).
    fn effective(
        &mut self,
        tbl: i64,
        rid: i64,
        mask: u64,
        hlc: i64,
        origin: &str,
    ) -> Result<u64, SqlError> {
        if self.groups.is_none() {
            self.groups = Some(self.shelf.take(
                self.db,
                "SELECT v.mask, v.hlc, o.uuid FROM sdsync_versions v JOIN sdsync_origins o ON o.id = v.origin \
                 WHERE v.tbl = ?1 AND v.rid = ?2",
            )?);
        }
        // Invariant: set just above.
        let stmt = self
            .groups
            .as_mut()
            .expect("groups statement prepared above");
        stmt.bind_all(&[Value::Integer(tbl), Value::Integer(rid)])?;
        let mut others = Vec::new();
        while stmt.step()? {
            let version = Version::new(stmt.int(1) as u64, &stmt.text(2).unwrap_or_default(), 0, 0);
            others.push((stmt.int(0) as u64, version));
        }
        stmt.reset();
        Ok(effective_mask(
            mask,
            &Version::new(hlc as u64, origin, 0, 0),
            &others,
        ))
    }
}

impl Drop for Reader {
    /// The statements go back on the shelf for the next read.
    fn drop(&mut self) {
        let stmts = self.query.take().into_iter();
        let stmts = stmts
            .chain(self.groups.take())
            .chain(self.selects.drain().map(|(_, s)| s));
        for stmt in stmts {
            self.shelf.give(stmt);
        }
    }
}
