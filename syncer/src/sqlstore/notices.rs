//! The last notable event of each kind the syncer recovered from by itself,
//! kept in `sync.db` for `sdsync status`: a restore of this device's own
//! library, a peer's restore, two copies of a folder running at once. The
//! log says so at WARN when it happens; status keeps saying so afterwards,
//! so that a person who looks a day later still learns that two histories
//! met, and when.
//!
//! ```ignore
//! notices::note(&sync, "restored", "this device's library went back ...")?;
//! for (kind, detail, at) in notices::all(&sync)? { /* "restored ... (at)" */ }
//! ```

use rusqlite::{Connection, params};

/// The table, created with the rest of `sync.db`'s.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notices(
  kind TEXT PRIMARY KEY, detail TEXT NOT NULL,
  at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')));";

/// Keeps `detail` as the last notice of `kind`, stamped now.
pub fn note(conn: &Connection, kind: &str, detail: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO notices(kind, detail) VALUES (?1, ?2) \
         ON CONFLICT(kind) DO UPDATE SET detail = excluded.detail, \
           at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        params![kind, detail],
    )
    .map(|_| ())
}

/// Every notice kept, `(kind, detail, at)`, by kind.
pub fn all(conn: &Connection) -> rusqlite::Result<Vec<(String, String, String)>> {
    conn.prepare("SELECT kind, detail, at FROM notices ORDER BY kind")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_notice_of_each_kind_is_kept() {
        let conn = Connection::open_in_memory().expect("memory db");
        conn.execute_batch(SCHEMA).expect("table");
        note(&conn, "restored", "first").expect("note");
        note(&conn, "peer restored", "p").expect("note");
        note(&conn, "restored", "second").expect("note");
        let kept: Vec<(String, String)> = all(&conn)
            .expect("notices")
            .into_iter()
            .map(|(k, d, _)| (k, d))
            .collect();
        assert_eq!(
            kept,
            [
                ("peer restored".into(), "p".into()),
                ("restored".into(), "second".into())
            ]
        );
    }
}
