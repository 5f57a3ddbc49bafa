"""What every Python client of the conformance suite shares (stdlib only).

A client is run as `CLIENT DB EXTENSION SIDE PHASE` (see tests/tests/clients.rs for
the scenario); it exits non-zero on any unexpected outcome.
"""

import sys

# A refused write to another device's owned row must say so (and name sdsync).
REFUSAL = "owned by device"


def args():
    """(database path, extension path, side 'a' or 'b', phase 1 or 2)."""
    if len(sys.argv) != 5 or sys.argv[3] not in ("a", "b") or sys.argv[4] not in ("1", "2"):
        sys.exit(f"usage: {sys.argv[0]} DB EXTENSION a|b 1|2")
    return sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


def load_sdsync(conn, ext):
    """Loads the extension into a `sqlite3` connection, as an app does."""
    conn.enable_load_extension(True)
    conn.load_extension(ext)
    conn.enable_load_extension(False)


def check(what, got, want):
    """Fails the client when a value is not what the scenario expects."""
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def refused(what, fn):
    """Runs `fn`, which must fail with sdsync's ownership refusal; returns the text."""
    try:
        fn()
    except Exception as e:  # each client raises its own exception type
        text = str(e)
        if REFUSAL not in text or "sdsync" not in text:
            raise AssertionError(f"{what}: refused with an unclear error: {text!r}") from e
        print(f"refused as expected ({what}): {text}")
        return text
    raise AssertionError(f"{what}: was accepted, must be refused (another device owns the row)")


def accepted_or_refused(what, ok, error, rows_left):
    """A write SQLite would accept but sdsync may refuse at write time (a value a
    peer could not store, e.g. '' in an INTEGER column from an empty CSV cell):
    either it succeeded, and must then sync, or sdsync refused it with a clear
    error and nothing of it was written. `rows_left` counts its rows after."""
    if ok:
        print(f"{what}: accepted (it must sync)")
        return
    if "sdsync" not in error:
        raise AssertionError(f"{what}: failed without sdsync's error: {error!r}")
    check(f"{what}: rows left after the refusal", rows_left(), 0)
    print(f"{what}: refused at write time: {error.strip()}")
