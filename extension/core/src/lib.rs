//! Pure logic shared by the sdsync extension (`libsdsync.so`) and the syncer: the
//! hybrid logical clock, identities, table specs and capture triggers, and the merge
//! rules. Nothing here links SQLite, so both a `cdylib` that SQLite loads and a
//! binary that bundles SQLite can use it (STACK-NOTES.md: one `libsqlite3-sys` per
//! link).
//!
//! ```
//! use sdsync_core::hlc::Hlc;
//! assert!(Hlc::from_parts(5, 0).send(4) > Hlc::from_parts(5, 0));
//! ```

pub mod hlc;
pub mod ids;
pub mod limits;
pub mod merge;
pub mod pace;
pub mod schema;
pub mod triggers;
