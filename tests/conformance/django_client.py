"""Django 5.2's ORM plays the conformance scenario.

Standalone settings; the extension is loaded in the `connection_created` signal;
unmanaged models over sql/library.sql's tables. Exercised: create (INSERT ...
RETURNING), get_or_create and update_or_create (savepoints), bulk_create with
update_conflicts (ON CONFLICT DO UPDATE) and ignore_conflicts (INSERT OR IGNORE),
atomic() blocks rolled back, QuerySet.update, bulk_update, delete with Django's
cascades, and refused writes rolling the atomic block back.
"""

import uuid

from common import args, check, refused
from django_setup import configure

DB, EXT, SIDE, PHASE = args()

configure(DB, EXT)

from django.db import connection, models, transaction  # noqa: E402
from django.db.models import F  # noqa: E402


def new_uuid():
    return str(uuid.uuid4())


class Model(models.Model):
    uuid = models.CharField(max_length=64, unique=True, default=new_uuid)

    class Meta:
        abstract = True
        managed = False
        app_label = "library"


class Location(Model):
    name = models.TextField(default="")
    path = models.TextField(null=True)

    class Meta(Model.Meta):
        db_table = "locations"


class Entry(Model):
    location = models.ForeignKey(Location, models.CASCADE, null=True)
    parent = models.ForeignKey("self", models.CASCADE, null=True)
    name = models.TextField(default="")
    kind = models.TextField(default="file")
    extension = models.TextField(null=True)
    size = models.IntegerField(default=0)

    class Meta(Model.Meta):
        db_table = "entries"


class Tag(Model):
    canonical_name = models.TextField(null=True)
    color = models.TextField(null=True)
    icon = models.TextField(null=True)

    class Meta(Model.Meta):
        db_table = "tags"


class Collection(Model):
    name = models.TextField(default="")

    class Meta(Model.Meta):
        db_table = "collections"


class CollectionEntry(Model):
    collection = models.ForeignKey(Collection, models.CASCADE)
    entry = models.ForeignKey(Entry, models.CASCADE)

    class Meta(Model.Meta):
        db_table = "collection_entries"


class UserMetadata(Model):
    entry = models.ForeignKey(Entry, models.CASCADE, null=True)
    notes = models.TextField(null=True)
    favorite = models.IntegerField(default=0)

    class Meta(Model.Meta):
        db_table = "user_metadata"


class UserMetadataTag(Model):
    user_metadata = models.ForeignKey(UserMetadata, models.CASCADE)
    tag = models.ForeignKey(Tag, models.CASCADE)

    class Meta(Model.Meta):
        db_table = "user_metadata_tags"


def v5(ns, name):
    with connection.cursor() as c:
        c.execute("SELECT sdsync_uuid_v5(%s, %s)", [ns, name])
        return c.fetchone()[0]


VACATION = v5("tag", "Vacation")


class Rollback(Exception):
    pass


def a1():
    photos = Location.objects.create(name="A photos", path="/photos")
    dcim = Entry.objects.create(location=photos, name="DCIM", kind="directory")
    Entry.objects.bulk_create(
        [Entry(location=photos, parent=dcim, name=f"IMG_{i:04}.jpg", extension="jpg", size=i * 100)
         for i in range(1, 41)],
        batch_size=16,
    )
    photos.path = "/pictures"
    photos.save()  # a full UPDATE of an owned row
    old = Location.objects.create(name="A old")
    Entry.objects.bulk_create([Entry(location=old, name=f"old_{i}") for i in range(1, 6)])
    for color in ("red", "green", "blue"):
        Tag.objects.bulk_create(
            [Tag(uuid=VACATION, canonical_name="Vacation", color=color)],
            update_conflicts=True, unique_fields=["uuid"], update_fields=["canonical_name", "color"],
        )
    work = v5("tag", "Work")
    Tag.objects.create(uuid=work, canonical_name="Work", color="grey")
    Tag.objects.bulk_create([Tag(uuid=work, canonical_name="Work", color="black")], ignore_conflicts=True)
    check("Work color", Tag.objects.get(uuid=work).color, "grey")
    tag, created = Tag.objects.get_or_create(uuid=work, defaults={"color": "white"})
    check("get_or_create of Work", (created, tag.color), (False, "grey"))
    _, created = Tag.objects.get_or_create(uuid=v5("tag", "Kept"), defaults={"canonical_name": "Kept"})
    check("get_or_create of Kept", created, True)
    try:
        with transaction.atomic():
            Tag.objects.create(uuid=v5("tag", "Ghost"), canonical_name="Ghost")
            Entry.objects.create(location=photos, name="ghost.txt")
            raise Rollback()
    except Rollback:
        pass
    with transaction.atomic():
        Tag.objects.update_or_create(uuid=v5("tag", "Kept"), defaults={"color": "gold"})
        try:
            with transaction.atomic():  # a savepoint
                Tag.objects.create(uuid=v5("tag", "Ghost"), canonical_name="Ghost")
                raise Rollback()
        except Rollback:
            pass
    check("Ghost", Tag.objects.filter(canonical_name="Ghost").count(), 0)
    check("ghost.txt", Entry.objects.filter(name="ghost.txt").count(), 0)
    check("Kept", Tag.objects.get(canonical_name="Kept").color, "gold")
    best = Collection.objects.create(uuid=v5("collection", "Best of"), name="Best of")
    CollectionEntry.objects.bulk_create(
        CollectionEntry(uuid=v5("collection_entry", f"{best.uuid}/{e.uuid}"), collection=best, entry=e)
        for e in Entry.objects.filter(name__startswith="IMG_", name__lt="IMG_0011")
    )
    Entry.objects.get(name="IMG_0040.jpg").delete()


