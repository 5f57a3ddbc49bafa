//! The engine's statement cache: every statement apply runs is prepared once per
//! connection and found again by a small key, so the hot path neither builds nor
//! hashes SQL text.
//!
//! ```ignore
//! let stmt = self.keyed(Key::Update(spec.id, columns), || rows::update_sql(spec, columns))?;
//! ```

use std::hash::{Hash, Hasher};

use super::Engine;
use crate::ffi::{SqlError, Stmt, Value};

/// What a cached statement is, so the hot path neither builds nor hashes SQL text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Key {
    /// Fixed SQL.
    Sql(SqlText),
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
    /// Which columns of a mask a row holds as the default, not as a value.
    Defaulted(i64, u64),
    /// Rows of a table referencing a row through column `usize`.
    Children(i64, usize),
    /// Clear reference column `usize` of a row by local id.
    Unlink(i64, usize),
    /// Rows of a table that parked changes wait for and that exist now.
    Ready(i64),
}

/// A fixed SQL text, compared and hashed by its address: hashing the text
/// itself (hundreds of bytes, several lookups per change) took 7 % of apply's
/// CPU (`perf` of `sdsync bench`). Two equal texts at different addresses are
/// two keys, which only prepares the statement twice.
#[derive(Clone, Copy, Debug)]
pub(super) struct SqlText(&'static str);

impl PartialEq for SqlText {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for SqlText {}

impl Hash for SqlText {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.0.as_ptr() as usize);
        state.write_usize(self.0.len());
    }
}

/// The hash of rustc's `FxHasher`, a word at a time: the statement cache and
/// the per-transaction maps are looked up several times per applied change,
/// with keys of a few machine words or a uuid, for which SipHash is needlessly
/// slow. Unseeded: uuid keys come from paired devices, and the maps live for
/// one transaction (a page), which bounds what colliding keys could cost.
#[derive(Default)]
pub(super) struct FastHash(u64);

impl Hasher for FastHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.write_u64(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
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
        self.keyed(Key::Sql(SqlText(sql)), || sql.to_string())
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
