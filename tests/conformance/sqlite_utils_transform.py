"""sqlite-utils `transform` (a table rebuild, as Django's AlterField does) on a
tracked table, then an ordinary insert: `transform.py DB EXTENSION`.

Either the rebuild is refused with sdsync's error (exit 0, prints "refused"), or
it succeeds (prints "transformed") and the following insert must still sync;
the Rust test checks that on the peer.
"""

import sys

import sqlite_utils

from common import load_sdsync

db = sqlite_utils.Database(sys.argv[1])
load_sdsync(db.conn, sys.argv[2])
try:
    db["collections"].transform(types={"description": str}, column_order=["id", "uuid", "description"])
    print("transformed")
except Exception as e:
    if "sdsync" not in str(e):
        raise
    print(f"refused: {e}")
db["collections"].insert({"uuid": "after-transform", "name": "After transform"})
