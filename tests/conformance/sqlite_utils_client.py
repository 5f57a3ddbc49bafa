"""sqlite-utils (library and CLI) plays the conformance scenario.

Library: insert/insert_all (bulk), upsert repeated (INSERT ... ON CONFLICT DO
UPDATE), insert(replace=True) (INSERT OR REPLACE, with sqlite-utils' default
PRAGMA recursive_triggers=on), insert(ignore=True), atomic() with a rolled-back
savepoint, update, delete, delete_where. CLI (`--load-extension`): `insert --csv`
of CSV files with empty cells, `upsert` repeated, a query.
"""

import contextlib
import csv
import json
import os
import subprocess
import sys

import sqlite_utils

from common import accepted_or_refused, args, check, refused

DB, EXT, SIDE, PHASE = args()
CLI = os.path.join(os.path.dirname(sys.executable), "sqlite-utils")

db = sqlite_utils.Database(DB)
db.conn.enable_load_extension(True)
db.conn.load_extension(EXT)
db.conn.enable_load_extension(False)


def one(sql, params=()):
    return db.execute(sql, params).fetchone()[0]


def v5(ns, name):
    return one("SELECT sdsync_uuid_v5(?, ?)", [ns, name])


def new_uuid():
    return one("SELECT sdsync_uuid()")


def row(table, where, params):
    rows = list(db[table].rows_where(where, params))
    check(f"{table} where {where} {params}", len(rows), 1)
    return rows[0]


def cli(*argv, stdin=None, may_refuse=False):
    out = subprocess.run(
        [CLI, *argv, "--load-extension", EXT], input=stdin, capture_output=True, text=True
    )
    if out.returncode != 0 and not may_refuse:
        raise AssertionError(f"sqlite-utils {argv}: {out.stderr}")
    return out


