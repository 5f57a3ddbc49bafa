//! Turning a row inserted into `sdsync_changes` into a [`Change`], or a precise error.
//!
//! ```sql
//! INSERT INTO sdsync_changes(tbl, pk, op, data, origin, seq, hlc)
//! VALUES ('tags', '…uuid…', 'upsert', '{"canonical_name":"Vacation"}', '…device…', 7, 123456789);
//! ```
//!
//! Parse, don't validate: everything is checked here, before any write, so a bad
//! change is refused with nothing changed.

use std::borrow::Cow;
use std::fmt;
use std::rc::Rc;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::Value as Json;

use sdsync_core::hlc::Hlc;
use sdsync_core::ids::{MAX_SEQ, parse_device};
use sdsync_core::schema::{Class, ROW_BIT, TableSpec};

use crate::catalog::{Catalog, CatalogError};
use crate::ffi::{SqlError, Value};
use crate::values::from_json;

/// What a change does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Sets columns (and, with the row bit, creates the row).
    Upsert,
    /// Deletes the row (tombstone).
    Delete,
}

/// A checked change, ready to merge.
#[derive(Clone, Debug)]
pub struct Change {
    /// The tracked table.
    pub table: Rc<TableSpec>,
    /// The row's uuid.
    pub pk: Value,
    /// Upsert or delete.
    pub op: Op,
    /// Column values by column index (references as uuids); only `mask` bits count.
    pub values: Vec<Value>,
    /// Row bit and column bits carried.
    pub mask: u64,
    /// Origin device (canonical uuid text).
    pub origin: String,
    /// Origin sequence number.
    pub seq: i64,
    /// Origin HLC.
    pub hlc: Hlc,
    /// The column bits its data carries under their names here (the rest
    /// of `mask` are defaults, or values under a column's former name,
    /// which a sender that has not renamed it may hold only as a default:
    /// see `apply::upsert_plan`).
    pub carried: u64,
    /// Applied before in part, now again whole (a kept change retried):
    /// it takes the carried bits its own version holds too
    /// (`merge::plan_reapply`).
    pub again: bool,
}

/// A change as parsed: the part this database can apply now, and the whole
/// change to keep when it names a table or columns this database lacks (a
/// device on a newer schema wrote it; see `store::FORMAT_6`).
pub struct Parsed {
    /// What applies now (`None`: nothing does).
    pub change: Option<Change>,
    /// The change as it came, to keep, with why.
    pub kept: Option<Kept>,
}

/// A change kept whole in `sdsync_kept` until the schema here catches up.
#[derive(Clone, Debug)]
pub struct Kept {
    /// Table name as the sender calls it.
    pub tbl: String,
    /// Row uuid.
    pub pk: Value,
    /// `upsert` or `delete`.
    pub op: Op,
    /// The data as it came.
    pub data: Option<String>,
    /// Origin device.
    pub origin: String,
    /// Origin sequence.
    pub seq: i64,
    /// Origin HLC.
    pub hlc: Hlc,
    /// `creates` as it came (NULL stays NULL).
    pub creates: Value,
    /// What this database lacks.
    pub reason: String,
}

impl crate::ffi::ResultCode for ChangeError {
    fn result_code(&self) -> std::ffi::c_int {
        match self {
            Self::Sql(e) => e.result_code(),
            Self::Catalog(crate::catalog::CatalogError::Sql(e)) => e.result_code(),
            _ => crate::ffi::SQLITE_ERROR,
        }
    }
}

