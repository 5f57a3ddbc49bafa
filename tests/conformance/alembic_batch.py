"""Alembic 1.20's batch mode migrates a tracked table as an Alembic
migration on SQLite does: `alembic_batch.py DB EXTENSION SIDE`.

`op.batch_alter_table(..., recreate="always")` is the "move and copy" rebuild
SQLite's ALTER cannot do in place: create `_alembic_tmp_collections`, copy
every row, drop `collections` (its capture triggers go with it), rename the
copy. Two such migrations run on `collections` (shared), each followed by
writes through SQLAlchemy Core (insert, update, delete):

- add the column `emoji` and change `name` to VARCHAR(200);
- rename `description` to `summary` and make it VARCHAR(500): in batch mode
  the rename is the copy step's `SELECT … collections.description` into
  `summary`, not `RENAME COLUMN`.

`collection_entries` references `collections` with ON DELETE CASCADE, and
the collection migrated has a member. The first migration is tried as it
stands with `foreign_keys` on (the extension turns it on): dropping the old
table would run the cascade and delete the membership on every device, so
sdsync refuses it and nothing changes. Then, as Alembic documents for SQLite
batch mode, foreign keys are switched off around each migration.

Prints "migrated"; the Rust test checks on the peer that every write syncs
and that both devices end identical once both migrated.
"""

import sys

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import (Column, MetaData, String, Table, Text, create_engine, delete, event,
                        insert, update)
from sqlalchemy.exc import OperationalError

from common import load_sdsync

DB, EXT, SIDE = sys.argv[1], sys.argv[2], sys.argv[3]

engine = create_engine(f"sqlite:///{DB}")


event.listen(engine, "connect", lambda dbapi_conn, _record: load_sdsync(dbapi_conn, EXT))


def collections(conn):
    """The table as it stands now (reflected, as an app's models would follow it)."""
    return Table("collections", MetaData(), autoload_with=conn)


def batch(conn, change):
    """`change(batch)` inside a batch that rebuilds the table."""
    with conn.begin():
        op = Operations(MigrationContext.configure(conn))
        with op.batch_alter_table("collections", recreate="always") as b:
            change(b)


def migrate(change):
    """One migration with foreign keys off around it."""
    with engine.connect() as conn:
        # Outside a transaction (SQLite ignores the pragma inside one); the
        # commit ends only SQLAlchemy's autobegun scope.
        conn.exec_driver_sql("PRAGMA foreign_keys = OFF")
        conn.commit()
        batch(conn, change)
        conn.exec_driver_sql("PRAGMA foreign_keys = ON")
        conn.commit()


with engine.begin() as conn:
    conn.execute(insert(collections(conn)).values(uuid=f"{SIDE}-before", name=f"{SIDE} before",
                                                  description="d0"))
    conn.exec_driver_sql(f"INSERT INTO entries(uuid, name) VALUES ('{SIDE}-e', 'e')")
    conn.exec_driver_sql(
        "INSERT INTO collection_entries(uuid, collection_id, entry_id) "
        f"SELECT '{SIDE}-member', c.id, e.id FROM collections c, entries e "
        f"WHERE c.uuid = '{SIDE}-before' AND e.uuid = '{SIDE}-e'")


def first(b):
    b.add_column(Column("emoji", Text, nullable=True))
    b.alter_column("name", type_=String(200))


with engine.connect() as conn:
    try:
        batch(conn, first)
        sys.exit("the rebuild with foreign keys on was not refused")
    except OperationalError as e:
        if "sdsync: DROP TABLE collections would delete" not in str(e):
            raise
    # pysqlite's default transaction handling runs DDL outside the
    # transaction, so the rollback leaves the new table Alembic created; what
    # Alembic says to do after a failed batch migration.
    conn.exec_driver_sql("DROP TABLE _alembic_tmp_collections")
    conn.commit()
migrate(first)
with engine.begin() as conn:
    t = collections(conn)
    conn.execute(insert(t).values(uuid=f"{SIDE}-added", name=f"{SIDE} added", emoji="🎉"))
    conn.execute(insert(t).values(uuid=f"{SIDE}-gone", name=f"{SIDE} gone"))
    conn.execute(update(t).where(t.c.uuid == f"{SIDE}-before").values(description="d1"))
migrate(lambda b: b.alter_column("description", new_column_name="summary", type_=String(500)))
with engine.begin() as conn:
    t = collections(conn)
    conn.execute(update(t).where(t.c.uuid == f"{SIDE}-added").values(summary="s2"))
    # Written after the rename: the peer, renaming later, holds "d1" there.
    conn.execute(update(t).where(t.c.uuid == f"{SIDE}-before").values(emoji="✓", summary="s3"))
    conn.execute(delete(t).where(t.c.uuid == f"{SIDE}-gone"))
print("migrated")
