//! Restores in the simulation: a device's database is backed up while it runs,
//! and later the device is stopped, its database restored from that backup
//! (`sync.db` kept, as the README's procedure says), and started again.
//!
//! ```ignore
//! sim.back_up(d)?; // like `sqlite3 database.db ".backup …"`, apps and syncer running
//! sim.restore(d)?; // syncer stopped, `.restore …`, syncer started again
//! ```
//!
//! What the device wrote after the backup and no peer took is gone (that is
//! what restoring means); everything a peer took comes back to it, and what it
//! writes after the restore reaches everyone: the usual invariants, with the
//! no-echo check by HLC because the restored device renumbers its changes.
//! A device's backup is dropped when it upgrades its schema: restoring it
//! would be a schema downgrade under a newer app, which is not modelled.

use std::time::Duration;

use rusqlite::Connection;
use rusqlite::backup::Backup;

use super::Sim;

impl Sim {
    /// Takes a backup of device `d`'s database (replacing an older one).
    pub(super) fn back_up(&mut self, d: usize) -> Result<(), String> {
        let err = |e: rusqlite::Error| format!("device {d} backing up: {e}");
        let mut copy = Connection::open_in_memory().map_err(err)?;
        copy_into(&self.devices[d].store.lib.conn, &mut copy).map_err(err)?;
        self.devices[d].backup = Some((copy, self.devices[d].upgraded));
        self.trace.push(format!("t={} d{d}: backed up", self.now));
        Ok(())
    }

    /// Stops device `d`, restores its database from its backup (if it has one)
    /// and opens the store again, as a restart of the syncer would.
    pub(super) fn restore(&mut self, d: usize) -> Result<(), String> {
        let Some((backup, upgraded)) = self.devices[d].backup.take() else {
            return Ok(());
        };
        let err = |e: String| format!("device {d} restoring: {e}");
        // The syncer stops (and records the clock, as the daemon does).
        self.devices[d]
            .store
            .note_clock()
            .map_err(|e| err(e.to_string()))?;
        self.crash(d);
        // Restoring takes longer than any message takes to arrive, and the
        // syncer's connections closed when it stopped: nothing sent to or by
        // the old process arrives after the restart (a page of the lost self
        // arriving at a peer after it served the reclaim would be kept there
        // only, under a number the restored device already renumbered past:
        // seed 5566 of the first run, a model artifact).
        self.packets.retain(|p| p.from != d && p.to != d);
        let mut dev = self.devices.remove(d);
        let restored = copy_into(&backup, &mut dev.store.lib.conn).map_err(|e| e.to_string());
        let reopened = dev.store.reopened().map_err(|e| e.to_string());
        dev.store = match (restored, reopened) {
            (Ok(()), Ok(store)) => store,
            (Err(e), _) | (_, Err(e)) => return Err(err(e)),
        };
        dev.upgraded = upgraded;
        dev.restored = true;
        dev.backup = Some((backup, upgraded));
        self.devices.insert(d, dev);
        self.report.restores += 1;
        self.trace.push(format!("t={} d{d}: restored", self.now));
        Ok(())
    }
}

/// Copies a whole database with SQLite's online backup, as the shell's
/// `.backup` and `.restore` do.
fn copy_into(from: &Connection, to: &mut Connection) -> rusqlite::Result<()> {
    Backup::new(from, to)?.run_to_completion(1000, Duration::ZERO, None)
}
