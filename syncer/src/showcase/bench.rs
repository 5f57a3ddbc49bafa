//! `sdsync bench`: what capture and apply cost, as ratios against plain SQLite
//! measured in the same run on the same rows.
//!
//! ```no_run
//! let ext = sdsync_syncer::library::extension_path(None).unwrap();
//! println!("{}", sdsync_syncer::bench::run("/tmp/b".as_ref(), &ext, 100_000, 3).unwrap());
//! ```
//!
//! Both databases have the default library schema (uuid unique indexes, several
//! columns, WAL); only the sdsync one is tracked. Rows come from a staged temp
//! table, so each timed statement is one `INSERT … SELECT` or `UPDATE` in its own
//! transaction. Apply reads every change of the tracked database and inserts it
//! into a fresh tracked database in one transaction; its baseline is inserting
//! the same rows into a fresh plain database with prepared statements.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use sdsync_syncer::library::{LIBRARY_SQL, Library, LibraryError, apply_in, read_changes};
use sdsync_syncer::sqlstore;

/// One measured line of the report.
struct Line {
    what: &'static str,
    plain: f64,
    sdsync: f64,
    unit: &'static str,
    must: &'static str,
    aim: &'static str,
}

/// Runs every measurement `runs` times and returns the report (Markdown).
pub fn run(dir: &Path, ext: &Path, rows: usize, runs: usize) -> Result<String, LibraryError> {
    let dir = &super::scratch::fresh(dir)?;
    let mut samples: Vec<Vec<Line>> = Vec::new();
    for run in 0..runs {
        samples.push(once(&dir.join(format!("run{run}")), ext, rows)?);
    }
    let mut out = format!(
        "sdsync bench: {rows} rows, median of {runs} runs, SQLite {} (rusqlite bundled), WAL\n\n\
         | measure | plain SQLite | sdsync | ratio | must | aim |\n|---|---|---|---|---|---|\n",
        rusqlite::version()
    );
    for i in 0..samples[0].len() {
        let mut plain: Vec<f64> = samples.iter().map(|s| s[i].plain).collect();
        let mut ours: Vec<f64> = samples.iter().map(|s| s[i].sdsync).collect();
        let l = &samples[0][i];
        let (p, o) = (median(&mut plain), median(&mut ours));
        out += &format!(
            "| {} | {} {} | {} {} | ×{:.2} | {} | {} |\n",
            l.what,
            fmt(p),
            l.unit,
            fmt(o),
            l.unit,
            if l.unit == "rows/s" { p / o } else { o / p },
            l.must,
            l.aim
        );
    }
    out += "\nratio: sdsync cost / plain cost (for rows/s: plain rate / sdsync rate), so lower is better.\n";
    Ok(out)
}

