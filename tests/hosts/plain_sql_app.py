"""A plain-SQL app in another language: Debian's python3 stdlib sqlite3 writing a
library through libsdsync, the way any third-party tool would.

usage: /usr/bin/python3 plain_sql_app.py EXTENSION DB_A DB_B

It creates two libraries, writes to A with ordinary SQL, copies A's
sdsync_changes into B, and prints one JSON line with what it observed. The Rust
test (tests/tests/hosts.rs) checks the numbers and the digests.
"""
import json
import pathlib
import sqlite3
import sys

ext, path_a, path_b = sys.argv[1:4]
schema = (pathlib.Path(__file__).resolve().parents[2] / "sql" / "library.sql").read_text()


def open_lib(path):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.enable_load_extension(True)
    conn.load_extension(ext)
    conn.enable_load_extension(False)
    conn.executescript(schema)
    return conn


a = open_lib(path_a)
b = open_lib(path_b)

a.execute("BEGIN")
a.execute("INSERT INTO locations(uuid, name, path) VALUES ('py-loc', 'Home', '/home')")
for i in range(50):
    a.execute(
        "INSERT INTO entries(uuid, name, kind, size, location_id) VALUES (?, ?, 'file', ?, (SELECT id FROM locations WHERE uuid = 'py-loc'))",
        (f"py-{i}", f"file{i}.txt", i),
    )
a.execute("INSERT INTO tags(uuid, canonical_name) VALUES (sdsync_uuid_v5('tag', 'Python'), 'Python')")
a.execute("UPDATE tags SET color = 'yellow'")
a.execute("COMMIT")

# A rolled back transaction leaves nothing.
a.execute("BEGIN")
a.execute("INSERT INTO tags(uuid, canonical_name) VALUES ('rolled-back', 'x')")
a.execute("ROLLBACK")

rows = a.execute("SELECT tbl, pk, op, data, origin, seq, hlc, creates FROM sdsync_changes").fetchall()
b.execute("BEGIN")
b.executemany("INSERT INTO sdsync_changes(tbl, pk, op, data, origin, seq, hlc, creates) VALUES (?,?,?,?,?,?,?,?)", rows)
for origin, seq in a.execute("SELECT origin, seq FROM sdsync_watermarks").fetchall():
    b.execute("SELECT sdsync_mark_complete(?, ?)", (origin, seq))
b.execute("COMMIT")

# Fail closed: a connection without the extension cannot write a tracked table.
plain = sqlite3.connect(path_a)
try:
    plain.execute("INSERT INTO tags(uuid) VALUES ('no-ext')")
    plain.commit()
    refused = ""
except sqlite3.OperationalError as e:
    refused = str(e)

print(json.dumps({
    "changes": len(rows),
    "entries_b": b.execute("SELECT count(*) FROM entries").fetchone()[0],
    "tag_b": b.execute("SELECT canonical_name || '/' || color FROM tags").fetchone()[0],
    "max_seq": a.execute("SELECT max(seq) FROM sdsync_changes").fetchone()[0],
    "refused": refused,
}))
