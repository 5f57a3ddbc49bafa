//! `sdsync sql DIR "…" [--json]`: SQL on a library with the extension
//! loaded, as an app would run it (its writes are captured and sync).
//!
//! ```text
//! $ sdsync sql laptop.sdlibrary "SELECT uuid, name FROM devices"
//! uuid    name
//! 0193…    laptop
//! $ sdsync sql laptop.sdlibrary --json "SELECT count(*) AS n FROM tags"
//! [{"n":3}]
//! ```
//!
//! One statement that returns rows prints them (tab-separated with a header,
//! or a JSON array of objects); several statements, or one that returns no
//! rows, run as a batch and print nothing. BLOBs print as hex (`x'…'`).

use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::types::ValueRef;
use rusqlite::{Batch, Statement};
use serde_json::{Map, Value as Json};

use sdsync_syncer::library::Library;

/// A query's column names and rows.
type Table = (Vec<String>, Vec<Vec<Json>>);

/// Runs `sql` on `lib`; returns what to print.
///
/// Each statement is prepared only once those before it ran, as the `sqlite3`
/// shell does: a batch may create or attach what its later statements use.
/// (Preparing the whole text first, as `Connection::prepare` does to tell one
/// statement from several, refused `CREATE TABLE t …; CREATE TRIGGER … ON t`
/// with "no such table: main.t".)
pub fn run(lib: &Library, sql: &str, json: bool) -> anyhow::Result<String> {
    let mut batch = Batch::new(&lib.conn, sql);
    let Some(mut first) = batch.next()? else {
        return Ok(String::new());
    };
    let table = run_one(&mut first)?;
    drop(first);
    let mut several = false;
    while let Some(mut stmt) = batch.next()? {
        several = true;
        let mut rows = stmt.raw_query();
        while rows.next()?.is_some() {}
    }
    Ok(match table {
        Some(table) if !several => print(table, json),
        _ => String::new(),
    })
}

/// Runs the first statement to its end; a query's rows are returned (and
/// printed if no other statement follows).
fn run_one(stmt: &mut Statement<'_>) -> rusqlite::Result<Option<Table>> {
    let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    if names.is_empty() {
        stmt.raw_execute()?;
        return Ok(None);
    }
    let mut rows = stmt.query([])?;
    let mut out: Vec<Vec<Json>> = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(names.len());
        for i in 0..names.len() {
            values.push(json_value(row.get_ref(i)?));
        }
        out.push(values);
    }
    Ok(Some((names, out)))
}

fn print((names, rows): Table, json: bool) -> String {
    if json {
        let objects: Vec<Json> = rows
            .into_iter()
            .map(|values| Json::Object(names.iter().cloned().zip(values).collect::<Map<_, _>>()))
            .collect();
        format!("{}\n", Json::Array(objects))
    } else {
        let mut text = format!("{}\n", names.join("\t"));
        for values in rows {
            let cells: Vec<String> = values.iter().map(cell).collect();
            text.push_str(&cells.join("\t"));
            text.push('\n');
        }
        text
    }
}

fn json_value(v: ValueRef<'_>) -> Json {
    match v {
        ValueRef::Null => Json::Null,
        ValueRef::Integer(i) => Json::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        ValueRef::Text(t) => Json::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Json::String(format!(
            "x'{}'",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        )),
    }
}

fn cell(v: &Json) -> String {
    match v {
        Json::Null => "NULL".to_string(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}