@contextlib.contextmanager
def immediate():
    """atomic() under BEGIN IMMEDIATE. sqlite-utils reads the table's schema before
    it writes, so a plain atomic() (BEGIN, deferred) holds a read snapshot first;
    once another writer (the syncer) commits after it, SQLite refuses to upgrade
    it to a write ("database is locked", with no busy wait)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        with db.atomic():  # a savepoint inside the transaction
            yield
    except BaseException:
        db.rollback()
        raise
    db.commit()


VACATION = v5("tag", "Vacation")


def a1():
    photos = db["locations"].insert({"uuid": new_uuid(), "name": "A photos", "path": "/photos"}).last_pk
    dcim = db["entries"].insert(
        {"uuid": new_uuid(), "location_id": photos, "name": "DCIM", "kind": "directory"}
    ).last_pk
    db["entries"].insert_all(
        (
            {
                "uuid": new_uuid(),
                "location_id": photos,
                "parent_id": dcim,
                "name": f"IMG_{i:04}.jpg",
                "extension": "jpg",
                "size": i * 100,
            }
            for i in range(1, 41)
        ),
        batch_size=7,
    )
    old = db["locations"].insert({"uuid": new_uuid(), "name": "A old"}).last_pk
    db["entries"].insert_all(
        [{"uuid": new_uuid(), "location_id": old, "name": f"old_{i}"} for i in range(1, 6)]
    )
    for color in ("red", "green", "blue"):
        db["tags"].upsert({"uuid": VACATION, "canonical_name": "Vacation", "color": color}, pk="uuid")
    work = v5("tag", "Work")
    db["tags"].insert({"uuid": work, "canonical_name": "Work", "color": "grey"})
    db["tags"].insert({"uuid": work, "canonical_name": "Work", "color": "black"}, ignore=True)
    check("Work after INSERT OR IGNORE", row("tags", "uuid = ?", [work])["color"], "grey")
    with immediate():
        db["tags"].insert({"uuid": v5("tag", "Kept"), "canonical_name": "Kept"})
        try:
            with db.atomic():  # a savepoint
                db["tags"].insert({"uuid": v5("tag", "Ghost"), "canonical_name": "Ghost"})
                raise KeyError("roll the savepoint back")
        except KeyError:
            pass
    check("Ghost", db["tags"].count_where("canonical_name = 'Ghost'"), 0)
    check("Kept", db["tags"].count_where("canonical_name = 'Kept'"), 1)
    best = v5("collection", "Best of")
    db["collections"].insert({"uuid": best, "name": "Best of"})
    best_id = row("collections", "uuid = ?", [best])["id"]
    db["collection_entries"].insert_all(
        {
            "uuid": v5("collection_entry", f"{best}/{e['uuid']}"),
            "collection_id": best_id,
            "entry_id": e["id"],
        }
        for e in db["entries"].rows_where("name < 'IMG_0011' AND name LIKE 'IMG_%'")
    )
    db["entries"].delete_where("name = ?", ["IMG_0040.jpg"])
    # INSERT OR REPLACE of own rows: a shared tag and an owned audit row.
    replaced = v5("tag", "Replaced")
    for color in ("white", "black"):
        db["tags"].insert({"uuid": replaced, "canonical_name": "Replaced", "color": color}, replace=True)
    audit = new_uuid()
    for details in ("first", "second"):
        db["audit_log"].insert({"uuid": audit, "action": "import", "details": details}, replace=True)
    # The CLI: CSV files with empty cells, into a shared and an owned table.
    csv_loc = db["locations"].insert({"uuid": new_uuid(), "name": "A csv"}).last_pk
    with open("tags.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uuid", "canonical_name", "color", "icon", "description"])
        for name, color in (("CSV one", "red"), ("CSV two", ""), ("CSV three", "")):
            w.writerow([v5("tag", name), name, color, "", ""])
    cli("insert", DB, "tags", "tags.csv", "--csv")
    with open("files.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uuid", "location_id", "name", "extension", "size", "inode", "modified_at"])
        w.writerow([new_uuid(), csv_loc, "notes.txt", "txt", "12", "", ""])
        w.writerow([new_uuid(), csv_loc, "empty-size.bin", "", "", "", ""])
    out = cli("insert", DB, "entries", "files.csv", "--csv", may_refuse=True)
    accepted_or_refused(
        "insert --csv with empty INTEGER cells", out.returncode == 0, out.stderr,
        lambda: db["entries"].count_where("location_id = ?", [csv_loc]),
    )
    for color in ("cyan", "magenta", "yellow"):
        cli(
            "upsert", DB, "tags", "-", "--pk", "uuid",
            stdin=json.dumps({"uuid": v5("tag", "CLI"), "canonical_name": "CLI", "color": color}),
        )
    for details in ("cli first", "cli second"):
        cli(
            "insert", DB, "audit_log", "-", "--replace",
            stdin=json.dumps({"uuid": audit, "action": "cli import", "details": details}),
        )
    check("audit after insert --replace", row("audit_log", "uuid = ?", [audit])["details"], "cli second")
    cli(DB, "UPDATE tags SET description = 'from the CLI' WHERE canonical_name = 'Work'")


def b1():
    music = db["locations"].insert({"uuid": new_uuid(), "name": "B music", "path": "/music"}).last_pk
    db["entries"].insert_all(
        {"uuid": new_uuid(), "location_id": music, "name": f"track_{i:02}.flac", "size": i}
        for i in range(1, 11)
    )
    db["tags"].upsert({"uuid": VACATION, "canonical_name": "Vacation", "icon": "sun"}, pk="uuid")
    db["tags"].upsert({"uuid": VACATION, "canonical_name": "Vacation", "icon": "palm"}, pk="uuid")
    db["tags"].insert({"uuid": v5("tag", "B only"), "canonical_name": "B only"})


def a2():
    for color in ("orange", "purple"):
        db["tags"].upsert({"uuid": VACATION, "color": color}, pk="uuid")
    music = row("locations", "name = ?", ["B music"])

    def rename_in_a_transaction():
        with immediate():
            db["tags"].insert({"uuid": v5("tag", "Rolled back"), "canonical_name": "Rolled back"})
            db["locations"].update(music["id"], {"name": "hijacked"})

    refused("update of B's location", rename_in_a_transaction)
    check("Rolled back", db["tags"].count_where("canonical_name = 'Rolled back'"), 0)
    refused(
        "insert --replace of B's location",
        lambda: db["locations"].insert({"uuid": music["uuid"], "name": "hijacked"}, replace=True),
    )
    refused("delete of B's location", lambda: db["locations"].delete(music["id"]))
    check("B music", row("locations", "uuid = ?", [music["uuid"]])["name"], "B music")
    with immediate():
        for e in list(db["entries"].rows_where("name LIKE 'IMG_%'")):
            db["entries"].update(e["id"], {"size": e["size"] + 1000})
    db["locations"].delete(row("locations", "name = ?", ["A old"])["id"])
    check("A old entries", db["entries"].count_where("name LIKE 'old_%'"), 0)


def b2():
    db["tags"].update(row("tags", "uuid = ?", [VACATION])["id"], {"icon": "beach"})
    img = row("entries", "name = ?", ["IMG_0001.jpg"])
    meta = v5("user_metadata", img["uuid"])
    db["user_metadata"].insert({"uuid": meta, "entry_id": img["id"], "favorite": 1, "notes": "from B"})
    db["user_metadata_tags"].insert(
        {
            "uuid": v5("user_metadata_tag", f"{meta}/{VACATION}"),
            "user_metadata_id": row("user_metadata", "uuid = ?", [meta])["id"],
            "tag_id": row("tags", "uuid = ?", [VACATION])["id"],
        }
    )
    best = row("collections", "name = ?", ["Best of"])
    img11 = row("entries", "name = ?", ["IMG_0011.jpg"])
    db["collection_entries"].upsert(
        {
            "uuid": v5("collection_entry", f"{best['uuid']}/{img11['uuid']}"),
            "collection_id": best["id"],
            "entry_id": img11["id"],
        },
        pk="uuid",
    )
    img2 = row("entries", "name = ?", ["IMG_0002.jpg"])
    refused("update of A's entry", lambda: db["entries"].update(img2["id"], {"name": "hijacked"}))
    db["tags"].delete_where("canonical_name = ?", ["B only"])


{("a", 1): a1, ("b", 1): b1, ("a", 2): a2, ("b", 2): b2}[(SIDE, PHASE)]()
db.close()
