//! The engine's statement cache: every statement apply runs is prepared once per
//! connection and found again by a small key, so the hot path neither builds nor
//! hashes SQL text.
//!
//! ```ignore
//! let stmt = self.keyed(Key::Update(spec.id, columns), || rows::update_sql(spec, columns))?;
//! ```

use std::hash::Hasher;

use super::Engine;
use crate::ffi::{SqlError, Stmt, Value};

/// What a cached statement is, so the hot path neither builds nor hashes SQL text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Key {
    /// Fixed SQL.
    Sql(&'static str),
    /// Insert into a table with the columns of a mask.
    Insert(i64, u64),
    /// Update the columns of a mask.
    Update(i64, u64),
    /// Delete a row by uuid.
    Delete(i64),
    /// Read a row by local id.
    Select(i64),
    /// Resolve reference column `usize` of a table.
    Resolve(i64, usize),
    /// A row's id and version groups.
    State(i64),
    /// Rows of a table referencing a row through column `usize`.
    Children(i64, usize),
    /// Clear reference column `usize` of a row by local id.
    Unlink(i64, usize),
    /// Rows of a table that parked changes wait for and that exist now.
    Ready(i64),
}

/// FNV-1a: the statement cache is looked up several times per applied change and
/// its keys are a few machine words, for which SipHash is needlessly slow.
#[derive(Default)]
pub(super) struct FastHash(u64);

impl Hasher for FastHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

impl Engine {
    pub(super) fn pragma(&mut self, sql: &'static str) -> Result<i64, SqlError> {
        let stmt = self.stmt(sql)?;
        stmt.bind_all(&[])?;
        let v = if stmt.step()? { stmt.int(0) } else { 0 };
        stmt.reset();
        Ok(v)
    }

    pub(super) fn keyed(
        &mut self,
        key: Key,
        build: impl FnOnce() -> String,
    ) -> Result<&mut Stmt, SqlError> {
        if !self.stmts.contains_key(&key) {
            let stmt = self.db.prepare(&build())?;
            self.stmts.insert(key, stmt);
        }
        // Invariant: inserted just above if it was missing.
        Ok(self.stmts.get_mut(&key).expect("statement cached above"))
    }

    pub(super) fn stmt(&mut self, sql: &'static str) -> Result<&mut Stmt, SqlError> {
        self.keyed(Key::Sql(sql), || sql.to_string())
    }

    pub(super) fn run(&mut self, sql: &'static str, params: &[Value]) -> Result<(), SqlError> {
        self.stmt(sql)?.run(params)
    }

    pub(super) fn run_keyed(
        &mut self,
        key: Key,
        build: impl FnOnce() -> String,
        params: &[Value],
    ) -> Result<(), SqlError> {
        self.keyed(key, build)?.run(params)
    }
}
