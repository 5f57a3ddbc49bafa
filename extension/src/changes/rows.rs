//! SQL for reading and writing the rows of a tracked table, with references
//! translated between local ids and uuids.
//!
//! ```ignore
//! // entries(parent_id → entries.id): the column is read as the parent's uuid.
//! let sql = select_sql(&spec);
//! // SELECT t."uuid", t."name", (SELECT r."uuid" FROM "entries" r WHERE r."id" = t."parent_id") FROM "entries" t WHERE t."id" = ?1
//! ```
//!
//! Integer ids never cross the wire (DESIGN.md §2.7): a reference is read through a
//! subquery that yields the referenced row's uuid, and on apply the uuid is mapped
//! back to the local id with [`resolve_sql`].

use serde_json::{Map, Value as Json};

use sdsync_core::schema::{ColumnSpec, Reference, TableSpec, quote_ident};

use crate::ffi::{SqlError, Stmt, Value};
use crate::values::{to_json, write_json};

/// Reads the uuid and every synced column of one row (by local id), references
/// as uuids.
pub fn select_sql(spec: &TableSpec) -> String {
    let mut cols = vec![format!("t.{}", quote_ident(&spec.uuid_column))];
    cols.extend(spec.columns.iter().map(read_expr));
    format!(
        "SELECT {} FROM {} t WHERE t.{} = ?1",
        cols.join(", "),
        quote_ident(&spec.name),
        quote_ident(&spec.local_id)
    )
}

/// A row's local id and its version groups, by uuid (one lookup for both; a row
/// without groups gives one line with NULL mask).
pub fn state_sql(spec: &TableSpec) -> String {
    format!(
        "SELECT t.{rid}, v.mask, v.origin, v.seq, v.hlc FROM {t} t \
         LEFT JOIN sdsync_versions v ON v.tbl = {id} AND v.rid = t.{rid} WHERE t.{uuid} = ?1",
        rid = quote_ident(&spec.local_id),
        t = quote_ident(&spec.name),
        id = spec.id,
        uuid = quote_ident(&spec.uuid_column)
    )
}

fn read_expr(c: &ColumnSpec) -> String {
    let col = format!("t.{}", quote_ident(&c.name));
    match &c.reference {
        Some(r) if !r.by_uuid => format!(
            "(SELECT r.{uuid} FROM {table} r WHERE r.{to} = {col})",
            uuid = quote_ident(&r.target_uuid),
            table = quote_ident(&r.table),
            to = quote_ident(&r.column),
        ),
        _ => col,
    }
}

/// Clears reference column `i` of the row with local id `?1`.
pub fn unlink_sql(child: &TableSpec, i: usize) -> String {
    format!(
        "UPDATE {t} SET {col} = NULL WHERE {rid} = ?1",
        t = quote_ident(&child.name),
        col = quote_ident(&child.columns[i].name),
        rid = quote_ident(&child.local_id),
    )
}

/// The rows of `child` whose column `i` references the `parent` row with local id
/// `?1`: their local ids and uuids.
pub fn children_sql(child: &TableSpec, i: usize, parent: &TableSpec) -> String {
    let col = &child.columns[i];
    let target = col
        .reference
        .as_ref()
        .map_or(parent.local_id.as_str(), |r| r.column.as_str());
    format!(
        "SELECT c.{crid}, c.{cuuid} FROM {ct} c WHERE c.{col} = (SELECT p.{target} FROM {pt} p WHERE p.{prid} = ?1)",
        crid = quote_ident(&child.local_id),
        cuuid = quote_ident(&child.uuid_column),
        ct = quote_ident(&child.name),
        col = quote_ident(&col.name),
        target = quote_ident(target),
        pt = quote_ident(&parent.name),
        prid = quote_ident(&parent.local_id),
    )
}

/// The uuids of `spec`'s rows that parked changes wait for and that exist.
pub fn ready_sql(spec: &TableSpec) -> String {
    format!(
        "SELECT DISTINCT p.wait_pk FROM sdsync_parked p JOIN {t} w ON w.{uuid} = p.wait_pk WHERE p.wait_tbl = {id}",
        t = quote_ident(&spec.name),
        uuid = quote_ident(&spec.uuid_column),
        id = spec.id
    )
}

/// Maps a referenced row's uuid to the value the referencing column stores.
pub fn resolve_sql(r: &Reference) -> String {
    format!(
        "SELECT {} FROM {} WHERE {} = ?1",
        quote_ident(&r.column),
        quote_ident(&r.table),
        quote_ident(&r.target_uuid)
    )
}

/// Inserts a row with the uuid and the columns of `mask`.
pub fn insert_sql(spec: &TableSpec, mask: u64) -> String {
    let mut names = vec![quote_ident(&spec.uuid_column)];
    let mut params = vec!["?1".to_string()];
    for (i, (_, c)) in spec.columns_in(mask).enumerate() {
        names.push(quote_ident(&c.name));
        params.push(format!("?{}", i + 2));
    }
    format!(
        "INSERT INTO {}({}) VALUES ({})",
        quote_ident(&spec.name),
        names.join(", "),
        params.join(", ")
    )
}

