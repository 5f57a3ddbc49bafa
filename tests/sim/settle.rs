//! The end of a run: the network heals and runs without faults until nothing
//! moves and every device holds the same.
//!
//! ```ignore
//! sim.chaos(steps)?;
//! sim.settle()?; // then `check`
//! ```

use sdsync_syncer::library::digest;
use sdsync_syncer::proto::store::Store;

use super::Sim;

impl Sim {
    /// Heals everything and drives the network without faults to quiescence.
    pub(super) fn settle(&mut self) -> Result<(), String> {
        self.upgrade_all()?;
        let before = self.links();
        self.faults = false;
        self.cut.clear();
        for d in &mut self.devices {
            d.up = true;
            d.joined = true;
        }
        self.relink(&before);
        let start = self.now;
        let mut quiet_rounds = 0;
        while self.now - start < 120_000 {
            let watermarks = self.all_watermarks();
            let data = self.report.data_msgs;
            for _ in 0..50 {
                self.now += 10;
                self.deliver()?;
                self.tick_all();
            }
            // Hellos never stop; quiet means a round without pulls or pages.
            let quiet = self.report.data_msgs == data && self.all_watermarks() == watermarks;
            // The simulated user resolves the conflicts status shows, also
            // when the devices agree (a restored device's own change may be
            // quarantined everywhere, its own copy included).
            if quiet && self.resolve_conflicts()? {
                quiet_rounds = 0;
                continue;
            }
            if quiet && self.converged() {
                quiet_rounds += 1;
                if quiet_rounds >= 3 {
                    self.report.settle_ms = self.now - start;
                    return Ok(());
                }
            } else {
                quiet_rounds = 0;
            }
        }
        Err(format!(
            "no quiescence within 120 s of virtual time ({} packets in flight)\n{}\nlast events:\n{}",
            self.packets.len(),
            self.unsettled(),
            self.trace.join("\n")
        ))
    }

    fn all_watermarks(&self) -> Vec<Vec<(String, i64)>> {
        self.devices
            .iter()
            .map(|d| d.store.watermarks().unwrap_or_default())
            .collect()
    }

    fn converged(&self) -> bool {
        let first = digest(&self.devices[0].store.lib.conn).ok();
        self.devices
            .iter()
            .all(|d| digest(&d.store.lib.conn).ok() == first)
    }
}
