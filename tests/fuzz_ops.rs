//! Sequences of SQL against the extension, decoded from arbitrary bytes, with an
//! oracle: the coverage-guided fuzz target `sql_ops` (`fuzz/`) and the corpus
//! replay test (`tests/tests/fuzz_corpus.rs`) both run [`run`].
//!
//! ```no_run
//! sdsync_tests::fuzz_ops::run(b"\x00\x01\x02\x03", None).unwrap();
//! ```
//!
//! Device A writes in every form SQLite accepts (plain, `OR` clauses, upserts,
//! REPLACE, RETURNING) inside transactions and savepoints that commit or roll
//! back, and applies changes from a peer P at any point, rolled back or not. A
//! statement may fail (a constraint, a refusal); nothing may panic. At the end
//! every database fed the same captured changes — A, P, and two fresh copies
//! filled in opposite orders — must hold identical tables.

use std::path::Path;

use rusqlite::Connection;

use crate::{Change, apply_each, read_changes};

/// A small schema: a shared table, an owned parent and an owned child with a
/// cascading foreign key.
const SCHEMA: &str = "
CREATE TABLE tags(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, name TEXT, color TEXT, n INTEGER);
CREATE TABLE locations(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, name TEXT NOT NULL DEFAULT '', size INTEGER NOT NULL DEFAULT 0);
CREATE TABLE entries(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE,
  location_id INTEGER REFERENCES locations(id) ON DELETE CASCADE, name TEXT, size INTEGER);
SELECT sdsync_track('tags', 'shared');
SELECT sdsync_track('locations', 'owned');
SELECT sdsync_track('entries', 'owned');
";

/// Keeps the extension loaded for the rest of the process. Each run opens and
/// closes connections, and the last connection to close unloads the library;
/// a coverage-instrumented build must stay mapped, since libFuzzer keeps
/// pointers to its counters.
pub fn pin_extension(ext: &Path) -> Result<(), String> {
    let c = Connection::open_in_memory().map_err(|e| e.to_string())?;
    // SAFETY (of the calls): loading our own extension, built from this tree.
    unsafe {
        c.load_extension_enable().map_err(|e| e.to_string())?;
        c.load_extension(ext, None::<&str>)
            .map_err(|e| e.to_string())?;
    }
    std::mem::forget(c);
    Ok(())
}