/// Why a change was refused. Each message names the table, row, column or device.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// A required field of the change row is NULL or missing.
    #[error("sdsync_changes: {0} must not be NULL")]
    Missing(&'static str),
    /// `tbl` is not text.
    #[error("sdsync_changes: tbl must be a table name, not {0:?}")]
    BadTable(Value),
    /// `op` is not `upsert` or `delete`.
    #[error("sdsync_changes: op must be 'upsert' or 'delete', not {0:?}")]
    BadOp(String),
    /// `data` is not a JSON object.
    #[error("sdsync_changes: data of {table} row {pk} is not a JSON object: {reason}")]
    BadJson {
        /// Table.
        table: String,
        /// Row.
        pk: String,
        /// Parser message.
        reason: String,
    },
    /// A value does not fit its column.
    #[error("sdsync_changes: column {table}.{column} got {what}")]
    WrongType {
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// What was found instead.
        what: &'static str,
    },
    /// A reference column does not carry a uuid.
    #[error(
        "sdsync_changes: column {table}.{column} references {target} and must carry its uuid (text, blob or integer)"
    )]
    BadReference {
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// Referenced table.
        target: String,
    },
    /// An upsert that sets nothing.
    #[error("sdsync_changes: upsert of {table} row {pk} carries no columns")]
    Empty {
        /// Table.
        table: String,
        /// Row.
        pk: String,
    },
    /// `origin` is not a device uuid.
    #[error("sdsync_changes: origin {0:?} is not a device uuid")]
    BadOrigin(String),
    /// `seq` is not a positive integer.
    #[error("sdsync_changes: seq must be a positive integer at most 2^53, not {0:?}")]
    BadSeq(Value),
    /// `hlc` is not a clock value.
    #[error("sdsync_changes: hlc must be a non-negative integer, not {0:?}")]
    BadHlc(Value),
    /// `pk` is not text, an integer or a blob.
    #[error("sdsync_changes: pk must be the row's uuid, not {0:?}")]
    BadPk(Value),
    /// The change's clock is too far ahead of ours.
    #[error(
        "sdsync_changes: change to {table} row {pk} from device {origin} has HLC {hlc}, {ahead_ms} ms ahead of this device's clock (allowed drift {max_ms} ms); refused"
    )]
    FarFuture {
        /// Table.
        table: String,
        /// Row.
        pk: String,
        /// Device.
        origin: String,
        /// The HLC, as text.
        hlc: String,
        /// How far ahead.
        ahead_ms: u64,
        /// Configured limit.
        max_ms: u64,
    },
    /// A device tried to change another device's owned row.
    #[error(
        "sdsync_changes: device {origin} may not change row {pk} of device-owned table {table}: it is owned by device {owner}"
    )]
    Forged {
        /// Table.
        table: String,
        /// Row.
        pk: String,
        /// The owner.
        owner: String,
        /// The sender's origin.
        origin: String,
    },
    /// The origin issued this sequence number for another change already.
    #[error(
        "sdsync_changes: device {origin} issued sequence {seq} twice ({which}): two devices write as {origin}, most likely a copied library folder; stop the copy's syncer and run `sdsync reidentify DIR` on it"
    )]
    IssuedTwice {
        /// The origin.
        origin: String,
        /// The sequence number.
        seq: i64,
        /// The two HLCs and the incoming change's table and row.
        which: String,
    },
    /// `sdsync_changes` only takes INSERTs.
    #[error(
        "sdsync_changes: only INSERT is supported (it applies a change); rows cannot be updated or deleted"
    )]
    ReadOnly,
    /// SQLite failed while applying.
    #[error("sdsync_changes: {0}")]
    Sql(#[from] SqlError),
    /// The tracked tables could not be read.
    #[error("sdsync_changes: {0}")]
    Catalog(#[from] CatalogError),
}

/// The raw fields of an inserted row, in column order.
pub struct Fields {
    /// tbl, pk, op, data, origin, seq, hlc, creates.
    pub values: Vec<Value>,
}

impl Fields {
    /// `INSERT INTO sdsync_changes(op) VALUES ('sweep')`: not a change, a request
    /// to apply parked changes whose wait is over.
    pub fn is_sweep(&self) -> bool {
        matches!(self.values.get(2), Some(Value::Text(op)) if op == "sweep")
            && self
                .values
                .iter()
                .enumerate()
                .all(|(i, v)| i == 2 || *v == Value::Null)
    }
}

impl Change {
    /// Parses and checks a change against the tracked tables.
    pub fn parse(fields: Fields, catalog: &Catalog) -> Result<Parsed, ChangeError> {
        let mut f = fields.values.into_iter();
        let mut next = || f.next().unwrap_or(Value::Null);
        let (tbl, pk, op, data, origin, seq, hlc, creates) = (
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
        );
        let name = match tbl {
            Value::Text(t) => t,
            Value::Null => return Err(ChangeError::Missing("tbl")),
            other => return Err(ChangeError::BadTable(other)),
        };
        let pk = match pk {
            Value::Null => return Err(ChangeError::Missing("pk")),
            Value::Real(_) => return Err(ChangeError::BadPk(pk)),
            pk => pk,
        };
        let op = match op {
            Value::Text(t) if t == "upsert" => Op::Upsert,
            Value::Text(t) if t == "delete" => Op::Delete,
            Value::Null => return Err(ChangeError::Missing("op")),
            other => return Err(ChangeError::BadOp(format!("{other:?}"))),
        };
        let origin = match origin {
            Value::Text(t) => parse_device(&t).ok_or(ChangeError::BadOrigin(t))?,
            Value::Null => return Err(ChangeError::Missing("origin")),
            other => return Err(ChangeError::BadOrigin(format!("{other:?}"))),
        };
        let seq = match seq {
            Value::Integer(s) if s > 0 && s <= MAX_SEQ => s,
            Value::Null => return Err(ChangeError::Missing("seq")),
            other => return Err(ChangeError::BadSeq(other)),
        };
        let hlc = match hlc {
            Value::Integer(h) => Hlc::from_i64(h).ok_or(ChangeError::BadHlc(Value::Integer(h)))?,
            Value::Null => return Err(ChangeError::Missing("hlc")),
            other => return Err(ChangeError::BadHlc(other)),
        };
        let kept = |reason: String, data: Option<String>, creates: Value| Kept {
            tbl: name.clone(),
            pk: pk.clone(),
            op,
            data,
            origin: origin.clone(),
            seq,
            hlc,
            creates,
            reason,
        };
        let data = match (op, data) {
            (Op::Delete, _) => None,
            (Op::Upsert, Value::Text(t)) => Some(t),
            (Op::Upsert, Value::Null) => return Err(ChangeError::Missing("data (of an upsert)")),
            (Op::Upsert, other) => {
                return Err(ChangeError::BadJson {
                    table: name,
                    pk: pk.to_string(),
                    reason: format!("{other:?}"),
                });
            }
        };
        let Some(table) = catalog.present(&name).cloned() else {
            if let Some(text) = &data {
                check_unknown_data(&name, &pk, text)?;
            }
            let reason = format!("table {name} is not tracked in this database");
            return Ok(Parsed {
                change: None,
                kept: Some(kept(reason, data, creates)),
            });
        };
        let mut change = Change {
            values: vec![Value::Null; table.columns.len()],
            table,
            pk: pk.clone(),
            op,
            mask: 0,
            origin: origin.clone(),
            seq,
            hlc,
            carried: 0,
            again: false,
        };
        let Some(text) = data else {
            return Ok(Parsed {
                change: Some(change),
                kept: None,
            });
        };
        let unknown =
            change.read_data(&text, creates.clone(), catalog.defaults(change.table.id))?;
        if unknown.is_empty() {
            return Ok(Parsed {
                change: Some(change),
                kept: None,
            });
        }
        let reason = format!(
            "table {} has no synced column {} in this database",
            change.table.name,
            unknown.join(", ")
        );
        let applies = change.mask != 0;
        Ok(Parsed {
            change: applies.then_some(change),
            kept: Some(kept(reason, Some(text), creates)),
        })
    }

    /// A change that creates a row (or an owned row's version, which is the
    /// whole row) defines every column: a column it does not carry — its sender
    /// is on an older schema, or a newer group of the row holds it — takes the
    /// table's default with this change's version, so every device decides
    /// that column the same way whatever its schema (`merge::winning_bits` does
    /// the same for a device that gains the column later). Columns without a
    /// constant default (NOT NULL without one, or computed) stay unset.
    fn default_the_rest(&mut self, defaults: &[Option<Value>]) {
        for (i, default) in defaults.iter().enumerate() {
            let bit = 1u64 << (i + 1);
            if let Some(value) = default.as_ref().filter(|_| self.mask & bit == 0) {
                self.values[i] = value.clone();
                self.mask |= bit;
            }
        }
    }

    /// The row's uuid as text, for messages.
    pub fn pk_text(&self) -> String {
        self.pk.to_string()
    }

    /// Reads the columns `data` sets; returns the names it carries that this
    /// database does not sync (their values checked to be SQLite values).
    fn read_data(
        &mut self,
        text: &str,
        creates: Value,
        defaults: &[Option<Value>],
    ) -> Result<Vec<String>, ChangeError> {
        let spec = self.table.clone();
        let bad = |reason: String| ChangeError::BadJson {
            table: spec.name.clone(),
            pk: self.pk_text(),
            reason,
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let (fields, unknown, former) = DataSeed(&spec)
            .deserialize(&mut de)
            .and_then(|f| de.end().map(|()| f))
            .map_err(|e| bad(e.to_string()))?;
        for (column, value) in &unknown {
            from_json(value).map_err(|what| ChangeError::WrongType {
                table: spec.name.clone(),
                column: column.clone(),
                what,
            })?;
        }
        for (i, value) in &fields {
            self.values[*i] = column_value(&spec, *i, value)?;
            self.mask |= 1 << (i + 1);
        }
        self.carried = self.mask & !former;
        let whole = spec.all_mask() & !ROW_BIT;
        let creates = match creates {
            Value::Integer(v) => v != 0,
            _ => self.mask == whole,
        };
        // An owned row's version is the whole row as its owner has it; columns
        // the owner's schema lacks keep this database's default.
        if spec.class == Class::Owned || creates {
            self.mask |= ROW_BIT;
            self.default_the_rest(defaults);
        }
        if self.mask == 0 && unknown.is_empty() {
            return Err(ChangeError::Empty {
                table: spec.name.clone(),
                pk: self.pk_text(),
            });
        }
        Ok(unknown.into_iter().map(|(c, _)| c).collect())
    }
}

/// Reads `data` straight into `(column index, value)` pairs: keys are matched to
/// columns without building a map first (apply parses every change's data). An
/// unknown key comes back apart, with its value; the mask bits of the columns
/// named by a former name come last.
struct DataSeed<'s>(&'s TableSpec);

type DataFields = (Vec<(usize, Json)>, Vec<(String, Json)>, u64);

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = DataFields;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<DataFields, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_> {
    type Value = DataFields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of column values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DataFields, A::Error> {
        let mut out = Vec::with_capacity(self.0.columns.len());
        let mut unknown = Vec::new();
        // Keys naming a column by a former name (`TableSpec::column_aliases`).
        let mut former = Vec::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            // The alias lookup only for a key no column has (apply parses
            // every change's data: one scan of the columns per key).
            if let Some(i) = self.0.columns.iter().position(|c| c.name == *key) {
                out.push((i, map.next_value::<Json>()?));
            } else if let Some(i) = self.0.column_index(&key) {
                former.push((i, key.into_owned(), map.next_value::<Json>()?));
            } else {
                unknown.push((key.into_owned(), map.next_value::<Json>()?));
            }
        }
        // A sender that also names the column itself renamed it and then
        // made a new column under the former name: that value is not ours.
        let mut by_former = 0;
        for (i, key, value) in former {
            if out.iter().any(|(j, _)| *j == i) {
                unknown.push((key, value));
            } else {
                by_former |= 1 << (i + 1);
                out.push((i, value));
            }
        }
        Ok((out, unknown, by_former))
    }
}

