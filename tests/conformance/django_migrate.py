"""Django 5.2's schema editor migrates a tracked table as its migrations do:
`django_migrate.py DB EXTENSION SIDE`.

The operations a migration's AddField, AlterField and RenameField run on
SQLite, on `collections` (shared), each followed by a write through the ORM:

- AddField of a nullable column: `ALTER TABLE … ADD COLUMN`;
- AlterField of `name` (TEXT NOT NULL DEFAULT '' to VARCHAR(200)): Django's
  12-step remake (create `new__collections`, copy, drop, rename), which moves
  the altered column to the end;
- RenameField of `description` to `summary`: `ALTER TABLE … RENAME COLUMN`.

Prints "migrated"; the Rust test checks on the peer that every write syncs
and that both devices end identical once both migrated.
"""

import sys

from django_setup import configure

DB, EXT, SIDE = sys.argv[1], sys.argv[2], sys.argv[3]

configure(DB, EXT)

from django.db import connection, models  # noqa: E402


def model(name, fields):
    """A model class for `collections` as it stands at one step."""
    attrs = {"__module__": __name__,
             "Meta": type("Meta", (), {"db_table": "collections", "app_label": "library"})}
    attrs.update(fields)
    return type(name, (models.Model,), attrs)


def base():
    return {"id": models.AutoField(primary_key=True),
            "uuid": models.CharField(max_length=64, unique=True),
            "created_at": models.TextField(null=True),
            "updated_at": models.TextField(null=True)}


def field(name, f, owner):
    f.set_attributes_from_name(name)
    f.model = owner
    return f


V1 = model("V1", {**base(), "name": models.TextField(default=""),
                  "description": models.TextField(null=True)})
V2 = model("V2", {**base(), "name": models.TextField(default=""),
                  "description": models.TextField(null=True),
                  "emoji": models.TextField(null=True)})
V3 = model("V3", {**base(), "name": models.CharField(max_length=200, default=""),
                  "description": models.TextField(null=True),
                  "emoji": models.TextField(null=True)})
V4 = model("V4", {**base(), "name": models.CharField(max_length=200, default=""),
                  "summary": models.TextField(null=True),
                  "emoji": models.TextField(null=True)})

V1.objects.create(uuid=f"{SIDE}-before", name=f"{SIDE} before", description="d0")
with connection.schema_editor() as editor:
    editor.add_field(V1, field("emoji", models.TextField(null=True), V1))
V2.objects.create(uuid=f"{SIDE}-added", name=f"{SIDE} added", emoji="🎉")
with connection.schema_editor() as editor:
    editor.alter_field(V2, field("name", models.TextField(default=""), V2),
                       field("name", models.CharField(max_length=200, default=""), V2))
V3.objects.create(uuid=f"{SIDE}-altered", name=f"{SIDE} altered", description="d1")
V3.objects.filter(uuid=f"{SIDE}-before").update(description="d2")
with connection.schema_editor() as editor:
    editor.alter_field(V3, field("description", models.TextField(null=True), V3),
                       field("summary", models.TextField(null=True), V3))
V4.objects.create(uuid=f"{SIDE}-renamed", name=f"{SIDE} renamed", summary="s1")
V4.objects.filter(uuid=f"{SIDE}-added").update(summary="s2")
# Written after the rename: the peer, renaming later, holds "d2" there.
V4.objects.filter(uuid=f"{SIDE}-before").update(summary="s3")
V4.objects.filter(uuid=f"{SIDE}-altered").delete()
print("migrated")