def b1():
    music = Location.objects.create(name="B music", path="/music")
    Entry.objects.bulk_create([Entry(location=music, name=f"track_{i:02}.flac", size=i) for i in range(1, 11)])
    for icon in ("sun", "palm"):
        Tag.objects.update_or_create(uuid=VACATION, defaults={"canonical_name": "Vacation", "icon": icon})
    b_only = Tag.objects.create(uuid=v5("tag", "B only"), canonical_name="B only")
    b_only.color = "teal"
    b_only.save()  # a full UPDATE: every column, the uuid included (unchanged)


def a2():
    for color in ("orange", "purple"):
        Tag.objects.bulk_create(
            [Tag(uuid=VACATION, color=color)],
            update_conflicts=True, unique_fields=["uuid"], update_fields=["color"],
        )
    music = Location.objects.get(name="B music")

    def rename():
        with transaction.atomic():
            Tag.objects.create(uuid=v5("tag", "Rolled back"), canonical_name="Rolled back")
            Location.objects.filter(pk=music.pk).update(name="hijacked")

    refused("QuerySet.update of B's location", rename)
    check("Rolled back", Tag.objects.filter(canonical_name="Rolled back").count(), 0)
    refused("update_or_create of B's location",
            lambda: Location.objects.update_or_create(uuid=music.uuid, defaults={"name": "hijacked"}))
    refused("delete of B's location (Django cascades)", music.delete)
    check("B music", Location.objects.get(uuid=music.uuid).name, "B music")
    check("B music tracks", Entry.objects.filter(location__uuid=music.uuid).count(), 10)
    imgs = list(Entry.objects.filter(name__startswith="IMG_"))
    for e in imgs:
        e.size += 500
    Entry.objects.bulk_update(imgs, ["size"], batch_size=10)
    Entry.objects.filter(name__startswith="IMG_").update(size=F("size") + 500)
    Location.objects.get(name="A old").delete()
    check("A old entries", Entry.objects.filter(name__startswith="old_").count(), 0)


def b2():
    Tag.objects.filter(uuid=VACATION).update(icon="beach")
    img = Entry.objects.get(name="IMG_0001.jpg")
    meta, _ = UserMetadata.objects.update_or_create(
        uuid=v5("user_metadata", img.uuid), defaults={"entry": img, "favorite": 1, "notes": "from B"})
    UserMetadataTag.objects.get_or_create(
        uuid=v5("user_metadata_tag", f"{meta.uuid}/{VACATION}"),
        defaults={"user_metadata": meta, "tag": Tag.objects.get(uuid=VACATION)})
    best = Collection.objects.get(name="Best of")
    img11 = Entry.objects.get(name="IMG_0011.jpg")
    CollectionEntry.objects.bulk_create(
        [CollectionEntry(uuid=v5("collection_entry", f"{best.uuid}/{img11.uuid}"), collection=best, entry=img11)],
        ignore_conflicts=True,
    )
    img2 = Entry.objects.get(name="IMG_0002.jpg")
    img2.name = "hijacked"
    refused("save() of A's entry", img2.save)
    Tag.objects.filter(canonical_name="B only").delete()


{("a", 1): a1, ("b", 1): b1, ("a", 2): a2, ("b", 2): b2}[(SIDE, PHASE)]()
connection.close()
