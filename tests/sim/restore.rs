//! Restores in the simulation: a device's database is backed up while it runs,
//! and later the device is stopped, its database restored from that backup
//! and started again. Half the restores keep `sync.db` (the README's
//! procedure for a database restore); the other half restore the whole
//! folder, `sync.db` with it (its record of the device's own clock goes back
//! too, so only peers can tell), and the app writes a burst before the syncer
//! meets any peer: often more than was lost, so the restored device reuses
//! numbers its peers hold for lost changes.
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

use super::{Restores, Sim};

/// How long a whole-folder restore takes, in virtual milliseconds (see
/// [`Sim::restore`]).
const RESTORE_MS: u64 = 2_000;

/// A backup of a device's folder: its database and `sync.db`, and whether
/// its schema was upgraded then.
pub(super) struct Snapshot {
    lib: Connection,
    sync: Connection,
    upgraded: bool,
}

impl Sim {
    /// Takes a backup of device `d`'s folder (replacing an older one).
    pub(super) fn back_up(&mut self, d: usize) -> Result<(), String> {
        let err = |e: rusqlite::Error| format!("device {d} backing up: {e}");
        let dev = &self.devices[d];
        let mut lib = Connection::open_in_memory().map_err(err)?;
        copy_into(&dev.store.lib.conn, &mut lib).map_err(err)?;
        let mut sync = Connection::open_in_memory().map_err(err)?;
        copy_into(&dev.store.sync, &mut sync).map_err(err)?;
        let upgraded = dev.upgraded;
        self.devices[d].backup = Some(Snapshot {
            lib,
            sync,
            upgraded,
        });
        self.trace.push(format!("t={} d{d}: backed up", self.now));
        Ok(())
    }

    /// Stops device `d`, restores its database (or its whole folder) from its
    /// backup (if it has one) and opens the store again, as a restart of the
    /// syncer would.
    pub(super) fn restore(&mut self, d: usize) -> Result<(), String> {
        let Some(backup) = self.devices[d].backup.take() else {
            return Ok(());
        };
        // Whole-folder restores only when asked (`Restores::Whole`): one
        // seed in 1,000 still diverges (see the README, "Backup and restore").
        // Without it no draw is made, so seeds replay as before.
        let whole = self.restores == Restores::Whole && self.rng.chance(50);
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
        if whole {
            // See below: the restore takes time, and the syncer then starts
            // (opening the store again) on the clock of that moment.
            self.now += RESTORE_MS;
        }
        self.clock(d);
        let mut dev = self.devices.remove(d);
        let mut restored = copy_into(&backup.lib, &mut dev.store.lib.conn);
        if whole && restored.is_ok() {
            restored = copy_into(&backup.sync, &mut dev.store.sync);
        }
        let reopened = dev.store.reopened().map_err(|e| e.to_string());
        dev.store = match (restored.map_err(|e| e.to_string()), reopened) {
            (Ok(()), Ok(store)) => store,
            (Err(e), _) | (_, Err(e)) => return Err(err(e)),
        };
        dev.upgraded = backup.upgraded;
        dev.restored = true;
        dev.backup = Some(backup);
        self.devices.insert(d, dev);
        self.report.restores += 1;
        let what = if whole { "folder" } else { "database" };
        self.trace
            .push(format!("t={} d{d}: {what} restored", self.now));
        if whole {
            // The restore took two seconds (above), well within the clock
            // skew between two devices here (±60 s each): a device whose
            // clock runs far behind its peers' issues its changes from a
            // clock they pushed ahead, and re-issued the very same (seq, HLC)
            // pairs as its lost history until the syncer's store stepped
            // such a clock at each start (`SqlStore::with_clock_stepped`; 3
            // of 250 seeds, 125 s before then). The store was opened again
            // above, as the syncer starts before the apps (README, "Backup
            // and restore"); then the app writes while the syncer has not
            // met a peer yet (a later step).
            self.devices[d].up = true;
            for _ in 0..self.rng.below(12) {
                self.write(d)?;
            }
            self.devices[d].up = false;
        }
        Ok(())
    }
}

/// Copies a whole database with SQLite's online backup, as the shell's
/// `.backup` and `.restore` do.
fn copy_into(from: &Connection, to: &mut Connection) -> rusqlite::Result<()> {
    Backup::new(from, to)?.run_to_completion(1000, Duration::ZERO, None)
}
