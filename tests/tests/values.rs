//! Values arrive exactly as written (issue 7, defect 4): every SQLite value in
//! every kind of column, through the SQL contract, the syncer's Library API and
//! its wire encoding, and real syncers over QUIC; BLOB uuids sync like TEXT ones;
//! a row too large to sync is refused when it is written.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use sdsync_syncer::daemon::{Background, Directory};
use sdsync_syncer::library::{Library, Pk};
use sdsync_syncer::net::identity::Identity;
use sdsync_syncer::net::tls::Pins;
use sdsync_syncer::proto::message::{Envelope, Payload, decode, encode};
use sdsync_syncer::proto::store::SqlStore;
use sdsync_tests::{Lib, copy_all, extension_path, temp_dir, wait_for};

/// A column of each affinity, an untyped one, and a NOT NULL REAL; a table
/// keyed by a BLOB uuid as Spacedrive's `pub_id`.
const SCHEMA: &str = "
CREATE TABLE vals(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, i INTEGER, r REAL, t TEXT,
  b BLOB, n NUMERIC, u, nn REAL NOT NULL DEFAULT 0);
SELECT sdsync_track('vals', 'shared');
CREATE TABLE objects(id INTEGER PRIMARY KEY, pub_id BLOB NOT NULL UNIQUE, name TEXT, payload BLOB);
SELECT sdsync_track('objects', 'shared', '{\"uuid_column\": \"pub_id\"}');
CREATE TABLE file_paths(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE,
  object_id INTEGER REFERENCES objects(id), object_pub BLOB REFERENCES objects(pub_id));
SELECT sdsync_track('file_paths', 'shared');
";

/// Row name and SQL expression: each is written into every column of `vals`.
const VALUES: &[(&str, &str)] = &[
    ("imax", "9223372036854775807"),
    ("imin", "-9223372036854775807 - 1"),
    ("sum", "0.1 + 0.2"),
    ("negzero", "-0.0"),
    ("inf", "1e999"),
    ("neginf", "-1e999"),
    ("subnormal", "4.9406564584124654e-324"),
    ("subnormal_max", "2.2250738585072009e-308"),
    ("real_max", "1.7976931348623157e308"),
    ("whole_real", "2.0"),
    ("nan", "(1e999 - 1e999)"),
    ("bad_utf8", "CAST(x'ff00fe' AS TEXT)"),
    ("nul", "'a' || char(0) || 'b'"),
    ("controls", "char(1, 9, 10, 13, 27, 127)"),
    ("emoji", "'😀 é \"q\" \\ end'"),
    ("empty", "''"),
    ("null", "NULL"),
    ("blob_empty", "x''"),
    ("blob", "x'00ff10'"),
    ("numeric_text", "'12'"),
    ("padded_number", "' 1e5 '"),
    ("huge_number_text", "'9223372036854775808'"),
    ("word", "'big'"),
];

/// Writes every value of [`VALUES`], a 20 MiB blob, and BLOB-keyed rows.
fn write_values(lib: &Lib) {
    for (name, expr) in VALUES {
        lib.exec(&format!(
            "INSERT INTO vals(uuid, i, r, t, b, n, u, nn) VALUES ('{name}', {expr}, {expr}, {expr}, {expr}, {expr}, {expr}, coalesce({expr}, 0))"
        ));
    }
    lib.exec(
        "INSERT INTO vals(uuid, b) VALUES ('big', randomblob(20 * 1024 * 1024));
         UPDATE vals SET u = -1e999, t = CAST(x'c3' AS TEXT) WHERE uuid = 'sum';
         INSERT INTO objects(pub_id, name, payload) VALUES (x'0123456789abcdef0123456789abcdef', 'first', x'00');
         INSERT INTO objects(pub_id, name, payload) VALUES (x'00', 'zero byte id', 1e999);
         INSERT INTO objects(pub_id, name) VALUES (randomblob(16), 'random');
         INSERT INTO objects(pub_id, name) VALUES (42, 'integer id');
         INSERT INTO vals(uuid, t) VALUES (CAST(x'ff' AS TEXT), 'a uuid that is not UTF-8');
         UPDATE objects SET name = 'renamed' WHERE pub_id = x'00';
         INSERT INTO file_paths(uuid, object_id, object_pub)
           SELECT 'path of ' || name, id, pub_id FROM objects;
         INSERT INTO objects(pub_id, name) VALUES (x'ffff', 'doomed');
         DELETE FROM objects WHERE pub_id = x'ffff';",
    );
}