/// Checks the data of a change for a table this database does not track: a
/// JSON object of SQLite values (what any tracked table would accept).
fn check_unknown_data(table: &str, pk: &Value, text: &str) -> Result<(), ChangeError> {
    let object: serde_json::Map<String, Json> =
        serde_json::from_str(text).map_err(|e| ChangeError::BadJson {
            table: table.to_string(),
            pk: pk.to_string(),
            reason: e.to_string(),
        })?;
    for (column, value) in &object {
        from_json(value).map_err(|what| ChangeError::WrongType {
            table: table.to_string(),
            column: column.clone(),
            what,
        })?;
    }
    Ok(())
}

/// A JSON object key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a column name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Decodes the JSON value of column `i`: references as the referenced row's uuid,
/// other columns any SQLite value (see `values`).
pub fn column_value(spec: &TableSpec, i: usize, json: &Json) -> Result<Value, ChangeError> {
    let col = &spec.columns[i];
    if let Some(r) = &col.reference {
        // The referenced row's uuid, typed as its table stores it (TEXT, or BLOB
        // for a `pub_id BLOB` table); a REAL is no uuid.
        return match from_json(json) {
            Ok(
                v @ (Value::Null
                | Value::Text(_)
                | Value::RawText(_)
                | Value::Blob(_)
                | Value::Integer(_)),
            ) => Ok(v),
            _ => Err(ChangeError::BadReference {
                table: spec.name.clone(),
                column: col.name.clone(),
                target: r.table.clone(),
            }),
        };
    }
    from_json(json).map_err(|what| ChangeError::WrongType {
        table: spec.name.clone(),
        column: col.name.clone(),
        what,
    })
}
