// Node's better-sqlite3 (its own bundled SQLite) plays the conformance scenario.
//
// `node better_sqlite3_client.js DB EXTENSION a|b 1|2` (see tests/tests/clients.rs).
// Exercised: db.loadExtension, prepared inserts in db.transaction(), nested
// transactions (SAVEPOINTs) rolled back, upserts repeated, RETURNING,
// INSERT OR IGNORE / OR REPLACE, UPDATE OR IGNORE / FAIL / ABORT / ROLLBACK
// (repeated on the same column), deletes with cascades, refused writes.
'use strict';

const Database = require('better-sqlite3');

const [db_path, ext, side, phase] = process.argv.slice(2);
if (!db_path || !ext || !['a', 'b'].includes(side) || !['1', '2'].includes(phase)) {
  console.error('usage: better_sqlite3_client.js DB EXTENSION a|b 1|2');
  process.exit(2);
}

const db = new Database(db_path);
db.loadExtension(ext);

function check(what, got, want) {
  const [g, w] = [JSON.stringify(got), JSON.stringify(want)];
  if (g !== w) throw new Error(`${what}: got ${g}, want ${w}`);
}

function refused(what, fn) {
  try {
    fn();
  } catch (e) {
    if (!e.message.includes('owned by device') || !e.message.includes('sdsync')) {
      throw new Error(`${what}: refused with an unclear error: ${e.message}`);
    }
    console.log(`refused as expected (${what}): ${e.message}`);
    return;
  }
  throw new Error(`${what}: was accepted, must be refused (another device owns the row)`);
}

const v5 = (ns, name) => db.prepare('SELECT sdsync_uuid_v5(?, ?) AS u').get(ns, name).u;
const newUuid = () => db.prepare('SELECT sdsync_uuid() AS u').get().u;
const one = (sql, ...params) => db.prepare(sql).pluck().get(...params);
const VACATION = v5('tag', 'Vacation');
const upsertTag = db.prepare(
  `INSERT INTO tags(uuid, canonical_name, color, icon) VALUES (@uuid, @name, @color, @icon)
   ON CONFLICT(uuid) DO UPDATE SET color = coalesce(excluded.color, color), icon = coalesce(excluded.icon, icon)
   RETURNING id, color, icon`);

// Many small transactions on both devices at once, racing the syncers' applies:
// each must wait for the lock (no "database is locked") and every one must sync.
function burst(who) {
  const audit = db.prepare("INSERT INTO audit_log(uuid, action, details) VALUES (?, 'burst', ?)");
  // Its own column of the shared tag, and `color`, which both devices write.
  const own = who === 'a' ? 'description' : 'namespace';
  const counter = db.prepare(
    `INSERT INTO tags(uuid, canonical_name, ${own}, color) VALUES (?, 'Counter', ?, ?)
     ON CONFLICT(uuid) DO UPDATE SET ${own} = excluded.${own}, color = excluded.color`);
  const step = db.transaction((i) => {
    audit.run(newUuid(), `${who} ${i}`);
    counter.run(v5('tag', 'Counter'), `${who} ${i}`, `${who} ${i}`);
  });
  for (let i = 1; i <= 100; i++) step(i);
  check(`${who}'s burst`, one("SELECT count(*) FROM audit_log WHERE action = 'burst' AND details LIKE ?", `${who} %`), 100);
}

