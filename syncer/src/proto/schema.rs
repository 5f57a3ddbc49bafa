//! Comparing two devices' tracked tables: what each Hello carries and what a
//! mismatch says.
//!
//! ```
//! use sdsync_syncer::proto::schema::{TableLayout, mismatches};
//! let ours = vec![TableLayout { table: "tags".into(), class: "shared".into(), columns: vec!["name".into()] }];
//! let theirs = vec![TableLayout { table: "tags".into(), class: "shared".into(), columns: vec!["emoji".into(), "name".into()] }];
//! assert_eq!(mismatches(&ours, &theirs), vec!["table tags: the peer syncs column emoji, which this device does not have yet (its values are kept here until it does)".to_string()]);
//! ```
//!
//! Devices run different app versions for weeks; nothing stops on a mismatch
//! (the extension keeps what it cannot apply yet, `sdsync_kept`), but both
//! devices say so, naming the table and column, so a person knows why a value
//! written on one is not shown on the other.

use serde::{Deserialize, Serialize};

/// One tracked table as a device syncs it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableLayout {
    /// Table name.
    pub table: String,
    /// `owned` or `shared`.
    pub class: String,
    /// Synced column names, sorted.
    pub columns: Vec<String>,
}

/// What differs between this device's tables (`ours`) and a peer's, one line
/// per table, in words (empty: the same).
pub fn mismatches(ours: &[TableLayout], theirs: &[TableLayout]) -> Vec<String> {
    let mut out = Vec::new();
    for t in theirs {
        match ours.iter().find(|o| o.table == t.table) {
            None => out.push(format!(
                "table {}: the peer syncs it and this device does not track it (its changes are kept here until it does)",
                t.table
            )),
            Some(o) => out.extend(compare(o, t)),
        }
    }
    for o in ours
        .iter()
        .filter(|o| !theirs.iter().any(|t| t.table == o.table))
    {
        out.push(format!(
            "table {}: this device syncs it and the peer does not track it (the peer keeps its changes until it does)",
            o.table
        ));
    }
    out
}

fn compare(ours: &TableLayout, theirs: &TableLayout) -> Option<String> {
    if ours.class != theirs.class {
        return Some(format!(
            "table {}: {} here but {} on the peer",
            ours.table, ours.class, theirs.class
        ));
    }
    let only = |a: &TableLayout, b: &TableLayout| -> Vec<String> {
        a.columns
            .iter()
            .filter(|c| !b.columns.contains(c))
            .cloned()
            .collect()
    };
    let (peer_only, here_only) = (only(theirs, ours), only(ours, theirs));
    let plural = |v: &[String]| if v.len() == 1 { "column" } else { "columns" };
    let mut parts = Vec::new();
    if !peer_only.is_empty() {
        parts.push(format!(
            "the peer syncs {} {}, which this device does not have yet (its values are kept here until it does)",
            plural(&peer_only),
            peer_only.join(", ")
        ));
    }
    if !here_only.is_empty() {
        parts.push(format!(
            "this device syncs {} {}, which the peer does not have (the peer keeps them until it does)",
            plural(&here_only),
            here_only.join(", ")
        ));
    }
    (!parts.is_empty()).then(|| format!("table {}: {}", ours.table, parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(table: &str, class: &str, columns: &[&str]) -> TableLayout {
        TableLayout {
            table: table.into(),
            class: class.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn every_kind_of_difference_is_named() {
        let ours = vec![
            layout("tags", "shared", &["name", "old"]),
            layout("notes", "shared", &["body"]),
            layout("logs", "owned", &["a"]),
            layout("same", "shared", &["x"]),
        ];
        let theirs = vec![
            layout("tags", "shared", &["emoji", "name"]),
            layout("albums", "shared", &["name"]),
            layout("logs", "shared", &["a"]),
            layout("same", "shared", &["x"]),
        ];
        assert_eq!(
            mismatches(&ours, &theirs),
            vec![
                "table tags: the peer syncs column emoji, which this device does not have yet (its values are kept here until it does); this device syncs column old, which the peer does not have (the peer keeps them until it does)",
                "table albums: the peer syncs it and this device does not track it (its changes are kept here until it does)",
                "table logs: owned here but shared on the peer",
                "table notes: this device syncs it and the peer does not track it (the peer keeps its changes until it does)",
            ]
        );
        assert!(mismatches(&ours, &ours).is_empty());
    }
}
