//! The periodic sweep (`Store::sweep`): capture repaired after a schema
//! change the connection that made it left unrepaired, then the extension's
//! own sweep (kept changes retried, parked rows woken); and the fingerprint
//! that tells whether anything changed since a quarantine retry.
//!
//! ```ignore
//! store.sweep()?; // every anti-entropy round
//! ```

use super::SqlStore;
use crate::proto::store::StoreError;

impl SqlStore {
    /// `Store::sweep`: repairs capture after a schema change (see
    /// [`Self::waited_for_repair`]), then lets the extension sweep.
    pub(super) fn sweep_here(&self) -> Result<(), StoreError> {
        // Capture follows schema changes (the WAL hook of the connection that
        // made one repairs at its commit; this covers a host that replaced the
        // hook). Only when the schema moved: inspecting costs a few queries.
        let schema: i64 = self.sql(
            self.lib
                .conn
                .query_row("PRAGMA schema_version", [], |r| r.get(0)),
        )?;
        if self.repaired_at.get() != Some(schema) && self.waited_for_repair(schema) {
            self.sql(
                self.lib
                    .conn
                    .query_row("SELECT sdsync_repair()", [], |_| Ok(())),
            )?;
            self.repaired_at.set(Some(schema));
        }
        let before = self.total_changes()?;
        self.sql(
            self.lib
                .conn
                .execute("INSERT INTO sdsync_changes(op) VALUES ('sweep')", [])
                .map(|_| ()),
        )?;
        self.swept
            .set(self.swept.get() + self.total_changes()? - before);
        Ok(())
    }

    pub(super) fn fingerprint(&self) -> Result<[i64; 3], StoreError> {
        self.sql(self.lib.conn.query_row(
            "SELECT (SELECT schema_version FROM pragma_schema_version), \
                    (SELECT data_version FROM pragma_data_version), total_changes()",
            [],
            |r| Ok([r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? - self.swept.get()]),
        ))
    }

    /// Whether an earlier sweep saw schema version `version` already. The
    /// connection that changed the schema repairs capture at its commit,
    /// knowing what no other connection can (the columns its rebuild
    /// renamed: `sdsync::migrate::copies`); a repair here first, racing it
    /// for the write lock, took a column renamed by an Alembic batch
    /// migration for one dropped and one added, and stamped its values
    /// anew (`alembic_batch_migrations_keep_syncing`, one run of two). So
    /// the syncer repairs only at the second sweep that finds a change
    /// unrepaired (5–10 s after it with the default anti-entropy interval),
    /// what that connection left undone: a host that replaced the WAL
    /// hook, or a repair that kept failing. Counted in sweeps, not seconds:
    /// the simulation drives sweeps in virtual time.
    fn waited_for_repair(&self, version: i64) -> bool {
        self.schema_seen.replace(Some(version)) == Some(version)
    }

    fn total_changes(&self) -> Result<i64, StoreError> {
        self.sql(
            self.lib
                .conn
                .prepare_cached("SELECT total_changes()")
                .and_then(|mut s| s.query_row([], |r| r.get(0))),
        )
    }
}
