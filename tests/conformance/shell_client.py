"""The sqlite3 shell (Debian's package) plays the conformance scenario.

A driver only: every write is SQL the `sqlite3` shell runs (`-bail`, the
extension loaded with `.load`, no `.timeout`: the shell's default busy handling).
Exercised: INSERT ... SELECT over recursive CTEs, upserts repeated, INSERT OR
IGNORE / REPLACE, UPDATE OR IGNORE / FAIL / ABORT / ROLLBACK / REPLACE repeated,
RETURNING, SAVEPOINT rolled back, `.import --csv` of files with empty cells (into
a temp table, then INSERT ... SELECT, as the shell cannot import into a table
with an INTEGER PRIMARY KEY it would leave empty), deletes with cascades, and
refused writes whose transaction must not survive.
"""

import csv
import subprocess

from common import REFUSAL, accepted_or_refused, args, check

DB, EXT, SIDE, PHASE = args()


def run(sql):
    return subprocess.run(
        ["sqlite3", "-bail", DB], input=f".load {EXT}\n{sql}\n", capture_output=True, text=True
    )


def shell(sql, fails=False):
    """Runs SQL in the shell; returns stdout, or stderr when it must fail."""
    out = run(sql)
    if fails:
        if out.returncode == 0 or REFUSAL not in out.stderr or "sdsync" not in out.stderr:
            raise AssertionError(f"must be refused by sdsync: {sql}\nstdout {out.stdout}\nstderr {out.stderr}")
        print(f"refused as expected: {out.stderr.strip()}")
        return out.stderr
    if out.returncode != 0 or out.stderr:
        raise AssertionError(f"sqlite3 failed ({out.returncode}): {sql}\n{out.stderr}")
    return out.stdout


def one(sql):
    return shell(sql).strip()


TAG = "sdsync_uuid_v5('tag', {})"
UPSERT = """INSERT INTO tags(uuid, canonical_name, {col}) VALUES (sdsync_uuid_v5('tag', 'Vacation'), 'Vacation', '{v}')
  ON CONFLICT(uuid) DO UPDATE SET {col} = excluded.{col};"""


