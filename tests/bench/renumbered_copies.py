"""How long a device takes to take back N renumbered copies of changes it
holds (what every peer does after a restored device renumbers its changes:
`adopt_number` in the extension's apply), against taking the first copies.

    /work/main/.venv-clients/bin/python tests/bench/renumbered_copies.py EXT N

EXT is the extension without its suffix (target/release/libsdsync); the
first line is the first copies, the second the renumbered ones. README
"Backup and restore" (session 26) has the numbers.
"""
import os, shutil, sqlite3, sys, tempfile, time
ext, n = sys.argv[1], int(sys.argv[2])

d = tempfile.mkdtemp(prefix='renumbered-')
SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'sql', 'library.sql')
def lib(p):
    c = sqlite3.connect(p, isolation_level=None); c.enable_load_extension(True); c.load_extension(ext)
    return c
a = lib(d + '/a.db'); a.executescript(open(SCHEMA).read())
a.execute(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<{n}) INSERT INTO tags(uuid, canonical_name, description) SELECT 't'||i, 'n'||i, 'd'||i FROM n")
rows = a.execute("SELECT tbl, pk, op, data, origin, seq, hlc, creates FROM sdsync_changes").fetchall()
b = lib(d + '/b.db'); b.executescript(open(SCHEMA).read())
ins = "INSERT INTO sdsync_changes(tbl, pk, op, data, origin, seq, hlc, creates) VALUES (?,?,?,?,?,?,?,?)"
t = time.perf_counter()
b.execute("BEGIN"); b.executemany(ins, rows); b.execute("COMMIT")
print(f"{n} first copies taken in {time.perf_counter()-t:.2f} s")
renum = [r[:5] + (r[5] + 1000000,) + r[6:] for r in rows]
t = time.perf_counter(); cpu = time.process_time()
b.execute("BEGIN"); b.executemany(ins, renum); b.execute("COMMIT")
print(f"{n} renumbered copies taken in {time.perf_counter()-t:.2f} s (CPU {time.process_time()-cpu:.2f} s)")
assert b.execute("SELECT min(seq) FROM sdsync_versions").fetchone()[0] == 1000001
shutil.rmtree(d)