function a1() {
  burst('a');
  const insertLocation = db.prepare('INSERT INTO locations(uuid, name, path) VALUES (?, ?, ?) RETURNING id');
  const insertEntry = db.prepare(
    `INSERT INTO entries(uuid, location_id, parent_id, name, kind, extension, size)
     VALUES (@uuid, @location, @parent, @name, @kind, @ext, @size)`);
  db.transaction(() => {
    const photos = insertLocation.get(newUuid(), 'A photos', '/photos').id;
    const dcim = insertEntry.run({ uuid: newUuid(), location: photos, parent: null, name: 'DCIM', kind: 'directory', ext: null, size: 0 }).lastInsertRowid;
    for (let i = 1; i <= 40; i++) {
      const name = `IMG_${String(i).padStart(4, '0')}.jpg`;
      insertEntry.run({ uuid: newUuid(), location: photos, parent: dcim, name, kind: 'file', ext: 'jpg', size: i * 100 });
    }
    const old = insertLocation.get(newUuid(), 'A old', null).id;
    for (let i = 1; i <= 5; i++) {
      insertEntry.run({ uuid: newUuid(), location: old, parent: null, name: `old_${i}`, kind: 'file', ext: null, size: 0 });
    }
  })();
  for (const color of ['red', 'green', 'blue']) {
    const r = upsertTag.get({ uuid: VACATION, name: 'Vacation', color, icon: null });
    check('RETURNING of the upsert', r.color, color);
  }
  const work = v5('tag', 'Work');
  const ignore = db.prepare('INSERT OR IGNORE INTO tags(uuid, canonical_name, color) VALUES (?, ?, ?)');
  check('first INSERT OR IGNORE', ignore.run(work, 'Work', 'grey').changes, 1);
  check('second INSERT OR IGNORE', ignore.run(work, 'Work', 'black').changes, 0);
  // Nested transactions are SAVEPOINTs; the inner one throws and rolls back.
  const addTag = db.prepare('INSERT INTO tags(uuid, canonical_name) VALUES (?, ?)');
  db.transaction(() => {
    addTag.run(v5('tag', 'Kept'), 'Kept');
    try {
      db.transaction(() => {
        addTag.run(v5('tag', 'Ghost'), 'Ghost');
        throw new Error('roll the savepoint back');
      })();
    } catch (e) {
      if (!e.message.includes('roll the savepoint back')) throw e;
    }
  })();
  // A SAVEPOINT by hand, rolled back to, then released.
  db.exec('SAVEPOINT by_hand');
  addTag.run(v5('tag', 'Ghost'), 'Ghost');
  db.exec('ROLLBACK TO by_hand; RELEASE by_hand');
  check('Ghost', one("SELECT count(*) FROM tags WHERE canonical_name = 'Ghost'"), 0);
  // Every UPDATE OR clause, each repeated on the same column of a shared and an owned row.
  for (const clause of ['OR IGNORE', 'OR FAIL', 'OR ABORT', 'OR ROLLBACK', 'OR REPLACE', '']) {
    for (const n of [1, 2]) {
      const d = `${clause || 'plain'} ${n}`;
      check(`UPDATE ${clause} tags`, db.prepare(`UPDATE ${clause} tags SET description = ? WHERE uuid = ?`).run(d, work).changes, 1);
      check(`UPDATE ${clause} locations`, db.prepare(`UPDATE ${clause} locations SET path = ? WHERE name = 'A old'`).run(`/old/${d}`, ).changes, 1);
    }
  }
  check('Work after the UPDATE ORs', one('SELECT description FROM tags WHERE uuid = ?', work), 'plain 2');
  const best = v5('collection', 'Best of');
  db.prepare('INSERT INTO collections(uuid, name) VALUES (?, ?)').run(best, 'Best of');
  db.prepare(
    `INSERT INTO collection_entries(uuid, collection_id, entry_id)
     SELECT sdsync_uuid_v5('collection_entry', c.uuid || '/' || e.uuid), c.id, e.id
     FROM collections c, entries e WHERE c.uuid = ? AND e.name LIKE 'IMG_%' AND e.name < 'IMG_0011'`).run(best);
  check('DELETE ... RETURNING', db.prepare("DELETE FROM entries WHERE name = 'IMG_0040.jpg' RETURNING name").pluck().all(), ['IMG_0040.jpg']);
  // INSERT OR REPLACE of own rows, twice: a shared tag and an owned audit row.
  const audit = newUuid();
  for (const v of ['first', 'second']) {
    db.prepare('INSERT OR REPLACE INTO tags(uuid, canonical_name, color) VALUES (?, ?, ?)').run(v5('tag', 'Replaced'), 'Replaced', v);
    db.prepare("REPLACE INTO audit_log(uuid, action, details) VALUES (?, 'import', ?)").run(audit, v);
  }
}

