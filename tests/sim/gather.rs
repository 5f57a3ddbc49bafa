//! Pages applied together, as the daemon does (`Daemon::take`,
//! `sqlstore::gather`), on a third of the devices.
//!
//! ```ignore
//! if sim.gathers(&packet) {
//!     sim.gathered(packet)?; // it and the pages due behind it, one transaction
//! }
//! ```
//!
//! A device that gathers, receiving a page of another origin, opens one
//! library transaction for it and for the packets due to it right behind, as
//! long as they are pages of other origins (at most [`AT_MOST`]); what they
//! lead to is held until the transaction commits. Interrupts fall inside the
//! gathered transaction too: it is rolled back, and the device starts over
//! with the pages' peers (`Node::resync`), as the daemon does.

use std::collections::BTreeSet;

use sdsync_syncer::proto::message::{Payload, decode};

use super::{Packet, Sim};

/// Pages in one gathered transaction at most (the daemon's window is 8).
const AT_MOST: usize = 8;

impl Sim {
    /// Whether `p` starts a gathered transaction: a page of another origin,
    /// to a device that gathers (by seed and index, no random draw).
    pub(super) fn gathers(&self, p: &Packet) -> bool {
        let mix = self.seed.wrapping_add(p.to as u64);
        mix % 3 == 1 && self.foreign_page(p)
    }

    /// Applies `first` and the pages due behind it in one transaction.
    pub(super) fn gathered(&mut self, first: Packet) -> Result<(), String> {
        let d = first.to;
        self.devices[d].store.gather();
        let mut held = Vec::new();
        let mut peers = BTreeSet::new();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(p) = next.take() {
            peers.insert(self.devices[p.from].id.clone());
            self.clock(d);
            taken += 1;
            match self.receive(d, &p.bytes)? {
                Some(Ok(out)) if self.devices[d].store.gathering() => held.extend(out),
                Some(out) => self.handle(d, out),
                None => {}
            }
            if taken < AT_MOST && self.devices[d].store.gathers() {
                next = self.next_page_to(d);
                self.report.gathered += u64::from(next.is_some());
            }
        }
        let dev = &mut self.devices[d];
        match dev.store.settle() {
            Ok(()) => self.handle(d, Ok(held)),
            Err(e) => {
                self.report.abandoned += 1;
                self.trace
                    .push(format!("t={} d{d}: gathered pages lost: {e}", self.now));
                for peer in peers {
                    let dev = &mut self.devices[d];
                    let out = dev.node.resync(&peer, &dev.store);
                    self.handle(d, out);
                }
            }
        }
        Ok(())
    }

    /// The next packet due to `d`, taken from the network if it is a page of
    /// another origin (a packet on a cut link is dropped, as `deliver` does).
    fn next_page_to(&mut self, d: usize) -> Option<Packet> {
        loop {
            let i = self
                .packets
                .iter()
                .enumerate()
                .filter(|(_, p)| p.to == d && p.at <= self.now)
                .min_by_key(|(_, p)| (p.at, p.id))
                .map(|(i, _)| i)?;
            let p = &self.packets[i];
            if !self.link_up(p.from, p.to) {
                self.packets.swap_remove(i);
                continue;
            }
            return self.foreign_page(p).then(|| self.packets.swap_remove(i));
        }
    }

    fn foreign_page(&self, p: &Packet) -> bool {
        matches!(decode(&p.bytes), Ok(env)
            if matches!(&env.payload, Payload::Page { origin, .. } if *origin != self.devices[p.to].id))
    }
}
