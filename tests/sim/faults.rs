//! Faults of the world around a syncer step: an app committing between two of
//! the step's reads, and a page whose apply fails halfway on a connection that
//! is used again right after.
//!
//! ```ignore
//! let meddler = Meddler::new(&dev.store, 2, txn, false); // the app commits before the 3rd read
//! dev.node.receive(&bytes, wall, &meddler);
//! ```

use std::cell::{Cell, RefCell};

use sdsync_syncer::library::Change;
use sdsync_syncer::proto::message::QuarantineSummary;
use sdsync_syncer::proto::store::{Quarantined, Retried, Slice, Store, StoreError};
use sdsync_syncer::sqlstore::SqlStore;

use super::writes::{Outcome, Txn, run_txn};

/// A [`Store`] that lets the device's app commit one transaction just before
/// the store's `calls`-th use in a step, as a real app may at any moment (the
/// syncer's reads of one step are not one snapshot). The app writes on the
/// syncer's own connection (the simulated databases are `:memory:`), so the
/// engine sees it through `total_changes`; another connection's commit
/// (`data_version`) is covered by the tests over files, not here.
pub(super) struct Meddler<'a> {
    inner: &'a SqlStore,
    /// Whether the calls added in session 19 count toward the app's turn
    /// ([`super::Schedules::Shifted`]).
    shifted: bool,
    calls: Cell<u32>,
    txn: RefCell<Option<Txn>>,
    /// What the app's transaction did, once it ran.
    pub ran: RefCell<Option<(Txn, Result<Outcome, String>)>>,
}

impl<'a> Meddler<'a> {
    pub fn new(inner: &'a SqlStore, calls: u32, txn: Txn, shifted: bool) -> Self {
        Self {
            inner,
            shifted,
            calls: Cell::new(calls),
            txn: RefCell::new(Some(txn)),
            ran: RefCell::new(None),
        }
    }

    /// Runs the app's transaction when its turn came; then the real store.
    fn inner(&self) -> &SqlStore {
        let left = self.calls.get();
        self.calls.set(left.saturating_sub(1));
        if left == 0
            && let Some(txn) = self.txn.borrow_mut().take()
        {
            let outcome = run_txn(self.inner, &txn);
            *self.ran.borrow_mut() = Some((txn, outcome));
        }
        self.inner
    }

    /// A call that touches `sync.db` only: counted in shifted schedules.
    fn sync_only(&self) -> &SqlStore {
        if self.shifted {
            self.inner()
        } else {
            self.inner
        }
    }
}