fn once(dir: &Path, ext: &Path, rows: usize) -> Result<Vec<Line>, LibraryError> {
    std::fs::create_dir_all(dir).map_err(|source| LibraryError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let plain = Library::open(&dir.join("plain.db"), ext)?;
    plain.exec(&untracked_schema())?;
    let ours = Library::create(&dir.join("sdsync.db"), ext)?;
    let stage = format!(
        "CREATE TEMP TABLE src AS WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {rows})
         SELECT i, sdsync_uuid() AS uuid, 'IMG_' || i || '.jpg' AS name, i * 7 AS size FROM c;
         INSERT INTO locations(uuid, name) VALUES ('bench-location', 'Bench');"
    );
    plain.exec(&stage)?;
    ours.exec(&stage)?;
    let both = |sql: &str| -> Result<(f64, f64), LibraryError> {
        Ok((time(&plain, sql)?, time(&ours, sql)?))
    };
    let insert_owned = both(
        "INSERT INTO entries(uuid, name, kind, size, location_id) SELECT uuid, name, 'file', size, 1 FROM src",
    )?;
    let insert_shared = both(
        "INSERT INTO tags(uuid, canonical_name, display_name, color) SELECT uuid, name, name, 'red' FROM src",
    )?;
    let update_owned = both("UPDATE entries SET size = size + 1")?;
    let update_shared = both("UPDATE tags SET color = 'blue'")?;
    let size = (file_size(&plain)?, file_size(&ours)?);

    let start = Instant::now();
    let changes = read_changes(
        &ours.conn,
        "SELECT tbl, pk, op, data, origin, seq, hlc, creates FROM sdsync_changes",
        [],
    )
    .map_err(|source| LibraryError::Sql {
        path: ours.path.clone(),
        source,
    })?;
    let read_secs = secs(start.elapsed());
    // Apply runs on a connection set up as the syncer's, and the raw copy it
    // is compared with gets the same settings (cache size, memory journal).
    let fresh = Library::create(&dir.join("apply.db"), ext)?;
    tuned(&fresh)?;
    let apply_secs = timed(&fresh, |c| apply_in(c, &changes))?;
    let copy = Library::open(&dir.join("copy.db"), ext)?;
    tuned(&copy)?;
    copy.exec(&untracked_schema())?;
    let copy_secs = raw_copy(&plain, &copy)?;
    let n = changes.len() as f64;
    let copied_rows = (2 * rows + 1) as f64;
    // Issue 9's capture measure: a lean table (id, uuid, three columns), so
    // the ratio shows what capture adds per row rather than what wide rows and
    // several indexes cost in both databases.
    let lean = "CREATE TABLE lean(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, a INTEGER, b TEXT, c REAL);";
    plain.exec(lean)?;
    ours.exec(&format!("{lean} SELECT sdsync_track('lean', 'owned');"))?;
    let insert_lean =
        both("INSERT INTO lean(uuid, a, b, c) SELECT uuid, i, name, size * 0.5 FROM src")?;
    let update_lean = both("UPDATE lean SET a = a + 1")?;

    Ok(vec![
        line("insert owned (entries)", insert_owned, "≤ ×3.0", "×2.0"),
        line("insert shared (tags)", insert_shared, "≤ ×4.0", "×3.0"),
        line("bulk UPDATE one column, owned", update_owned, "≤ ×6", "×4"),
        line(
            "bulk UPDATE one column, shared",
            update_shared,
            "≤ ×6",
            "×4",
        ),
        Line {
            what: "on-disk size after the above",
            plain: size.0,
            sdsync: size.1,
            unit: "MiB",
            must: "-",
            aim: "≤ ×1.5",
        },
        rate(
            "read all changes (SELECT sdsync_changes)",
            copied_rows / copy_secs,
            n / read_secs,
            "-",
            "-",
        ),
        rate(
            "apply all changes into a fresh database",
            copied_rows / copy_secs,
            n / apply_secs,
            "≥ 50,000 rows/s",
            "≥ 100,000 rows/s",
        ),
        line("insert, lean owned table", insert_lean, "-", "-"),
        line(
            "bulk UPDATE one column, lean owned table",
            update_lean,
            "≤ ×5",
            "×4",
        ),
    ])
}

fn line(
    what: &'static str,
    (plain, sdsync): (f64, f64),
    must: &'static str,
    aim: &'static str,
) -> Line {
    Line {
        what,
        plain: plain * 1000.0,
        sdsync: sdsync * 1000.0,
        unit: "ms",
        must,
        aim,
    }
}

fn rate(
    what: &'static str,
    plain: f64,
    sdsync: f64,
    must: &'static str,
    aim: &'static str,
) -> Line {
    Line {
        what,
        plain,
        sdsync,
        unit: "rows/s",
        must,
        aim,
    }
}

/// The library schema without the `sdsync_track` calls: the same tables, untracked.
fn untracked_schema() -> String {
    LIBRARY_SQL
        .lines()
        .filter(|l| !l.starts_with("SELECT sdsync_track"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn tuned(lib: &Library) -> Result<(), LibraryError> {
    sqlstore::tune(&lib.conn).map_err(|source| LibraryError::Sql {
        path: lib.path.clone(),
        source,
    })
}

fn time(lib: &Library, sql: &str) -> Result<f64, LibraryError> {
    timed(lib, |c| c.execute_batch(sql))
}

/// Seconds taken by `f` inside one committed transaction.
fn timed(
    lib: &Library,
    f: impl FnOnce(&Connection) -> rusqlite::Result<()>,
) -> Result<f64, LibraryError> {
    let err = |source| LibraryError::Sql {
        path: lib.path.clone(),
        source,
    };
    let start = Instant::now();
    let tx = lib.conn.unchecked_transaction().map_err(err)?;
    f(&tx).map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(secs(start.elapsed()))
}

/// The baseline for apply: the same rows read from one plain database and inserted
/// into another with prepared statements.
fn raw_copy(from: &Library, to: &Library) -> Result<f64, LibraryError> {
    let err = |source| LibraryError::Sql {
        path: from.path.clone(),
        source,
    };
    let start = Instant::now();
    type Entry = (String, String, String, i64);
    let entries: Vec<Entry> = from
        .conn
        .prepare("SELECT uuid, name, kind, size FROM entries")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .map_err(err)?;
    let tags: Vec<(String, String, String)> = from
        .conn
        .prepare("SELECT uuid, canonical_name, color FROM tags")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(err)?;
    let insert = |c: &Connection| -> rusqlite::Result<()> {
        c.execute(
            "INSERT INTO locations(uuid, name) VALUES ('bench-location', 'Bench')",
            [],
        )?;
        let mut e = c.prepare(
            "INSERT INTO entries(uuid, name, kind, size, location_id) VALUES (?1, ?2, ?3, ?4, 1)",
        )?;
        for (u, n, k, s) in &entries {
            e.execute(params![u, n, k, s])?;
        }
        let mut t =
            c.prepare("INSERT INTO tags(uuid, canonical_name, color) VALUES (?1, ?2, ?3)")?;
        for (u, n, col) in &tags {
            t.execute(params![u, n, col])?;
        }
        Ok(())
    };
    timed(to, insert)?;
    Ok(secs(start.elapsed()))
}

fn file_size(lib: &Library) -> Result<f64, LibraryError> {
    let err = |source| LibraryError::Sql {
        path: lib.path.clone(),
        source,
    };
    lib.conn
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .map_err(err)?;
    let bytes: i64 = lib
        .conn
        .query_row(
            "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    Ok(bytes as f64 / (1024.0 * 1024.0))
}

/// Seconds, never zero (rates divide by it).
fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn fmt(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.0}", v)
    } else {
        format!("{v:.1}")
    }
}
