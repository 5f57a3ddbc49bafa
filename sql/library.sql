-- sdsync default library schema: a Spacedrive-style model of a user's library.
--
-- Load the extension first, then read this file once per new database.db:
--   sqlite3 database.db '.load target/release/libsdsync' '.read sql/library.sql'
--
-- Conventions that make sync work:
-- * every table keeps a local `id INTEGER PRIMARY KEY` (never sent) and a `uuid`
--   (NOT NULL UNIQUE) that identifies the row on every device;
-- * references are integer foreign keys to `id`; they travel as the parent's uuid;
-- * every other column is nullable or has a default, so plain SQL naming only a
--   few columns can insert a row;
-- * rows two devices may create independently for the same thing get
--   deterministic uuids: tags `sdsync_uuid_v5('tag', canonical_name)`, content
--   `sdsync_uuid_v5('content', content_hash)`, memberships from their two parents
--   (`sdsync_uuid_v5('collection_entry', collection_uuid || '/' || entry_uuid)`).

PRAGMA journal_mode = WAL;

-- Shared: a device row is written by the device itself and by others that pair
-- it or rename it (the seeds sync devices as shared data).
CREATE TABLE IF NOT EXISTS devices (
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL DEFAULT '',
  os TEXT,
  hardware_model TEXT,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  updated_at TEXT,
  -- Membership, kept by the syncer (README, "Membership"): members accept a
  -- device by its certificate's SHA-256, dial its addresses (host:port,
  -- comma-separated), and refuse it for good once revoked_at is set.
  cert_sha256 TEXT,
  addresses TEXT,
  revoked_at TEXT
);

-- Owned by the device the volume is attached to.
CREATE TABLE IF NOT EXISTS volumes (
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  device_id INTEGER REFERENCES devices(id),
  name TEXT NOT NULL DEFAULT '',
  mount_point TEXT,
  file_system TEXT,
  total_bytes INTEGER,
  available_bytes INTEGER,
  is_removable INTEGER NOT NULL DEFAULT 0
);

-- Owned: a location is a directory indexed by the device that has it.
CREATE TABLE IF NOT EXISTS locations (
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  device_id INTEGER REFERENCES devices(id),
  volume_id INTEGER REFERENCES volumes(id),
  name TEXT NOT NULL DEFAULT '',
  path TEXT,
  total_file_count INTEGER NOT NULL DEFAULT 0,
  total_byte_size INTEGER NOT NULL DEFAULT 0,
  scan_state TEXT NOT NULL DEFAULT 'pending',
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- Shared: the same content seen on several devices is one row (uuid from the hash).
CREATE TABLE IF NOT EXISTS content_identities (
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  content_hash TEXT,
  size INTEGER,
  kind TEXT,
  mime_type TEXT,
  first_seen_at TEXT
);

-- Owned: the file tree of a location, indexed by its device.
CREATE TABLE IF NOT EXISTS entries (
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  location_id INTEGER REFERENCES locations(id) ON DELETE CASCADE,
  parent_id INTEGER REFERENCES entries(id) ON DELETE CASCADE,
  content_id INTEGER REFERENCES content_identities(id),
  name TEXT NOT NULL DEFAULT '',
  kind TEXT NOT NULL DEFAULT 'file',
  extension TEXT,
  size INTEGER NOT NULL DEFAULT 0,
  inode INTEGER,
  created_at TEXT,
  modified_at TEXT
);
CREATE INDEX IF NOT EXISTS entries_parent ON entries(parent_id);
CREATE INDEX IF NOT EXISTS entries_location ON entries(location_id);

-- Shared: tags, uuid from the canonical name so two devices' "Vacation" merge.
CREATE TABLE IF NOT EXISTS tags (
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  canonical_name TEXT,
  display_name TEXT,
  namespace TEXT,
  color TEXT,
  icon TEXT,
  description TEXT,
  created_at TEXT,
  updated_at TEXT
);

-- Shared: tag hierarchy edges; uuid from both tags.
CREATE TABLE IF NOT EXISTS tag_relationships (
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  parent_tag_id INTEGER REFERENCES tags(id) ON DELETE CASCADE,
  child_tag_id INTEGER REFERENCES tags(id) ON DELETE CASCADE,
  relationship_type TEXT NOT NULL DEFAULT 'parent_child',
  strength REAL NOT NULL DEFAULT 1.0
);

-- Shared: albums.
CREATE TABLE IF NOT EXISTS collections (
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL DEFAULT '',
  description TEXT,
  created_at TEXT,
  updated_at TEXT
);

-- Shared: album membership; uuid from (collection, entry) so concurrent adds merge.
CREATE TABLE IF NOT EXISTS collection_entries (
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  collection_id INTEGER REFERENCES collections(id) ON DELETE CASCADE,
  entry_id INTEGER REFERENCES entries(id) ON DELETE CASCADE,
  added_at TEXT
);

-- Shared: what the user says about an entry or a content identity.
CREATE TABLE IF NOT EXISTS user_metadata (
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  entry_id INTEGER REFERENCES entries(id) ON DELETE CASCADE,
  content_identity_id INTEGER REFERENCES content_identities(id),
  notes TEXT,
  favorite INTEGER NOT NULL DEFAULT 0,
  hidden INTEGER NOT NULL DEFAULT 0,
  custom_data TEXT,
  updated_at TEXT
);

-- Shared: tags applied to user metadata; uuid from (metadata, tag).
CREATE TABLE IF NOT EXISTS user_metadata_tags (
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  user_metadata_id INTEGER REFERENCES user_metadata(id) ON DELETE CASCADE,
  tag_id INTEGER REFERENCES tags(id) ON DELETE CASCADE,
  applied_at TEXT
);

-- Owned: each device's own record of what it did.
CREATE TABLE IF NOT EXISTS audit_log (
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  action TEXT NOT NULL DEFAULT '',
  target TEXT,
  details TEXT,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- Classification (DESIGN.md §1). Parents are tracked before the tables that
-- reference them; sdsync_track refuses a reference to an untracked table.
SELECT sdsync_track('devices', 'shared');
SELECT sdsync_track('volumes', 'owned');
SELECT sdsync_track('locations', 'owned');
SELECT sdsync_track('content_identities', 'shared');
SELECT sdsync_track('entries', 'owned');
SELECT sdsync_track('tags', 'shared');
SELECT sdsync_track('tag_relationships', 'shared');
SELECT sdsync_track('collections', 'shared');
SELECT sdsync_track('collection_entries', 'shared');
SELECT sdsync_track('user_metadata', 'shared');
SELECT sdsync_track('user_metadata_tags', 'shared');
SELECT sdsync_track('audit_log', 'owned');