/// Updates the columns of `mask` of the row with uuid `?1`.
pub fn update_sql(spec: &TableSpec, mask: u64) -> String {
    let sets: Vec<String> = spec
        .columns_in(mask)
        .enumerate()
        .map(|(i, (_, c))| format!("{} = ?{}", quote_ident(&c.name), i + 2))
        .collect();
    format!(
        "UPDATE {} SET {} WHERE {} = ?1",
        quote_ident(&spec.name),
        sets.join(", "),
        quote_ident(&spec.uuid_column)
    )
}

/// Whether the row with uuid `?1` holds the values `?2`, … in the columns
/// of `mask`, of the same type and byte for byte (`IS`: NULLs compare equal;
/// `BINARY`, whatever the column's collation: values travel exact, and
/// `'None'` written over `'none'` in a `NOCASE` column is new); no row reads
/// as NULL.
pub fn same_values_sql(spec: &TableSpec, mask: u64) -> String {
    let same: Vec<String> = spec
        .columns_in(mask)
        .enumerate()
        .map(|(i, (_, c))| {
            let (c, n) = (quote_ident(&c.name), i + 2);
            format!("({c} IS ?{n} COLLATE BINARY AND typeof({c}) IS typeof(?{n}))")
        })
        .collect();
    format!(
        "SELECT {} FROM {} WHERE {} = ?1",
        same.join(" AND "),
        quote_ident(&spec.name),
        quote_ident(&spec.uuid_column)
    )
}

/// Deletes the row with uuid `?1`.
pub fn delete_sql(spec: &TableSpec) -> String {
    format!(
        "DELETE FROM {} WHERE {} = ?1",
        quote_ident(&spec.name),
        quote_ident(&spec.uuid_column)
    )
}

/// For each column of `mask` (in column order), whether the row with local
/// id `?1` holds the value `?2k+2` and not `?2k+3` (the `k`th column's
/// default, then another value). Compared as SQLite compares a column with a
/// value: the column's affinity applies (a `REAL DEFAULT 0` column holds 0.0,
/// which is its default 0), references as the uuids they name.
pub fn defaulted_sql(spec: &TableSpec, mask: u64) -> String {
    let tests: Vec<String> = spec
        .columns_in(mask)
        .enumerate()
        .map(|(k, (_, c))| {
            let (e, d, v) = (read_expr(c), 2 * k + 2, 2 * k + 3);
            format!("({e} IS ?{d} AND {e} IS NOT ?{v})")
        })
        .collect();
    format!(
        "SELECT {} FROM {} t WHERE t.{} = ?1",
        tests.join(", "),
        quote_ident(&spec.name),
        quote_ident(&spec.local_id)
    )
}

/// Steps a prepared [`select_sql`] statement for local id `rid` and returns the
/// row's uuid and the columns of `mask` as the text of a JSON object, keys in
/// name order: the text [`read_json`]'s map prints, written directly. A
/// sending syncer reads every change it serves this way; building a map of
/// owned names and values per row and then printing it was about 40 % of
/// its CPU at full speed.
pub fn read_text(
    stmt: &mut Stmt,
    spec: &TableSpec,
    rid: i64,
    mask: u64,
) -> Result<Option<(Value, String)>, SqlError> {
    let Some(uuid) = step_row(stmt, rid)? else {
        return Ok(None);
    };
    let mut columns: Vec<(&str, usize)> = spec
        .columns_in(mask)
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    // A `serde_json` map (without `preserve_order`) is a BTreeMap: its keys
    // print in byte order, which `str`'s ordering is.
    columns.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(32 * columns.len() + 2);
    out.push(b'{');
    for (n, (name, i)) in columns.into_iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        // Writing a string to a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut out, name);
        out.push(b':');
        write_json(&mut out, &stmt.value(i + 1));
    }
    out.push(b'}');
    stmt.reset();
    // Invariant: everything written above is JSON printed by serde_json, or
    // ASCII punctuation: UTF-8.
    let text = String::from_utf8(out).expect("JSON text is UTF-8");
    Ok(Some((uuid, text)))
}

/// A row's uuid and some of its columns as JSON.
pub type RowJson = (Value, Map<String, Json>);

/// Steps a prepared [`select_sql`] statement for local id `rid` and returns the
/// row's uuid and the columns of `mask` as a JSON object (`None`: no such row).
pub fn read_json(
    stmt: &mut Stmt,
    spec: &TableSpec,
    rid: i64,
    mask: u64,
) -> Result<Option<RowJson>, SqlError> {
    let Some(uuid) = step_row(stmt, rid)? else {
        return Ok(None);
    };
    let mut out = Map::new();
    for (i, c) in spec.columns_in(mask) {
        out.insert(c.name.clone(), to_json(&stmt.value(i + 1)));
    }
    stmt.reset();
    Ok(Some((uuid, out)))
}

/// Steps a prepared [`select_sql`] statement to the row with local id `rid`;
/// returns its uuid (`None`: no such row). Its columns are the caller's to read.
fn step_row(stmt: &mut Stmt, rid: i64) -> Result<Option<Value>, SqlError> {
    stmt.bind_all(&[Value::Integer(rid)])?;
    Ok(if stmt.step()? {
        Some(stmt.value(0))
    } else {
        None
    })
}
