//! The settings of the syncer's connection to the library, each measured.
//!
//! ```no_run
//! let conn = rusqlite::Connection::open("database.db").unwrap();
//! sdsync_syncer::sqlstore::tune(&conn).unwrap(); // needs the extension loaded
//! ```

use std::time::Duration;

use rusqlite::Connection;

/// How long one attempt to take the library's write lock waits. Short: the
/// daemon's single task must not stall its links for long; a page that found the
/// database busy is retried by the protocol with backoff.
pub const APPLY_BUSY_TIMEOUT: Duration = Duration::from_millis(1000);

/// The syncer's page cache, in KiB (negative: a size, not a page count).
/// SQLite's default 2 MB makes a large backfill read and write the same index
/// pages through the kernel again and again.
const SYNCER_CACHE_KIB: i64 = -65_536;

/// WAL pages at which the syncer's own commits checkpoint (40 MB; SQLite's
/// default is 1,000). A backfill rewrites the same index pages in many
/// commits: checkpointing a tenth as often copies each of them to the
/// database file far fewer times (a million-entry backfill: 22.6 s → 18.4 s;
/// 30,000 pages gave 16.9 s for a 120 MB WAL). Readers are not held up by a
/// larger WAL, and apps' own commits still checkpoint at 1,000.
const SYNCER_CHECKPOINT_PAGES: i64 = 10_000;

/// The WAL file is cut back to this size (bytes) when it restarts, so the
/// larger WAL above does not stay on disk.
const SYNCER_WAL_LIMIT: i64 = 16 * 1024 * 1024;

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;

/// Sets up a library connection for the syncer's work: applying pages,
/// reading them and checkpointing (`sdsync bench` applies with it too).
pub fn tune(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(APPLY_BUSY_TIMEOUT)?;
    // Two statements per reference between tracked tables (`ahead`) and the
    // store's own: beyond rusqlite's default of 16 they would be prepared
    // again for every page.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "cache_size", SYNCER_CACHE_KIB)?;
    conn.query_row(
        "SELECT sdsync_autocheckpoint(?1)",
        [SYNCER_CHECKPOINT_PAGES],
        |_| Ok(()),
    )?;
    // The syncer paces app writers; its own commits (changes it issues
    // again after a restore) must never wait for its own peers.
    conn.query_row("SELECT sdsync_pace(0)", [], |_| Ok(()))?;
    conn.pragma_update(None, "journal_size_limit", SYNCER_WAL_LIMIT)?;
    // Each statement apply runs inside a transaction keeps a statement
    // journal (the tables have triggers and constraints). In a file, once one
    // statement's journal passed 64 KiB it stayed a file for the rest of the
    // transaction and every page written cost a `pwrite`: a quarter of
    // apply's time (`perf` of `sdsync bench`). In memory it lives as long as
    // one statement, holding the pages that statement changed. Sorts on this
    // connection stay in memory too: the page reads follow indexes; re-tracking
    // a table loads its versions into memory anyway; retrying kept changes
    // sorts all of `sdsync_kept` by HLC (it loads those of known tables), which
    // a spill to a file used to bound. The syncer makes no temporary tables.
    conn.pragma_update(None, "temp_store", "MEMORY")
}
