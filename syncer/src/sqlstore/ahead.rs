//! Parents first: the changes a page's rows reference that their origin wrote
//! *later* (a location whose totals an indexer updated after its entries, a
//! directory whose size changed after its files), served at the front of the
//! page so that the receiver never parks a child for a parent the sender holds.
//!
//! ```ignore
//! // In `SqlStore::slice`, after the page's own changes are read:
//! let first = links.parents(&tx, origin, &changes, budget)?;
//! changes.splice(0..0, first);
//! ```
//!
//! Pages are served in order of each row's *latest* version, so without this a
//! parent updated after its children arrives after all of them and every child
//! waits in the receiver's parking (issue 9: a million-entry backfill spent
//! three quarters of its apply time parking and waking). Only parents of the
//! page's own origin are brought forward: a page carries one origin, and the
//! receiver pulls other origins in their own streams.
//!
//! What this adds is a copy: the same change comes again in its place in the
//! stream and applies there as a no-op (same HLC). The page's last change stays
//! the last in-order one, so where the next page starts and what the page
//! vouches for do not change.

use std::collections::HashSet;

use rusqlite::{Connection, params};
use sdsync_core::schema::{TableSpec, quote_ident};

use crate::library::{Change, change};
use crate::proto::message::change_size;

/// How many levels of parents are followed (a deeper chain parks as before).
const MAX_DEPTH: usize = 16;

/// The references between tracked tables, as read at one schema version.
pub struct Links {
    /// `PRAGMA schema_version` they were read at: tracking or re-tracking a
    /// table re-creates its triggers, which moves it.
    pub schema: i64,
    links: Vec<Link>,
}

impl Links {
    /// Every reference between the tracked tables of `conn`, whose schema
    /// version is `schema`.
    pub fn load(conn: &Connection, schema: i64) -> rusqlite::Result<Self> {
        Ok(Self {
            schema,
            links: links(&super::specs(conn)?),
        })
    }

    /// The later changes of `origin` that `changes` (in-order, one origin)
    /// refer to, grandparents before parents, at most about `budget` bytes of
    /// them.
    pub fn parents(
        &self,
        conn: &Connection,
        origin: &str,
        changes: &[Change],
        budget: usize,
    ) -> rusqlite::Result<Vec<Change>> {
        let (Some(first), Some(last)) = (changes.first(), changes.last()) else {
            return Ok(vec![]);
        };
        let mut tables: HashSet<&str> = changes.iter().map(|c| c.tbl.as_str()).collect();
        if !self.links.iter().any(|l| tables.contains(l.child.as_str())) {
            return Ok(vec![]);
        }
        let Some(origin_id) = origin_id(conn, origin)? else {
            return Ok(vec![]);
        };
        // Level by level: the parents of the page's range, then theirs.
        let mut levels: Vec<Vec<i64>> = Vec::new();
        let mut seen: HashSet<i64> = HashSet::new();
        let mut frontier = Scope::Range(first.seq - 1, last.seq);
        while levels.len() < MAX_DEPTH {
            let mut found: Vec<(i64, &str)> = Vec::new();
            for link in self
                .links
                .iter()
                .filter(|l| tables.contains(l.child.as_str()))
            {
                for seq in link.later_parents(conn, origin_id, &frontier)? {
                    found.push((seq, &link.parent));
                }
            }
            found.sort_unstable();
            found.dedup_by_key(|f| f.0);
            let fresh: Vec<(i64, &str)> = found.into_iter().filter(|f| seen.insert(f.0)).collect();
            if fresh.is_empty() {
                break;
            }
            tables = fresh.iter().map(|f| f.1).collect();
            let seqs: Vec<i64> = fresh.iter().map(|f| f.0).collect();
            frontier = Scope::Seqs(seqs.clone());
            levels.push(seqs);
        }
        let mut out = Vec::new();
        let mut size = 0;
        for seq in levels.into_iter().rev().flatten() {
            if size > budget {
                break;
            }
            if let Some(c) = change_at(conn, origin, seq)? {
                size += change_size(&c);
                out.push(c);
            }
        }
        Ok(out)
    }
}

/// Which changes a step looks at: the page's own range `(after, to]`, or the
/// parents found one level up.
enum Scope {
    Range(i64, i64),
    Seqs(Vec<i64>),
}