/// Every row of the synced tables as exact text: type and bytes of each value
/// (REALs by their bit pattern; large blobs by length and hash).
fn exact(conn: &Connection) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (table, sql) in [
        ("vals", "SELECT * FROM vals ORDER BY uuid"),
        ("objects", "SELECT * FROM objects ORDER BY pub_id"),
        (
            "file_paths",
            "SELECT f.id, f.uuid, o.pub_id, f.object_pub FROM file_paths f \
             LEFT JOIN objects o ON o.id = f.object_id ORDER BY f.uuid",
        ),
    ] {
        let mut stmt = conn.prepare(sql).expect("prepare");
        let n = stmt.column_count();
        let mut rows = stmt.query([]).expect("query");
        let mut lines = Vec::new();
        while let Some(row) = rows.next().expect("row") {
            // Column 0 is the local id, which differs per device.
            let cells: Vec<String> = (1..n)
                .map(|i| cell(row.get_ref(i).expect("value")))
                .collect();
            lines.push(cells.join(" | "));
        }
        out.insert(table.to_string(), lines);
    }
    out
}

fn cell(v: ValueRef) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    match v {
        ValueRef::Null => "null".into(),
        ValueRef::Integer(i) => format!("int {i}"),
        ValueRef::Real(r) => format!("real {r:e} {:016x}", r.to_bits()),
        ValueRef::Text(t) => format!("text {}", hex(t)),
        ValueRef::Blob(b) if b.len() > 4096 => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            b.hash(&mut h);
            format!("blob len {} hash {:016x}", b.len(), h.finish())
        }
        ValueRef::Blob(b) => format!("blob {}", hex(b)),
    }
}

fn setup(dir: &Path, name: &str) -> Lib {
    let lib = Lib::create(&dir.join(format!("{name}.db")));
    lib.exec(SCHEMA);
    lib
}

/// What the writer stored, checked value by value (so the comparison with the
/// peer is a comparison with what was meant).
fn check_stored(lib: &Lib) {
    let one = |sql: &str| lib.text(sql);
    assert_eq!(
        one(
            "SELECT typeof(r) || ' ' || typeof(nn) || ' ' || (r = 1e999) FROM vals WHERE uuid = 'inf'"
        ),
        "real real 1"
    );
    assert_eq!(
        one("SELECT typeof(i) || typeof(r) || typeof(nn) FROM vals WHERE uuid = 'nan'"),
        "nullnullreal",
        "SQLite stores NaN as NULL"
    );
    assert_eq!(
        one("SELECT typeof(t) || ' ' || hex(t) || ' ' || hex(u) FROM vals WHERE uuid = 'bad_utf8'"),
        "text FF00FE FF00FE"
    );
    assert_eq!(
        one("SELECT typeof(i) || ' ' || quote(i) FROM vals WHERE uuid = 'empty'"),
        "text ''",
        "an empty string in an INTEGER column is stored as text"
    );
    assert_eq!(one("SELECT hex(t) FROM vals WHERE uuid = 'nul'"), "610062");
    assert_eq!(
        lib.int("SELECT length(b) FROM vals WHERE uuid = 'big'"),
        20 << 20
    );
    assert_eq!(lib.int("SELECT i FROM vals WHERE uuid = 'imin'"), i64::MIN);
    assert_eq!(
        lib.int(
            "SELECT count(*) FROM file_paths f JOIN objects o ON o.id = f.object_id AND o.pub_id = f.object_pub \
             WHERE f.uuid = 'path of ' || o.name"
        ),
        4,
        "references to BLOB-keyed rows, by local id and by pub_id"
    );
}

