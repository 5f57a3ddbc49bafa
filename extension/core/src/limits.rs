//! The size limit of a synced row, and the capture check that enforces it.
//!
//! ```
//! use sdsync_core::limits::{MAX_ROW_BYTES, size_check};
//! # use sdsync_core::schema::{Class, TableSpec};
//! # let spec = TableSpec { id: 1, name: "t".into(), class: Class::Shared, uuid_column: "uuid".into(),
//! #     local_id: "id".into(), columns: vec![], options: Default::default(), aliases: vec![], column_aliases: vec![] };
//! assert!(size_check(&spec).contains(&MAX_ROW_BYTES.to_string()));
//! ```
//!
//! Why a limit: a change travels whole, as JSON text in `sdsync_changes.data`
//! (itself an SQLite value, so below SQLite's 1e9-byte maximum) and in one QUIC
//! frame, and a receiver holds a few copies of it in memory while applying it.
//! A row whose values (uuid included) total more than [`MAX_ROW_BYTES`] is
//! refused **when it is written**, so nothing is accepted on one device that a
//! peer could not receive. Its JSON is at most twice that (hex for blobs and for
//! text with control characters or invalid UTF-8) plus a few bytes per column,
//! which is what bounds the protocol's frame size.

use crate::schema::{TableSpec, quote_ident, quote_literal};

/// The largest synced row: the sum of its values' sizes in bytes (TEXT and BLOB
/// bytes, 8 per number), uuid included. 32 MiB: far above any metadata
/// row, and a receiver peaks at about 13 times a row's size while applying it
/// (measured: 434 MB of RSS to decode and apply a page holding one 32 MiB row,
/// 860 MB for 64 MiB), which a phone must afford.
pub const MAX_ROW_BYTES: i64 = 32 * 1024 * 1024;

/// The trigger statement that refuses a row no peer could receive (`NEW` is the
/// written row): one over the limit, or one whose uuid is a REAL (a float is no
/// identity: `sdsync_changes` refuses it as a pk). Cheap when the row is fine:
/// one call of `sdsync_row_bytes`; the refusal function, which names the table, the
/// row and the largest column, runs only when it refuses.
pub fn size_check(spec: &TableSpec) -> String {
    format!(
        "SELECT sdsync_refuse_row({table}, NEW.{rid}) WHERE typeof(NEW.{uuid}) = 'real' OR {sum} > {MAX_ROW_BYTES};",
        table = quote_literal(&spec.name),
        rid = quote_ident(&spec.local_id),
        uuid = quote_ident(&spec.uuid_column),
        sum = row_bytes(spec),
    )
}

/// The update trigger's form of [`size_check`]: the uuid cannot change in an
/// update (the rekey trigger refuses it), so only the size is checked.
pub fn size_check_update(spec: &TableSpec) -> String {
    format!(
        "SELECT sdsync_refuse_row({table}, NEW.{rid}) WHERE {sum} > {MAX_ROW_BYTES};",
        table = quote_literal(&spec.name),
        rid = quote_ident(&spec.local_id),
        sum = row_bytes(spec),
    )
}

/// The row's size by the extension's `sdsync_row_bytes` (TEXT and BLOB bytes, 8
/// per number): one call with every column, no copies.
fn row_bytes(spec: &TableSpec) -> String {
    let args: Vec<String> = std::iter::once(&spec.uuid_column)
        .chain(spec.columns.iter().map(|c| &c.name))
        .map(|c| format!("NEW.{}", quote_ident(c)))
        .collect();
    format!("sdsync_row_bytes({})", args.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Affinity, Class, ColumnSpec};

    #[test]
    fn every_column_is_counted_in_one_call() {
        let col = |n: &str| ColumnSpec {
            name: n.into(),
            affinity: Affinity::Text,
            required: false,
            reference: None,
        };
        let spec = TableSpec {
            id: 1,
            name: "t".into(),
            class: Class::Shared,
            uuid_column: "uuid".into(),
            local_id: "id".into(),
            columns: vec![col("a"), col("b c")],
            options: Default::default(),
            aliases: Vec::new(),
            column_aliases: Vec::new(),
        };
        let sql = size_check(&spec);
        assert!(
            sql.contains("sdsync_row_bytes(NEW.\"uuid\", NEW.\"a\", NEW.\"b c\")"),
            "{sql}"
        );
        assert!(!size_check_update(&spec).contains("typeof"));
    }
}
