//! The size limit of a synced row, and the capture check that enforces it.
//!
//! ```
//! use sdsync_core::limits::{MAX_ROW_BYTES, size_check};
//! # use sdsync_core::schema::{Class, TableSpec};
//! # let spec = TableSpec { id: 1, name: "t".into(), class: Class::Shared, uuid_column: "uuid".into(),
//! #     local_id: "id".into(), columns: vec![] };
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
/// bytes, numbers as their text), uuid included. 32 MiB: far above any metadata
/// row, and a receiver peaks at about 13 times a row's size while applying it
/// (measured: 434 MB of RSS to decode and apply a page holding one 32 MiB row,
/// 860 MB for 64 MiB), which a phone must afford.
pub const MAX_ROW_BYTES: i64 = 32 * 1024 * 1024;

/// The trigger statement that refuses a row no peer could receive (`NEW` is the
/// written row): one over the limit, or one whose uuid is a REAL (a float is no
/// identity: `sdsync_changes` refuses it as a pk). Cheap when the row is fine:
/// one `length()` per column; the refusal function, which names the table, the
/// row and the largest column, runs only when it refuses.
pub fn size_check(spec: &TableSpec) -> String {
    let mut sizes = vec![size_of(&spec.uuid_column)];
    sizes.extend(spec.columns.iter().map(|c| size_of(&c.name)));
    format!(
        "SELECT sdsync_refuse_row({table}, NEW.{rid}) WHERE typeof(NEW.{uuid}) = 'real' OR {sum} > {MAX_ROW_BYTES};",
        table = quote_literal(&spec.name),
        rid = quote_ident(&spec.local_id),
        uuid = quote_ident(&spec.uuid_column),
        sum = balanced_sum(&sizes),
    )
}

/// `a + b + …` as a balanced tree: a left-deep sum of a wide table's columns would
/// pass SQLite's expression depth limit (1000).
fn balanced_sum(parts: &[String]) -> String {
    match parts {
        [] => "0".into(),
        [one] => one.clone(),
        _ => {
            let (left, right) = parts.split_at(parts.len() / 2);
            format!("({} + {})", balanced_sum(left), balanced_sum(right))
        }
    }
}

/// The size of `NEW.column` in bytes (`CAST … AS BLOB` counts text in bytes, and
/// costs no copy for text and blobs).
fn size_of(column: &str) -> String {
    format!(
        "coalesce(length(CAST(NEW.{} AS BLOB)), 0)",
        quote_ident(column)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_table_sums_in_a_shallow_tree() {
        let parts: Vec<String> = (0..2000).map(|i| i.to_string()).collect();
        let sum = balanced_sum(&parts);
        let depth = sum.chars().filter(|&c| c == '(').count();
        assert_eq!(depth, 1999);
        let mut open: i32 = 0;
        let mut deepest = 0;
        for c in sum.chars() {
            open += match c {
                '(' => 1,
                ')' => -1,
                _ => 0,
            };
            deepest = deepest.max(open);
        }
        assert!(deepest <= 11, "nesting {deepest}");
    }
}