#[test]
fn every_value_round_trips_exactly_through_the_sql_contract() {
    let dir = temp_dir("values-sql");
    let (a, b) = (setup(&dir, "a"), setup(&dir, "b"));
    write_values(&a);
    check_stored(&a);
    // The documented JSON forms of the special values.
    let json = |row: &str, col: &str| {
        a.text(&format!(
            "SELECT json_extract(data, '$.{col}') FROM sdsync_changes WHERE pk = '{row}' AND json_extract(data, '$.{col}') IS NOT NULL"
        ))
    };
    assert_eq!(json("inf", "r"), r#"{"$real":"inf"}"#);
    assert_eq!(json("neginf", "nn"), r#"{"$real":"-inf"}"#);
    assert_eq!(json("bad_utf8", "t"), r#"{"$text":"ff00fe"}"#);
    assert_eq!(json("nul", "t"), r#"{"$text":"610062"}"#);
    assert_eq!(json("blob", "b"), r#"{"$blob":"00ff10"}"#);
    // Each change's data is canonical JSON: keys in name order, numbers in
    // their shortest exact form, as `serde_json` prints a map of the values
    // (the reader writes the text directly, without building the map).
    let mut stmt = a
        .conn
        .prepare("SELECT data FROM sdsync_changes WHERE data IS NOT NULL")
        .unwrap();
    let datas: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(datas.len() > VALUES.len(), "{}", datas.len());
    for data in datas {
        let parsed: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(parsed.to_string(), data);
    }

    copy_all(&a, &b);
    check_stored(&b);
    assert_eq!(exact(&a.conn), exact(&b.conn));
    assert_eq!(a.digest(), b.digest());
    assert_eq!(b.count("objects"), 4);
    // And back: b serves what it received exactly as a served it.
    let c = setup(&dir, "c");
    copy_all(&b, &c);
    assert_eq!(exact(&a.conn), exact(&c.conn));
    // Its files hold tens of MiB; nothing to inspect once it passed.
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn blob_uuids_and_extreme_values_go_through_the_library_api_and_the_wire() {
    let dir = temp_dir("values-library");
    let (a, b) = (setup(&dir, "a"), setup(&dir, "b"));
    write_values(&a);
    let ext = extension_path();
    let (la, lb) = (
        Library::open(&a.path, &ext).expect("open a"),
        Library::open(&b.path, &ext).expect("open b"),
    );
    let changes = la
        .changes_since(&la.device().expect("device"), 0)
        .expect("changes of a");
    let blob_keys = changes
        .iter()
        .filter(|c| c.tbl == "objects" && matches!(c.pk, Pk::Blob(_)))
        .count();
    assert_eq!(
        blob_keys, 5,
        "objects: three rows, an update and a tombstone, blob-keyed"
    );
    assert!(changes.iter().any(|c| c.pk == Pk::Integer(42)));
    assert!(changes.iter().any(|c| c.pk == Pk::RawText(vec![0xff])));
    // Through the wire encoding, as a page carries them.
    let env = Envelope::new(
        "lib",
        "a",
        Payload::Page {
            origin: la.device().expect("device"),
            after: 0,
            complete_to: 0,
            changes,
            more: false,
            restores: Vec::new(),
            clock: (0, 0),
        },
    );
    let bytes = encode(&env);
    assert!(
        bytes.len() > 40 << 20,
        "the 20 MiB blob travels as 40 MiB of hex"
    );
    let Payload::Page { changes, .. } = decode(&bytes).expect("decodes").payload else {
        panic!("not a page");
    };
    lb.apply(&changes, &la.watermarks().expect("marks"))
        .expect("apply");
    assert_eq!(exact(&a.conn), exact(&b.conn));
    assert_eq!(la.digest().expect("a"), lb.digest().expect("b"));
    // Its files hold tens of MiB; nothing to inspect once it passed.
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_row_too_large_to_sync_is_refused_when_written() {
    let dir = temp_dir("values-limit");
    let a = setup(&dir, "a");
    let limit = sdsync_core::limits::MAX_ROW_BYTES;
    let err = a.fails(&format!(
        "INSERT INTO vals(uuid, t, b) VALUES ('huge', 'x', zeroblob({limit}))"
    ));
    for part in [
        "row huge of table vals",
        "column b",
        "limit of a synced row",
    ] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }
    assert_eq!(a.count("vals"), 0);
    // Growing a row past the limit by an update is refused the same way, and
    // the row keeps its old value.
    a.exec("INSERT INTO objects(pub_id, name, payload) VALUES (x'01', 'small', zeroblob(10))");
    let err = a.fails(&format!(
        "UPDATE objects SET payload = zeroblob({limit}), name = 'grown' WHERE pub_id = x'01'"
    ));
    assert!(
        err.contains("row x'01' of table objects") && err.contains("column payload"),
        "{err}"
    );
    assert_eq!(a.text("SELECT name FROM objects"), "small");
    // A REAL is no uuid: sdsync_changes refuses it as a pk, so capture does.
    let err = a.fails("INSERT INTO objects(pub_id, name) VALUES (1.5, 'float id')");
    assert!(
        err.contains("table objects: the uuid column pub_id") && err.contains("REAL 1.5"),
        "{err}"
    );
    // Just below the limit is accepted.
    a.exec(&format!(
        "UPDATE objects SET payload = zeroblob({limit} - 100) WHERE pub_id = x'01'"
    ));
    // Its files hold tens of MiB; nothing to inspect once it passed.
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn text_uuids_that_look_like_numbers_keep_their_text_through_deletes() {
    let dir = temp_dir("values-numeric-uuids");
    let (a, b) = (setup(&dir, "a"), setup(&dir, "b"));
    a.exec(
        "INSERT INTO vals(uuid, t) VALUES ('00123', 'x'), ('1e5', 'x'), ('7', 'x'), (' 8', 'x'), ('9.0', 'x');
         INSERT INTO objects(pub_id, name) VALUES (42, 'integer id'), ('0042', 'text id');",
    );
    copy_all(&a, &b);
    assert_eq!(b.count("vals"), 5);
    a.exec("DELETE FROM vals; DELETE FROM objects;");
    assert_eq!(
        a.text("SELECT group_concat(quote(pk), ' ') FROM (SELECT pk FROM sdsync_changes WHERE op = 'delete' ORDER BY seq)"),
        "'00123' '1e5' '7' ' 8' '9.0' 42 '0042'"
    );
    copy_all(&a, &b);
    assert_eq!((b.count("vals"), b.count("objects")), (0, 0));
    assert_eq!(exact(&a.conn), exact(&b.conn));
}

/// A value of any SQLite type, bound as is (TEXT from arbitrary bytes, REAL
/// from arbitrary bits: NaN is stored as NULL by SQLite on both sides).
#[derive(Clone, Debug)]
enum Any {
    Null,
    Int(i64),
    Real(u64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl rusqlite::ToSql for Any {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(match self {
            Any::Null => ValueRef::Null,
            Any::Int(i) => ValueRef::Integer(*i),
            Any::Real(bits) => ValueRef::Real(f64::from_bits(*bits)),
            Any::Text(t) => ValueRef::Text(t),
            Any::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn any_value() -> impl Strategy<Value = Any> {
    let specials = [
        0.0f64,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE,
        5e-324,
        0.1 + 0.2,
    ];
    prop_oneof![
        Just(Any::Null),
        any::<i64>().prop_map(Any::Int),
        prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0)].prop_map(Any::Int),
        any::<u64>().prop_map(Any::Real),
        proptest::sample::select(specials.to_vec()).prop_map(|f| Any::Real(f.to_bits())),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Any::Text),
        "[ 0-9.e+-]{0,8}".prop_map(|s| Any::Text(s.into_bytes())),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Any::Blob),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever values are written into whatever columns (and then partly
    /// overwritten), a copy through `sdsync_changes` holds exactly the same.
    #[test]
    fn arbitrary_values_round_trip_exactly(
        rows in proptest::collection::vec(proptest::collection::vec(any_value(), 6), 1..12),
        updates in proptest::collection::vec((0usize..12, 0usize..6, any_value()), 0..12),
    ) {
        let dir = temp_dir("values-prop");
        let (a, b) = (setup(&dir, "a"), setup(&dir, "b"));
        let cols = ["i", "r", "t", "b", "n", "u"];
        for (k, row) in rows.iter().enumerate() {
            a.conn
                .execute(
                    "INSERT INTO vals(uuid, i, r, t, b, n, u) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    rusqlite::params![format!("r{k}"), row[0], row[1], row[2], row[3], row[4], row[5]],
                )
                .expect("insert");
            a.conn
                .execute(
                    "INSERT INTO objects(pub_id, name, payload) VALUES (?1, 'x', ?2)",
                    rusqlite::params![Any::Blob(vec![k as u8, 0xff]), row[0]],
                )
                .expect("insert object");
        }
        for (k, col, value) in &updates {
            a.conn
                .execute(
                    &format!("UPDATE vals SET {} = ?1 WHERE uuid = ?2", cols[*col]),
                    rusqlite::params![value, format!("r{}", k % rows.len())],
                )
                .expect("update");
        }
        copy_all(&a, &b);
        prop_assert_eq!(exact(&a.conn), exact(&b.conn));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// One device with a running syncer's parts: its library and its folder.
struct Device {
    app: Lib,
    id: String,
    home: PathBuf,
}

impl Device {
    fn new(dir: &Path, name: &str, pins: &Pins) -> Self {
        let home = dir.join(name);
        std::fs::create_dir_all(&home).expect("device folder");
        let app = Lib::create(&home.join("database.db"));
        app.exec(SCHEMA);
        let id = app.device();
        pins.pin(
            &id,
            Identity::load_or_create(&home, &id).expect("identity").cert,
        );
        Self { app, id, home }
    }

    fn run(&self, pins: &Pins, directory: &Directory) -> Background {
        let lib = Library::open(&self.app.path, &extension_path()).expect("open library");
        let sync = Connection::open(self.home.join("sync.db")).expect("sync.db");
        let store = SqlStore::new(lib, sync).expect("store");
        let me = Identity::load_or_create(&self.home, &self.id).expect("identity");
        Background::start(store, "values-library", me, pins, directory).expect("daemon")
    }
}

#[test]
fn extreme_values_a_20_mib_blob_and_blob_uuids_sync_through_real_syncers() {
    let dir = temp_dir("values-quic");
    let (pins, directory) = (Pins::default(), Directory::default());
    let [a, b] = ["a", "b"].map(|n| Device::new(&dir, n, &pins));
    write_values(&a.app);
    b.app.exec(
        "INSERT INTO objects(pub_id, name) VALUES (x'bb', 'from b');
         INSERT INTO vals(uuid, r) VALUES ('from b', -1e999);",
    );
    let (run_a, run_b) = (a.run(&pins, &directory), b.run(&pins, &directory));
    let same = || exact(&a.app.conn) == exact(&b.app.conn);
    wait_for("a and b to hold the same exact values", 60, same);
    check_stored(&b.app);
    assert_eq!(b.app.count("objects"), 5);
    // Edits of blob-keyed rows on both sides, while connected.
    b.app
        .exec("UPDATE objects SET name = 'renamed on b' WHERE pub_id = x'0123456789abcdef0123456789abcdef'");
    a.app.exec("DELETE FROM objects WHERE pub_id = x'bb'");
    wait_for("the blob-keyed edits", 60, same);
    assert_eq!(
        a.app
            .text("SELECT group_concat(name, ',') FROM (SELECT name FROM objects ORDER BY name)"),
        "integer id,random,renamed,renamed on b"
    );
    assert_eq!(a.app.digest(), b.app.digest());
    drop((run_a, run_b));
    // Its files hold tens of MiB; nothing to inspect once it passed.
    let _ = std::fs::remove_dir_all(&dir);
}