impl Store for Meddler<'_> {
    fn device(&self) -> Result<String, StoreError> {
        self.inner().device()
    }

    fn watermarks(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.inner().watermarks()
    }

    fn hlc(&self) -> Result<i64, StoreError> {
        self.inner().hlc()
    }

    fn slice(
        &self,
        origin: &str,
        after: i64,
        rows: usize,
        bytes: usize,
    ) -> Result<Slice, StoreError> {
        self.inner().slice(origin, after, rows, bytes)
    }

    fn count_above(&self, origin: &str, after: i64) -> Result<i64, StoreError> {
        self.inner().count_above(origin, after)
    }

    fn apply(
        &self,
        peer: &str,
        changes: &[sdsync_syncer::library::Change],
        complete: Option<(&str, i64)>,
    ) -> Result<Vec<Quarantined>, StoreError> {
        self.inner().apply(peer, changes, complete)
    }

    fn sweep(&self) -> Result<(), StoreError> {
        self.inner().sweep()
    }

    fn retry_quarantined(&self) -> Result<Retried, StoreError> {
        self.inner().retry_quarantined()
    }

    fn quarantine_summary(&self) -> Result<Vec<QuarantineSummary>, StoreError> {
        self.inner().quarantine_summary()
    }

    fn peer_quarantine(&self, peer: &str, summary: &[QuarantineSummary]) -> Result<(), StoreError> {
        self.inner().peer_quarantine(peer, summary)
    }

    fn restored(&self) -> Result<Option<i64>, StoreError> {
        self.inner().restored()
    }

    fn newest_of(&self, origin: &str, n: usize) -> Result<Vec<(i64, i64)>, StoreError> {
        self.inner().newest_of(origin, n)
    }

    // These calls only touch `sync.db` and count toward the app's turn only
    // in shifted schedules (unlike the older `sync.db` calls, kept as they
    // were): counted, they move the app's commit in almost every step, so
    // every seed runs another schedule than before session 19.
    fn note_points(&self, peer: &str, origin: &str, changes: &[Change]) -> Result<(), StoreError> {
        self.sync_only().note_points(peer, origin, changes)
    }

    fn relayed(&self, origin: &str) -> Result<Option<i64>, StoreError> {
        self.sync_only().relayed(origin)
    }

    fn reclaiming_here(&self, origin: &str) -> Result<(), StoreError> {
        self.sync_only().reclaiming_here(origin)
    }

    fn note_renumbered(&self, base: i64) -> Result<(), StoreError> {
        self.sync_only().note_renumbered(base)
    }

    fn renumbered(&self) -> Result<Option<i64>, StoreError> {
        self.sync_only().renumbered()
    }

    fn reuses(&self, seq: i64, hlc: i64) -> Result<bool, StoreError> {
        self.inner().reuses(seq, hlc)
    }

    fn outran(&self, seq: i64, hlc: i64) -> Result<bool, StoreError> {
        self.inner().outran(seq, hlc)
    }

    fn announced(&self, peer: &str) -> Result<(i64, i64), StoreError> {
        self.inner().announced(peer)
    }

    fn note_announced(&self, peer: &str, seq: i64, hlc: i64) -> Result<(), StoreError> {
        self.inner().note_announced(peer, seq, hlc)
    }

    fn restamp(&self, floor: i64, hlc: i64) -> Result<i64, StoreError> {
        self.inner().restamp(floor, hlc)
    }

    fn reclaim_all(&self, peers: &[String]) -> Result<(), StoreError> {
        self.inner().reclaim_all(peers)
    }

    fn reclaim_from(&self) -> Result<Vec<String>, StoreError> {
        self.inner().reclaim_from()
    }

    // The calls added in session 21 go to the store uncounted, so every
    // seed keeps the schedule it had (the regression lists replay the
    // schedules that failed); the simulated app never commits between them.
    fn reclaims_from(&self, peer: &str) -> Result<bool, StoreError> {
        self.inner.reclaims_from(peer)
    }

    fn clock(&self) -> Result<(i64, i64), StoreError> {
        self.inner.clock()
    }

    fn note_page_clock(&self, peer: &str, seq: i64, hlc: i64) -> Result<(), StoreError> {
        self.inner.note_page_clock(peer, seq, hlc)
    }

    fn note_restore(&self, device: &str, base: i64) -> Result<(), StoreError> {
        self.inner.note_restore(device, base)
    }

    fn restores(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.inner.restores()
    }

    fn forget_restores(&self) -> Result<(), StoreError> {
        self.inner.forget_restores()
    }

    fn reclaimed(&self, peer: &str) -> Result<(), StoreError> {
        self.inner().reclaimed(peer)
    }

    fn schema(&self) -> Result<Vec<sdsync_syncer::proto::schema::TableLayout>, StoreError> {
        self.inner().schema()
    }

    fn peer_schema(&self, peer: &str, mismatches: &[String]) -> Result<(), StoreError> {
        self.inner().peer_schema(peer, mismatches)
    }

    fn reverify(&self, restored: &str) -> Result<(), StoreError> {
        self.inner().reverify(restored)
    }

    fn reported(&self, origin: &str) -> Result<i64, StoreError> {
        self.inner().reported(origin)
    }

    fn report(&self, origin: &str, seq: i64) -> Result<Option<i64>, StoreError> {
        self.inner().report(origin, seq)
    }

    fn dead_letter(
        &self,
        peer: &str,
        cause: &str,
        what: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.inner().dead_letter(peer, cause, what, reason)
    }
}

/// Makes every statement on the library connection fail with SQLITE_INTERRUPT
/// after `steps` progress callbacks (one per 64 VM instructions): a page then
/// fails halfway through its apply, is rolled back, and the same connection
/// (with whatever the extension cached) serves the next step.
pub(super) fn interrupt_after(store: &mut SqlStore, steps: u32) -> Result<(), String> {
    let mut left = steps;
    store
        .lib
        .conn
        .progress_handler(
            64,
            Some(move || {
                left = left.saturating_sub(1);
                left == 0
            }),
        )
        .map_err(|e| e.to_string())
}

/// Removes the handler of [`interrupt_after`].
pub(super) fn no_interrupt(store: &mut SqlStore) -> Result<(), String> {
    store
        .lib
        .conn
        .progress_handler(0, None::<fn() -> bool>)
        .map_err(|e| e.to_string())
}