function b1() {
  burst('b');
  db.transaction(() => {
    const music = db.prepare("INSERT INTO locations(uuid, name, path) VALUES (?, 'B music', '/music') RETURNING id").get(newUuid()).id;
    const insert = db.prepare('INSERT INTO entries(uuid, location_id, name, size) VALUES (?, ?, ?, ?)');
    for (let i = 1; i <= 10; i++) insert.run(newUuid(), music, `track_${String(i).padStart(2, '0')}.flac`, i);
  })();
  for (const icon of ['sun', 'palm']) upsertTag.get({ uuid: VACATION, name: 'Vacation', color: null, icon });
  db.prepare('INSERT INTO tags(uuid, canonical_name) VALUES (?, ?)').run(v5('tag', 'B only'), 'B only');
}

function a2() {
  for (const color of ['orange', 'purple']) upsertTag.get({ uuid: VACATION, name: null, color, icon: null });
  const music = db.prepare("SELECT id, uuid FROM locations WHERE name = 'B music'").get();
  refused("UPDATE of B's location in a transaction", () => db.transaction(() => {
    db.prepare("INSERT INTO tags(uuid, canonical_name) VALUES (sdsync_uuid_v5('tag', 'Rolled back'), 'Rolled back')").run();
    db.prepare("UPDATE locations SET name = 'hijacked' WHERE id = ?").run(music.id);
  })());
  check('Rolled back', one("SELECT count(*) FROM tags WHERE canonical_name = 'Rolled back'"), 0);
  for (const clause of ['OR IGNORE', 'OR FAIL', 'OR ABORT', 'OR ROLLBACK', 'OR REPLACE']) {
    refused(`UPDATE ${clause} of B's location`, () => db.prepare(`UPDATE ${clause} locations SET name = 'hijacked' WHERE id = ?`).run(music.id));
  }
  refused("INSERT OR REPLACE of B's location", () => db.prepare("INSERT OR REPLACE INTO locations(uuid, name) VALUES (?, 'hijacked')").run(music.uuid));
  refused("upsert of B's location", () => db.prepare("INSERT INTO locations(uuid, name) VALUES (?, 'hijacked') ON CONFLICT(uuid) DO UPDATE SET name = excluded.name").run(music.uuid));
  refused("DELETE of B's location", () => db.prepare('DELETE FROM locations WHERE id = ?').run(music.id));
  check('B music', one('SELECT name FROM locations WHERE uuid = ?', music.uuid), 'B music');
  check('B music tracks', one('SELECT count(*) FROM entries WHERE location_id = ?', music.id), 10);
  db.transaction(() => {
    db.prepare("UPDATE OR ABORT entries SET size = size + 500 WHERE name LIKE 'IMG_%'").run();
    db.prepare("UPDATE OR ROLLBACK entries SET size = size + 500 WHERE name LIKE 'IMG_%' RETURNING id").all();
  })();
  db.prepare("DELETE FROM locations WHERE name = 'A old'").run(); // cascades to its entries
  check('A old entries', one("SELECT count(*) FROM entries WHERE name LIKE 'old_%'"), 0);
}

function b2() {
  db.prepare("UPDATE OR IGNORE tags SET icon = 'beach' WHERE uuid = ?").run(VACATION);
  const img = db.prepare("SELECT id, uuid FROM entries WHERE name = 'IMG_0001.jpg'").get();
  const meta = v5('user_metadata', img.uuid);
  const metaId = db.prepare(
    "INSERT INTO user_metadata(uuid, entry_id, favorite, notes) VALUES (?, ?, 1, 'from B') RETURNING id").pluck().get(meta, img.id);
  db.prepare(
    `INSERT INTO user_metadata_tags(uuid, user_metadata_id, tag_id)
     SELECT sdsync_uuid_v5('user_metadata_tag', ? || '/' || uuid), ?, id FROM tags WHERE uuid = ?`).run(meta, metaId, VACATION);
  db.prepare(
    `INSERT OR IGNORE INTO collection_entries(uuid, collection_id, entry_id)
     SELECT sdsync_uuid_v5('collection_entry', c.uuid || '/' || e.uuid), c.id, e.id
     FROM collections c, entries e WHERE c.name = 'Best of' AND e.name = 'IMG_0011.jpg'`).run();
  refused("UPDATE OR FAIL of A's entry", () => db.prepare("UPDATE OR FAIL entries SET name = 'hijacked' WHERE name = 'IMG_0002.jpg'").run());
  db.prepare("DELETE FROM tags WHERE canonical_name = 'B only'").run();
}

({ a1, b1, a2, b2 })[side + phase]();
db.close();