/// One reference column of a tracked table, as the SQL that finds the later
/// versions of the rows it points to.
struct Link {
    /// For a range of sequences, and for a list of them (two statements, so
    /// that each uses the index on `(origin, seq)`).
    range_sql: String,
    list_sql: String,
    /// The referencing table's name and id, the referenced table's name.
    child: String,
    child_id: i64,
    parent: String,
    bit: i64,
}

impl Link {
    /// Sequences of `origin`'s versions of referenced rows written after the
    /// referencing change, for the changes of this table in `scope`.
    fn later_parents(
        &self,
        conn: &Connection,
        origin: i64,
        scope: &Scope,
    ) -> rusqlite::Result<Vec<i64>> {
        let get = |r: &rusqlite::Row<'_>| r.get(0);
        match scope {
            Scope::Range(after, to) => conn
                .prepare_cached(&self.range_sql)?
                .query_map(params![origin, self.child_id, self.bit, after, to], get)?
                .collect(),
            Scope::Seqs(seqs) => conn
                .prepare_cached(&self.list_sql)?
                .query_map(
                    params![
                        origin,
                        self.child_id,
                        self.bit,
                        serde_json::json!(seqs).to_string()
                    ],
                    get,
                )?
                .collect(),
        }
    }
}

/// Every reference between tracked tables.
fn links(specs: &[TableSpec]) -> Vec<Link> {
    let mut out = Vec::new();
    for child in specs {
        for (i, column) in child.columns.iter().enumerate() {
            let Some(reference) = &column.reference else {
                continue;
            };
            let Some(parent) = specs.iter().find(|s| s.name == reference.table) else {
                continue;
            };
            let sql = |scope| link_sql(child, &column.name, parent, &reference.column, scope);
            out.push(Link {
                range_sql: sql("cv.seq > ?4 AND cv.seq <= ?5"),
                list_sql: sql("cv.seq IN (SELECT value FROM json_each(?4))"),
                child: child.name.clone(),
                child_id: child.id,
                parent: parent.name.clone(),
                bit: 1 << (i + 1),
            });
        }
    }
    out
}

/// `?1` origin id, `?2` the child table's id, `?3` the column's mask bit;
/// `scope` names the child changes by sequence with `?4` (and `?5`). The `+`
/// keeps the planner from finding the parent's versions through the origin
/// index (every later version of the origin, per child: quadratic) instead of
/// the row's primary key.
fn link_sql(
    child: &TableSpec,
    column: &str,
    parent: &TableSpec,
    target: &str,
    scope: &str,
) -> String {
    format!(
        "SELECT DISTINCT pv.seq FROM sdsync_versions cv \
         JOIN {ct} c ON c.{cid} = cv.rid \
         JOIN {pt} p ON p.{target} = c.{column} \
         JOIN sdsync_versions pv ON pv.tbl = {pid} AND pv.rid = p.{pidc} \
         WHERE cv.origin = ?1 AND {scope} AND cv.tbl = ?2 AND (cv.mask & ?3) != 0 \
           AND +pv.origin = ?1 AND +pv.seq > cv.seq",
        ct = quote_ident(&child.name),
        cid = quote_ident(&child.local_id),
        pt = quote_ident(&parent.name),
        target = quote_ident(target),
        column = quote_ident(column),
        pid = parent.id,
        pidc = quote_ident(&parent.local_id),
    )
}

fn origin_id(conn: &Connection, origin: &str) -> rusqlite::Result<Option<i64>> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached("SELECT id FROM sdsync_origins WHERE uuid = ?1")?
        .query_row([origin], |r| r.get(0))
        .optional()
}

/// The change `origin` issued as `seq`, as the stream serves it.
fn change_at(conn: &Connection, origin: &str, seq: i64) -> rusqlite::Result<Option<Change>> {
    let mut stmt = conn.prepare_cached(
        "SELECT tbl, pk, op, data, origin, seq, hlc, creates FROM sdsync_changes \
         WHERE origin = ?1 AND seq > ?2 LIMIT 1",
    )?;
    let found = stmt.query_map(params![origin, seq - 1], change)?;
    for c in found {
        let c = c?;
        if c.seq == seq {
            return Ok(Some(c));
        }
    }
    Ok(None)
}
