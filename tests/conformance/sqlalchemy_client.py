"""SQLAlchemy 2.x ORM plays the conformance scenario.

The extension is loaded in the engine's "connect" event. Exercised: Session.add
and commit (INSERT ... RETURNING), `sqlite.insert().on_conflict_do_update()`
repeated, `on_conflict_do_nothing()`, nested transactions (SAVEPOINT) rolled
back, ORM bulk UPDATE by primary key and UPDATE ... WHERE, ORM delete with
relationship cascades and database cascades (passive_deletes), `prefix_with("OR
REPLACE")`, and refused writes rolling the session's transaction back.
"""

import uuid as uuid_mod

from sqlalchemy import ForeignKey, create_engine, event, func, select, text, update
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from common import args, check, load_sdsync, refused

DB, EXT, SIDE, PHASE = args()

engine = create_engine(f"sqlite:///{DB}")


event.listen(engine, "connect", lambda dbapi_conn, _record: load_sdsync(dbapi_conn, EXT))


# The default pysqlite transaction handling (BEGIN just before the first write).
# SQLAlchemy's recipe that emits BEGIN at session start makes read-then-write
# transactions, which SQLite refuses (SQLITE_BUSY, no wait) once another writer
# such as the syncer commits in between; BEGIN IMMEDIATE would be needed there.


class Base(DeclarativeBase):
    pass


class Location(Base):
    __tablename__ = "locations"
    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(default=lambda: str(uuid_mod.uuid4()))
    name: Mapped[str] = mapped_column(default="")
    path: Mapped[str | None]
    entries: Mapped[list["Entry"]] = relationship(
        back_populates="location", cascade="all, delete-orphan",
        foreign_keys="Entry.location_id",
    )


class Entry(Base):
    __tablename__ = "entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(default=lambda: str(uuid_mod.uuid4()))
    location_id: Mapped[int | None] = mapped_column(ForeignKey("locations.id", ondelete="CASCADE"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(default="")
    kind: Mapped[str] = mapped_column(default="file")
    extension: Mapped[str | None]
    size: Mapped[int] = mapped_column(default=0)
    location: Mapped[Location] = relationship(back_populates="entries", foreign_keys=[location_id])


class Tag(Base):
    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str]
    canonical_name: Mapped[str | None]
    color: Mapped[str | None]
    icon: Mapped[str | None]
    description: Mapped[str | None]


class Collection(Base):
    __tablename__ = "collections"
    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str]
    name: Mapped[str] = mapped_column(default="")
    members: Mapped[list["CollectionEntry"]] = relationship(passive_deletes=True)


class CollectionEntry(Base):
    __tablename__ = "collection_entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str]
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"))


class UserMetadata(Base):
    __tablename__ = "user_metadata"
    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str]
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"))
    notes: Mapped[str | None]
    favorite: Mapped[int] = mapped_column(default=0)


class UserMetadataTag(Base):
    __tablename__ = "user_metadata_tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str]
    user_metadata_id: Mapped[int] = mapped_column(ForeignKey("user_metadata.id", ondelete="CASCADE"))
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"))


def v5(s, ns, name):
    return s.scalar(select(func.sdsync_uuid_v5(ns, name)))


def upsert_tag(s, uuid, **values):
    """INSERT ... ON CONFLICT(uuid) DO UPDATE SET only the given columns."""
    stmt = insert(Tag).values(uuid=uuid, **values)
    s.execute(stmt.on_conflict_do_update(index_elements=["uuid"], set_=values))


def a1(s):
    photos = Location(name="A photos", path="/photos")
    s.add(photos)
    s.flush()  # INSERT ... RETURNING id
    check("RETURNING gave the id", isinstance(photos.id, int), True)
    dcim = Entry(name="DCIM", kind="directory", location=photos)
    s.add(dcim)
    s.flush()
    s.add_all(
        Entry(name=f"IMG_{i:04}.jpg", extension="jpg", size=i * 100, location=photos, parent_id=dcim.id)
        for i in range(1, 41)
    )
    s.add(Location(name="A old", entries=[Entry(name=f"old_{i}") for i in range(1, 6)]))
    s.commit()
    vacation = v5(s, "tag", "Vacation")
    for color in ("red", "green", "blue"):
        upsert_tag(s, vacation, canonical_name="Vacation", color=color)
        s.commit()
    work = v5(s, "tag", "Work")
    for color in ("grey", "black"):
        stmt = insert(Tag).values(uuid=work, canonical_name="Work", color=color)
        s.execute(stmt.on_conflict_do_nothing(index_elements=["uuid"]))
        s.commit()
    check("Work color", s.scalar(select(Tag.color).where(Tag.uuid == work)), "grey")
    s.add(Tag(uuid=v5(s, "tag", "Kept"), canonical_name="Kept"))
    nested = s.begin_nested()  # SAVEPOINT
    s.add(Tag(uuid=v5(s, "tag", "Ghost"), canonical_name="Ghost"))
    s.add(Entry(name="ghost.txt", location=photos))
    s.flush()
    nested.rollback()
    s.commit()
    check("Ghost", s.scalar(select(func.count()).where(Tag.canonical_name == "Ghost")), 0)
    check("ghost.txt", s.scalar(select(func.count()).where(Entry.name == "ghost.txt")), 0)
    check("Kept", s.scalar(select(func.count()).where(Tag.canonical_name == "Kept")), 1)
    best = Collection(uuid=v5(s, "collection", "Best of"), name="Best of")
    s.add(best)
    s.flush()
    for e in s.scalars(select(Entry).where(Entry.name < "IMG_0011", Entry.name.like("IMG_%"))):
        s.add(CollectionEntry(uuid=v5(s, "collection_entry", f"{best.uuid}/{e.uuid}"),
                              collection_id=best.id, entry_id=e.id))
    s.commit()
    s.delete(s.scalars(select(Entry).where(Entry.name == "IMG_0040.jpg")).one())
    s.commit()
    # A shared parent deleted with passive_deletes: the database cascades its members.
    temp = Collection(uuid=v5(s, "collection", "Temp"), name="Temp")
    s.add(temp)
    s.flush()
    temp_id = temp.id
    for e in s.scalars(select(Entry).where(Entry.name.in_(["IMG_0001.jpg", "IMG_0002.jpg"]))):
        s.add(CollectionEntry(uuid=v5(s, "collection_entry", f"{temp.uuid}/{e.uuid}"),
                              collection_id=temp_id, entry_id=e.id))
    s.commit()
    s.delete(temp)
    s.commit()
    check("Temp members", s.scalar(select(func.count()).where(CollectionEntry.collection_id == temp_id)), 0)
    # INSERT OR REPLACE of an own shared row, through the Core.
    replaced = v5(s, "tag", "Replaced")
    for color in ("white", "black"):
        s.execute(insert(Tag).prefix_with("OR REPLACE").values(uuid=replaced, canonical_name="Replaced", color=color))
        s.commit()
    # A RETURNING of several columns from an upsert.
    got = s.execute(
        insert(Tag).values(uuid=v5(s, "tag", "Returned"), canonical_name="Returned", color="x")
        .on_conflict_do_update(index_elements=["uuid"], set_={"color": "y"})
        .returning(Tag.canonical_name, Tag.color)
    ).one()
    s.commit()
    check("RETURNING of an upsert", tuple(got), ("Returned", "x"))


