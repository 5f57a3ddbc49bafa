"""sqlite-utils `transform(rename=…)` on a tracked table, as a device's app
migration: `sqlite_utils_rename.py DB EXTENSION SIDE`.

The transform renames `collections.description` to `summary` by a rebuild
(create `collections_new_…`, copy with `SELECT "description"` into
`"summary"`, drop, rename), not `RENAME COLUMN`. On side `a` it then edits
`summary` of `c2`. Prints "renamed"; the Rust test checks that the peer,
renaming later the same way, keeps that edit.
"""

import sys

import sqlite_utils

from common import load_sdsync

DB, EXT, SIDE = sys.argv[1], sys.argv[2], sys.argv[3]

db = sqlite_utils.Database(DB)
load_sdsync(db.conn, EXT)
db["collections"].transform(rename={"description": "summary"})
if SIDE == "a":
    db["collections"].update(
        db.execute("SELECT id FROM collections WHERE uuid = 'c2'").fetchone()[0],
        {"summary": "s3"},
    )
print("renamed")
