//! A folder's device in the library's membership (`crate::members`): its own
//! `devices` row, the devices the library lists, removing one, rotating the
//! certificate.

use std::net::SocketAddr;

use rusqlite::params;

use super::{Home, HomeError};
use crate::library::{Library, LibraryError};
use crate::members::{self, Member};
use crate::net::identity::{Identity, fingerprint};
use crate::sqlstore::syncdb;

impl Home {
    /// Gives this device its row in the library's `devices` table (uuid, the
    /// folder's name, the OS) if it has none and the table exists, and keeps
    /// what peers need in it current: its certificate's fingerprint (the
    /// next one while a rotation waits) and `addresses`, when given. Plain
    /// SQL like `… FROM devices WHERE uuid = sdsync_device_id()` then finds
    /// it, and the row syncs, so every member lists, accepts and reaches
    /// every member. `sdsync init`, `pair join` and `sdsync run` call it;
    /// [`Home::init`] itself writes nothing, so a caller decides.
    pub fn register_device(&self, addresses: &[SocketAddr]) -> Result<(), HomeError> {
        let lib = self.database()?;
        let name = self
            .dir
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let me = lib.device()?;
        let current = self.identity()?;
        let cert = Identity::next(&self.dir)?.unwrap_or(current);
        let sql = sql_error(&lib);
        if !crate::library::table_exists(&lib.conn, "devices").map_err(sql)? {
            return Ok(());
        }
        let fingerprint = cert.fingerprint();
        // One change for a new row (with what peers need, when the table has
        // the columns), then only what differs.
        let new_row = "WHERE NOT EXISTS (SELECT 1 FROM devices WHERE uuid = ?1)";
        let os = std::env::consts::OS;
        if members::supported(&lib.conn).map_err(sql)? {
            let listed = members::format_addresses(addresses);
            lib.conn.execute(
                &format!(
                    "INSERT INTO devices(uuid, name, os, cert_sha256, addresses) \
                     SELECT ?1, ?2, ?3, ?4, nullif(?5, '') {new_row}"
                ),
                params![me, name, os, fingerprint, listed],
            )
        } else {
            lib.conn.execute(
                &format!("INSERT INTO devices(uuid, name, os) SELECT ?1, ?2, ?3 {new_row}"),
                params![me, name, os],
            )
        }
        .map_err(sql)?;
        members::publish(&lib.conn, &me, &fingerprint, addresses).map_err(sql)?;
        Ok(())
    }

    /// The devices the library lists (empty if its `devices` table has no
    /// membership columns).
    pub fn members(&self) -> Result<Vec<Member>, HomeError> {
        let lib = self.database()?;
        let listed = members::read(&lib.conn).map_err(sql_error(&lib))?;
        Ok(listed.unwrap_or_default())
    }

    /// Removes `device` from the library everywhere: its row is marked
    /// removed (the mark syncs to every member, which refuses it from then
    /// on) and this device refuses it at once. Returns its id.
    pub fn remove_device(&self, device: &str) -> Result<String, HomeError> {
        let refuse = |reason: &str| HomeError::Device {
            device: device.to_string(),
            reason: reason.to_string(),
        };
        let id = sdsync_core::ids::parse_device(device)
            .ok_or_else(|| refuse("a device id is a uuid (`sdsync device list` prints them)"))?;
        let lib = self.database()?;
        if id == lib.device()? {
            return Err(refuse(
                "that is this device; remove it from another member of the library",
            ));
        }
        let sql = sql_error(&lib);
        if !members::supported(&lib.conn).map_err(sql)? {
            return Err(refuse(MIGRATE));
        }
        // Its certificates too: refused under any other id.
        let mut prints: Vec<String> = self
            .members()?
            .into_iter()
            .filter(|m| m.device == id)
            .map(|m| m.cert_sha256.unwrap_or_default())
            .collect();
        let listed = !prints.is_empty();
        let pinned = self.pinned_cert(&id)?;
        if !listed && pinned.is_none() {
            return Err(refuse(
                "not a device of this library (`sdsync device list` prints them)",
            ));
        }
        prints.extend(pinned.map(|cert| fingerprint(&cert)));
        prints.retain(|p| !p.is_empty());
        members::revoke(&lib.conn, &id).map_err(sql)?;
        self.sql(syncdb::revoke(&self.sync, &id, &prints))?;
        Ok(id)
    }

    /// Prepares a new certificate for this device and lists its fingerprint
    /// in the device's row; the syncer puts it in place once every peer
    /// holds the row (no re-pairing). Returns the new fingerprint.
    pub fn rotate_certificate(&self) -> Result<String, HomeError> {
        let lib = self.database()?;
        let me = lib.device()?;
        let sql = sql_error(&lib);
        if !members::supported(&lib.conn).map_err(sql)? {
            return Err(HomeError::Device {
                device: me,
                reason: MIGRATE.into(),
            });
        }
        let next = Identity::prepare_next(&self.dir, &me)?;
        self.register_device(&[])?;
        Ok(next.fingerprint())
    }
}

/// An SQL error of the library database, naming its file.
fn sql_error(lib: &Library) -> impl Fn(rusqlite::Error) -> LibraryError + Copy + '_ {
    |source| LibraryError::Sql {
        path: lib.path.clone(),
        source,
    }
}

/// What to do with a library made before membership.
const MIGRATE: &str = "this library's devices table has no membership columns (made before them): \
    on every device, `ALTER TABLE devices ADD COLUMN cert_sha256 TEXT; ALTER TABLE devices ADD COLUMN addresses TEXT; \
    ALTER TABLE devices ADD COLUMN revoked_at TEXT; SELECT sdsync_track('devices', 'shared');` (with the extension loaded)";
