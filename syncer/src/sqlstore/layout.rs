//! The tracked tables as the library's `sdsync_tables` records them: specs
//! for the apply links, and the layouts a Hello tells peers.
//!
//! ```ignore
//! let tables = layouts(&conn)?; // one TableLayout per tracked table
//! ```

use crate::proto::schema::TableLayout;

/// The tracked tables' specs, by name (a spec that does not parse, written
/// by a newer version, is left out).
pub(super) fn specs(
    conn: &rusqlite::Connection,
) -> rusqlite::Result<Vec<sdsync_core::schema::TableSpec>> {
    let mut stmt = conn.prepare_cached("SELECT spec FROM sdsync_tables ORDER BY name")?;
    let texts: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(texts
        .iter()
        .filter_map(|text| serde_json::from_str(text).ok())
        .collect())
}

/// The tables a library syncs, as its Hello tells them (`proto::schema`).
pub fn layouts(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<TableLayout>> {
    Ok(specs(conn)?
        .into_iter()
        .map(|spec| {
            let mut columns: Vec<String> = spec.columns.iter().map(|c| c.name.clone()).collect();
            columns.sort();
            TableLayout {
                table: spec.name,
                class: spec.class.as_str().to_string(),
                columns,
            }
        })
        .collect())
}