/// Runs the operations `bytes` encode; `Err` names the broken invariant.
pub fn run(bytes: &[u8], ext: Option<&Path>) -> Result<(), String> {
    let ext = ext.map_or_else(crate::extension_path, Path::to_path_buf);
    let open = || -> Result<Connection, String> {
        let c = Connection::open_in_memory().map_err(|e| e.to_string())?;
        // SAFETY (of the call): loading our own extension, built from this tree.
        unsafe {
            c.load_extension_enable().map_err(|e| e.to_string())?;
            c.load_extension(&ext, None::<&str>)
                .map_err(|e| e.to_string())?;
        }
        c.execute_batch(SCHEMA).map_err(|e| e.to_string())?;
        Ok(c)
    };
    let a = open()?;
    let p = open()?;
    let mut input = Bytes(bytes);
    let mut depth = 0u32;
    while let Some(op) = input.next() {
        match op % 8 {
            0..=3 => {
                let sql = write_sql(&mut input, "a");
                let _ = a.execute_batch(&sql);
            }
            4 => {
                let sql = write_sql(&mut input, "p");
                let _ = p.execute_batch(&sql);
            }
            5 => {
                let _ = apply_each(&a, &all(&p));
            }
            6 => {
                let sql = match (input.next().unwrap_or(0) % 4, depth) {
                    (0, 0) => "BEGIN",
                    (0, _) | (1, _) => "SAVEPOINT s",
                    (2, _) => "ROLLBACK TO s",
                    _ => "RELEASE s",
                };
                if a.execute_batch(sql).is_ok() {
                    match sql {
                        "BEGIN" | "SAVEPOINT s" => depth += 1,
                        "RELEASE s" => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                }
                if a.is_autocommit() {
                    depth = 0;
                }
            }
            _ => {
                let end = if input.next().unwrap_or(0) % 2 == 0 {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                };
                let _ = a.execute_batch(end);
                depth = 0;
            }
        }
    }
    if !a.is_autocommit() {
        a.execute_batch("COMMIT")
            .map_err(|e| format!("final commit: {e}"))?;
    }
    check(&a, &p, open)
}

/// The oracle: A and P exchange everything; two fresh databases take A's
/// changes in opposite orders (one of them twice); all four must agree.
fn check(
    a: &Connection,
    p: &Connection,
    open: impl Fn() -> Result<Connection, String>,
) -> Result<(), String> {
    apply_each(a, &all(p)).map_err(|e| format!("A applies P: {e}"))?;
    apply_each(p, &all(a)).map_err(|e| format!("P applies A: {e}"))?;
    let mut changes = all(a);
    let b = open()?;
    apply_each(&b, &changes).map_err(|e| format!("B applies A: {e}"))?;
    let c = open()?;
    changes.reverse();
    apply_each(&c, &changes).map_err(|e| format!("C applies A reversed: {e}"))?;
    apply_each(&c, &changes).map_err(|e| format!("C applies A again: {e}"))?;
    let want = digest(a);
    for (name, db) in [("P", p), ("B", &b), ("C", &c)] {
        let got = digest(db);
        if got != want {
            return Err(format!(
                "{name} differs from A:\nA: {want:?}\n{name}: {got:?}"
            ));
        }
    }
    Ok(())
}

fn all(db: &Connection) -> Vec<Change> {
    read_changes(
        db,
        "SELECT tbl, pk, op, data, origin, seq, hlc, creates FROM sdsync_changes ORDER BY origin, seq",
    )
}

/// Every table's rows, references as uuids.
fn digest(db: &Connection) -> Vec<String> {
    let sql = "SELECT 't|' || uuid || '|' || quote(name) || '|' || quote(color) || '|' || quote(n) FROM tags
               UNION ALL SELECT 'l|' || uuid || '|' || quote(name) || '|' || quote(size) FROM locations
               UNION ALL SELECT 'e|' || e.uuid || '|' || quote(l.uuid) || '|' || quote(e.name) || '|' || quote(e.size)
                 FROM entries e LEFT JOIN locations l ON l.id = e.location_id
               ORDER BY 1";
    let mut stmt = match db.prepare(sql) {
        Ok(s) => s,
        Err(e) => return vec![format!("digest failed: {e}")],
    };
    let rows = stmt.query_map([], |r| r.get::<_, String>(0));
    match rows {
        Ok(rows) => rows.map(|r| r.unwrap_or_else(|e| e.to_string())).collect(),
        Err(e) => vec![format!("digest failed: {e}")],
    }
}

/// One write on device `dev` (`a` or `p`: owned rows carry the device's prefix,
/// so neither writes the other's).
fn write_sql(input: &mut Bytes, dev: &str) -> String {
    let form = input.next().unwrap_or(0);
    let row = input.next().unwrap_or(0) % 4;
    let val = extreme(input.next().unwrap_or(0));
    let clause = crate::CONFLICT_CLAUSES[usize::from(input.next().unwrap_or(0)) % 6];
    let tag = format!("'t{row}'");
    let loc = format!("'{dev}l{row}'");
    let entry = format!("'{dev}e{row}'");
    let parent = format!(
        "(SELECT id FROM locations WHERE uuid = '{dev}l{}')",
        row % 2
    );
    match form % 14 {
        0 => format!("INSERT {clause}INTO tags(uuid, name, n) VALUES ({tag}, 'n{row}', {val})"),
        1 => format!(
            "INSERT INTO tags(uuid, color, n) VALUES ({tag}, 'c{val}', {val}) \
             ON CONFLICT(uuid) DO UPDATE SET color = excluded.color RETURNING id"
        ),
        2 => format!("UPDATE {clause}tags SET n = {val}, color = 'u' || {val} WHERE uuid = {tag}"),
        3 => format!("UPDATE {clause}tags SET name = name || 'x'"),
        4 => format!("DELETE FROM tags WHERE uuid = {tag} RETURNING uuid"),
        5 => format!("REPLACE INTO tags(uuid, name) VALUES ({tag}, 'r')"),
        6 => {
            format!("INSERT INTO tags(uuid, name) VALUES ({tag}, 'nothing') ON CONFLICT DO NOTHING")
        }
        7 => format!("INSERT {clause}INTO locations(uuid, name, size) VALUES ({loc}, 'l', {val})"),
        8 => format!(
            "INSERT INTO locations(uuid, name) VALUES ({loc}, 'up') \
             ON CONFLICT(uuid) DO UPDATE SET size = size + 1"
        ),
        9 => format!("UPDATE {clause}locations SET size = {val} WHERE uuid = {loc}"),
        10 => format!("DELETE FROM locations WHERE uuid = {loc}"),
        11 => format!(
            "INSERT {clause}INTO entries(uuid, location_id, name, size) VALUES ({entry}, {parent}, 'e', {val})"
        ),
        12 => format!(
            "UPDATE {clause}entries SET size = {val}, location_id = {parent} WHERE uuid = {entry}"
        ),
        _ => format!("DELETE FROM entries WHERE uuid = {entry}"),
    }
}

/// Values at the edges as well as ordinary ones.
fn extreme(b: u8) -> String {
    match b % 8 {
        0 => "9223372036854775807".into(),
        1 => "-9223372036854775808".into(),
        2 => "-0.0".into(),
        3 => "1e308".into(),
        4 => "x'00ff'".into(),
        5 => "'é𝄞'".into(),
        6 => "NULL".into(),
        _ => i64::from(b).to_string(),
    }
}

/// The input, a byte at a time.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }
}