def b1(s):
    s.add(Location(name="B music", path="/music",
                   entries=[Entry(name=f"track_{i:02}.flac", size=i) for i in range(1, 11)]))
    s.commit()
    vacation = v5(s, "tag", "Vacation")
    for icon in ("sun", "palm"):
        upsert_tag(s, vacation, canonical_name="Vacation", icon=icon)
        s.commit()
    s.add(Tag(uuid=v5(s, "tag", "B only"), canonical_name="B only"))
    s.commit()


def a2(s):
    vacation = v5(s, "tag", "Vacation")
    for color in ("orange", "purple"):
        upsert_tag(s, vacation, color=color)
        s.commit()
    music = s.scalars(select(Location).where(Location.name == "B music")).one()

    def rename():
        s.add(Tag(uuid=v5(s, "tag", "Rolled back"), canonical_name="Rolled back"))
        music.name = "hijacked"
        s.commit()

    refused("ORM update of B's location", rename)
    s.rollback()
    check("Rolled back", s.scalar(select(func.count()).where(Tag.canonical_name == "Rolled back")), 0)
    check("B music name", s.scalar(select(Location.name).where(Location.id == music.id)), "B music")

    def replace():
        s.execute(insert(Location).prefix_with("OR REPLACE").values(uuid=music.uuid, name="hijacked"))
        s.commit()

    refused("INSERT OR REPLACE of B's location", replace)
    s.rollback()

    def delete():
        s.delete(music)  # the ORM cascade deletes its entries first
        s.commit()

    refused("ORM delete of B's location", delete)
    s.rollback()
    check("B music tracks", s.scalar(select(func.count()).where(Entry.location_id == music.id)), 10)
    # ORM bulk UPDATE by primary key, then one UPDATE ... WHERE.
    imgs = s.execute(select(Entry.id, Entry.size).where(Entry.name.like("IMG_%"))).all()
    s.execute(update(Entry), [{"id": i, "size": size + 500} for i, size in imgs])
    s.execute(update(Entry).where(Entry.name.like("IMG_%")).values(size=Entry.size + 500))
    s.commit()
    old = s.scalars(select(Location).where(Location.name == "A old")).one()
    s.delete(old)  # relationship cascade: the entries, then the location
    s.commit()
    check("A old entries", s.scalar(select(func.count()).where(Entry.name.like("old_%"))), 0)


def b2(s):
    vacation = s.scalars(select(Tag).where(Tag.uuid == v5(s, "tag", "Vacation"))).one()
    vacation.icon = "beach"
    img = s.scalars(select(Entry).where(Entry.name == "IMG_0001.jpg")).one()
    meta = UserMetadata(uuid=v5(s, "user_metadata", img.uuid), entry_id=img.id, favorite=1, notes="from B")
    s.add(meta)
    s.flush()
    s.add(UserMetadataTag(uuid=v5(s, "user_metadata_tag", f"{meta.uuid}/{vacation.uuid}"),
                          user_metadata_id=meta.id, tag_id=vacation.id))
    best = s.scalars(select(Collection).where(Collection.name == "Best of")).one()
    img11 = s.scalars(select(Entry).where(Entry.name == "IMG_0011.jpg")).one()
    stmt = insert(CollectionEntry).values(
        uuid=v5(s, "collection_entry", f"{best.uuid}/{img11.uuid}"), collection_id=best.id, entry_id=img11.id)
    s.execute(stmt.on_conflict_do_nothing(index_elements=["uuid"]))
    s.commit()
    img2 = s.scalars(select(Entry).where(Entry.name == "IMG_0002.jpg")).one()

    def rename():
        img2.name = "hijacked"
        s.commit()

    refused("ORM update of A's entry", rename)
    s.rollback()
    s.delete(s.scalars(select(Tag).where(Tag.canonical_name == "B only")).one())
    s.commit()


with Session(engine) as session:
    {("a", 1): a1, ("b", 1): b1, ("a", 2): a2, ("b", 2): b2}[(SIDE, PHASE)](session)
    # Nothing left uncommitted.
    check("unflushed changes", len(session.dirty) + len(session.new), 0)
engine.dispose()
