//! The two showcases of the `sdsync` binary, kept out of the library's API:
//! `sdsync demo` (three devices over real QUIC) and `sdsync bench` (capture and
//! apply against plain SQLite).
//!
//! ```text
//! sdsync demo --dir /tmp/sdsync-demo
//! sdsync bench --rows 100000 --runs 3
//! ```

pub mod bench;
pub mod demo;
mod scratch;
