#!/usr/bin/env bash
# Instructions per updated row of the lean table's bulk UPDATE with sdsync's
# capture trigger, counted by callgrind (repeatable to the instruction,
# whatever else the machine runs; README "Performance", session 25).
#
#   tests/bench/capture_instructions.sh [EXTENSION_DIR] [SED_EXPRESSION]
#
# EXTENSION_DIR holds libsdsync.so (default target/release). SED_EXPRESSION,
# if given, rewrites the installed update trigger first, e.g. to time one
# part of its body:
#   's/ BEGIN .* END$/ BEGIN SELECT 1; END/'
# Needs valgrind and the sqlite3 shell (Debian's packages).
set -euo pipefail
ext="${1:-target/release}"
ext="$(cd "$ext" && pwd)/libsdsync"
edit="${2:-s/x/x/}"
rows=20000
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
db="$work/db"
sqlite3 -cmd ".load $ext" "$db" >/dev/null <<SQL
PRAGMA journal_mode=WAL;
CREATE TABLE lean(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, a INTEGER, b TEXT, c REAL);
SELECT sdsync_track('lean', 'owned');
BEGIN; WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $rows)
INSERT INTO lean(uuid, a, b, c) SELECT printf('u%08d', i), i, 'name' || i, i * 0.5 FROM s; COMMIT;
SQL
trigger="$(sqlite3 -cmd ".load $ext" "$db" "SELECT sql FROM sqlite_schema WHERE name = 'sdsync_upd_lean'")"
trigger="$(printf '%s' "$trigger" | sed -e "$edit")"
sqlite3 -cmd ".load $ext" "$db" "BEGIN; DROP TRIGGER sdsync_upd_lean; $trigger; COMMIT; PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
cp "$db" "$work/snapshot"
count() {
  cp "$work/snapshot" "$db"
  rm -f "$db-wal" "$db-shm"
  valgrind --tool=callgrind --callgrind-out-file="$work/out" \
    sqlite3 -cmd ".load $ext" "$db" "$1" >/dev/null 2>"$work/log"
  grep -o 'Collected : [0-9]*' "$work/log" | awk '{print $3}'
}
without=$(count "SELECT 1;")
with=$(count "BEGIN; UPDATE lean SET a = a + 1; COMMIT;")
echo "instructions per updated row: $(( (with - without) / rows ))"
