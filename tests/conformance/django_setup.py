"""What both Django clients share: standalone settings for one SQLite file,
and the sdsync extension loaded into every connection Django opens
(`connection_created`), as a Django app would do it."""

import django
from django.conf import settings


def configure(db, ext):
    """Sets Django up on database `db` with the extension at `ext`."""
    settings.configure(
        # IMMEDIATE: what Django documents for SQLite with concurrent writers
        # (the syncer is one); a deferred atomic() that reads first cannot
        # start writing once another connection has committed since its read.
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db,
                               "OPTIONS": {"transaction_mode": "IMMEDIATE"}}},
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()
    from django.db.backends.signals import connection_created

    def load_sdsync(sender, connection, **kwargs):
        connection.connection.enable_load_extension(True)
        connection.connection.load_extension(ext)
        connection.connection.enable_load_extension(False)

    connection_created.connect(load_sdsync, weak=False)
