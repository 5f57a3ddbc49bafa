//! References travel as the referenced row's uuid and are mapped back to the local
//! id on apply; a missing referenced row is reported so the change parks.
//!
//! ```ignore
//! match self.resolve(spec, values, mask)? {
//!     Ok(resolved) => { /* local ids in place of uuids */ }
//!     Err(parent) => { /* park, waiting for `parent` */ }
//! }
//! ```

use sdsync_core::schema::TableSpec;

use super::{Engine, Key, RowRef};
use crate::changes::rows;
use crate::ffi::{SqlError, Value};

impl Engine {
    /// Maps reference columns of `mask` from uuids to local values, in place;
    /// `Err` names the first referenced row that does not exist yet.
    pub(super) fn resolve(
        &mut self,
        spec: &TableSpec,
        mut values: Vec<Value>,
        mask: u64,
    ) -> Result<Result<Vec<Value>, RowRef>, SqlError> {
        for (i, col) in spec.columns_in(mask) {
            let Some(r) = &col.reference else { continue };
            if values[i] == Value::Null {
                continue;
            }
            let cached = match &values[i] {
                Value::Text(uuid) => self
                    .tx
                    .refs
                    .get(&(spec.id, i))
                    .and_then(|m| m.get(uuid))
                    .cloned(),
                _ => None,
            };
            let found = match cached {
                Some(local) => Some(local),
                None => {
                    let stmt = self.keyed(Key::Resolve(spec.id, i), || rows::resolve_sql(r))?;
                    stmt.bind_all(std::slice::from_ref(&values[i]))?;
                    let found = if stmt.step()? {
                        Some(stmt.value(0))
                    } else {
                        None
                    };
                    stmt.reset();
                    if let (Some(local), Value::Text(uuid)) = (&found, &values[i]) {
                        self.tx
                            .refs
                            .entry((spec.id, i))
                            .or_default()
                            .insert(uuid.clone(), local.clone());
                    }
                    found
                }
            };
            match found {
                Some(local) => values[i] = local,
                None => {
                    let Some(target) = self.catalog.by_name(&r.table).cloned() else {
                        continue;
                    };
                    return Ok(Err((target, values[i].clone())));
                }
            }
        }
        Ok(Ok(values))
    }
}