def a1():
    shell("""
INSERT INTO locations(uuid, name, path) VALUES (sdsync_uuid(), 'A photos', '/photos');
INSERT INTO entries(uuid, location_id, name, kind)
  SELECT sdsync_uuid(), id, 'DCIM', 'directory' FROM locations WHERE name = 'A photos';
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40)
INSERT INTO entries(uuid, location_id, parent_id, name, extension, size)
  SELECT sdsync_uuid(), l.id, d.id, printf('IMG_%04d.jpg', i), 'jpg', i * 100
  FROM n, locations l, entries d WHERE l.name = 'A photos' AND d.name = 'DCIM';
COMMIT;
INSERT INTO locations(uuid, name) VALUES (sdsync_uuid(), 'A old');
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5)
INSERT INTO entries(uuid, location_id, name) SELECT sdsync_uuid(), l.id, 'old_' || i FROM n, locations l WHERE l.name = 'A old';
""" + "".join(UPSERT.format(col="color", v=c) for c in ("red", "green", "blue")) + """
INSERT OR IGNORE INTO tags(uuid, canonical_name, color) VALUES (sdsync_uuid_v5('tag', 'Work'), 'Work', 'grey');
INSERT OR IGNORE INTO tags(uuid, canonical_name, color) VALUES (sdsync_uuid_v5('tag', 'Work'), 'Work', 'black');
BEGIN;
INSERT INTO tags(uuid, canonical_name) VALUES (sdsync_uuid_v5('tag', 'Kept'), 'Kept');
SAVEPOINT ghost;
INSERT INTO tags(uuid, canonical_name) VALUES (sdsync_uuid_v5('tag', 'Ghost'), 'Ghost');
ROLLBACK TO ghost;
RELEASE ghost;
COMMIT;
INSERT INTO collections(uuid, name) VALUES (sdsync_uuid_v5('collection', 'Best of'), 'Best of');
INSERT INTO collection_entries(uuid, collection_id, entry_id)
  SELECT sdsync_uuid_v5('collection_entry', c.uuid || '/' || e.uuid), c.id, e.id
  FROM collections c, entries e WHERE c.name = 'Best of' AND e.name LIKE 'IMG_%' AND e.name < 'IMG_0011';
DELETE FROM entries WHERE name = 'IMG_0040.jpg' RETURNING name;
REPLACE INTO tags(uuid, canonical_name, color) VALUES (sdsync_uuid_v5('tag', 'Replaced'), 'Replaced', 'white');
INSERT OR REPLACE INTO tags(uuid, canonical_name, color) VALUES (sdsync_uuid_v5('tag', 'Replaced'), 'Replaced', 'black');
INSERT INTO audit_log(uuid, action) VALUES ('audit-shell-a', 'import');
INSERT OR REPLACE INTO audit_log(uuid, action, details) VALUES ('audit-shell-a', 'import', 'replaced');
""")
    for clause in ("OR IGNORE", "OR FAIL", "OR ABORT", "OR ROLLBACK", "OR REPLACE", ""):
        for n in (1, 2):
            shell(f"""
UPDATE {clause} tags SET description = '{clause} {n}' WHERE canonical_name = 'Work';
UPDATE {clause} locations SET path = '/old/{clause} {n}' WHERE name = 'A old';""")
    check("Work", one("SELECT color || ':' || description FROM tags WHERE canonical_name = 'Work'"), "grey: 2")
    check("Ghost", one("SELECT count(*) FROM tags WHERE canonical_name = 'Ghost'"), "0")
    # CSV files with empty cells, through .import into temp tables.
    with open("tags.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "color", "icon", "description"])
        w.writerows([["CSV one", "red", "", ""], ["CSV two", "", "", ""], ["CSV three", "", "star", ""]])
    with open("files.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "extension", "size", "inode", "modified_at"])
        w.writerows([["notes.txt", "txt", "12", "", ""], ["empty-size.bin", "", "", "", ""]])
    shell("""
.import --csv --schema temp tags.csv tags_csv
INSERT INTO tags(uuid, canonical_name, color, icon, description)
  SELECT sdsync_uuid_v5('tag', name), name, color, icon, description FROM temp.tags_csv;
INSERT INTO locations(uuid, name) VALUES (sdsync_uuid(), 'A csv');
""")
    out = run("""
.import --csv --schema temp files.csv files_csv
INSERT INTO entries(uuid, location_id, name, extension, size, inode, modified_at)
  SELECT sdsync_uuid(), (SELECT id FROM locations WHERE name = 'A csv'), name, extension, size, inode, modified_at
  FROM temp.files_csv;
""")
    accepted_or_refused(
        ".import --csv with empty INTEGER cells", out.returncode == 0 and not out.stderr, out.stderr,
        lambda: int(one("SELECT count(*) FROM entries e JOIN locations l ON l.id = e.location_id WHERE l.name = 'A csv'")),
    )


def b1():
    shell("""
INSERT INTO locations(uuid, name, path) VALUES (sdsync_uuid(), 'B music', '/music');
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10)
INSERT INTO entries(uuid, location_id, name, size)
  SELECT sdsync_uuid(), l.id, printf('track_%02d.flac', i), i FROM n, locations l WHERE l.name = 'B music';
""" + "".join(UPSERT.format(col="icon", v=v) for v in ("sun", "palm")) + """
INSERT INTO tags(uuid, canonical_name) VALUES (sdsync_uuid_v5('tag', 'B only'), 'B only');
""")


def a2():
    shell("".join(UPSERT.format(col="color", v=c) for c in ("orange", "purple")))
    shell("""
BEGIN;
INSERT INTO tags(uuid, canonical_name) VALUES (sdsync_uuid_v5('tag', 'Rolled back'), 'Rolled back');
UPDATE locations SET name = 'hijacked' WHERE name = 'B music';
COMMIT;""", fails=True)
    check("Rolled back", one("SELECT count(*) FROM tags WHERE canonical_name = 'Rolled back'"), "0")
    music = "(SELECT uuid FROM locations WHERE name = 'B music')"
    for sql in (
        f"INSERT OR REPLACE INTO locations(uuid, name) VALUES ({music}, 'hijacked');",
        f"REPLACE INTO locations(uuid, name) VALUES ({music}, 'hijacked');",
        f"INSERT INTO locations(uuid, name) VALUES ({music}, 'x') ON CONFLICT(uuid) DO UPDATE SET name = 'hijacked';",
        "UPDATE OR IGNORE locations SET name = 'hijacked' WHERE name = 'B music';",
        "UPDATE OR FAIL locations SET path = 'hijacked' WHERE name = 'B music';",
        "DELETE FROM locations WHERE name = 'B music';",
    ):
        shell(sql, fails=True)
    check("B music", one("SELECT count(*) FROM locations WHERE name = 'B music'"), "1")
    check("B music tracks", one("SELECT count(*) FROM entries WHERE name LIKE 'track_%'"), "10")
    shell("""
UPDATE OR FAIL entries SET size = size + 500 WHERE name LIKE 'IMG_%';
UPDATE entries SET size = size + 500 WHERE name LIKE 'IMG_%';
DELETE FROM locations WHERE name = 'A old';""")
    check("A old entries", one("SELECT count(*) FROM entries WHERE name LIKE 'old_%'"), "0")


def b2():
    shell("""
UPDATE OR ROLLBACK tags SET icon = 'beach' WHERE uuid = sdsync_uuid_v5('tag', 'Vacation');
INSERT INTO user_metadata(uuid, entry_id, favorite, notes)
  SELECT sdsync_uuid_v5('user_metadata', uuid), id, 1, 'from B' FROM entries WHERE name = 'IMG_0001.jpg';
INSERT INTO user_metadata_tags(uuid, user_metadata_id, tag_id)
  SELECT sdsync_uuid_v5('user_metadata_tag', m.uuid || '/' || t.uuid), m.id, t.id
  FROM user_metadata m JOIN entries e ON e.id = m.entry_id, tags t
  WHERE e.name = 'IMG_0001.jpg' AND t.canonical_name = 'Vacation';
INSERT INTO collection_entries(uuid, collection_id, entry_id)
  SELECT sdsync_uuid_v5('collection_entry', c.uuid || '/' || e.uuid), c.id, e.id
  FROM collections c, entries e WHERE c.name = 'Best of' AND e.name = 'IMG_0011.jpg'
  ON CONFLICT(uuid) DO NOTHING;
DELETE FROM tags WHERE canonical_name = 'B only';""")
    shell("UPDATE entries SET name = 'hijacked' WHERE name = 'IMG_0002.jpg';", fails=True)


{("a", 1): a1, ("b", 1): b1, ("a", 2): a2, ("b", 2): b2}[(SIDE, PHASE)]()
