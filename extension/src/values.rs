//! Column values between SQLite and the JSON of `sdsync_changes.data`.
//!
//! ```ignore
//! assert_eq!(to_json(&Value::Integer(3)), serde_json::json!(3));
//! assert_eq!(to_json(&Value::Blob(vec![0xab])), serde_json::json!({"$blob": "ab"}));
//! ```
//!
//! JSON numbers keep SQLite's integer/real distinction (serde_json prints floats so
//! they read back exactly); blobs travel as `{"$blob": "<hex>"}`. On the way in,
//! a value must fit the column's affinity, so a peer on a different schema gets an
//! error instead of silently storing text in an integer column.

use serde_json::Value as Json;

use sdsync_core::schema::Affinity;

use crate::ffi::Value;

/// A column value as JSON.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Integer(v) => Json::from(*v),
        Value::Real(v) => serde_json::Number::from_f64(*v).map_or(Json::Null, Json::Number),
        Value::Text(s) => Json::String(s.clone()),
        Value::Blob(b) => serde_json::json!({ "$blob": hex(b) }),
    }
}

/// A JSON value as a column value, checked against the column's affinity. The error
/// says what was expected.
pub fn from_json(json: &Json, affinity: Affinity) -> Result<Value, &'static str> {
    let value = match json {
        Json::Null => return Ok(Value::Null),
        Json::Bool(_) => return Err("a boolean (SQLite has none: send 0 or 1)"),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64().ok_or("a number out of range")?),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Object(map) => match (map.len(), map.get("$blob")) {
            (1, Some(Json::String(h))) => Value::Blob(unhex(h).ok_or("a $blob that is not hex")?),
            _ => return Err("an object (only {\"$blob\": hex} is a value)"),
        },
        Json::Array(_) => return Err("an array"),
    };
    let fits = matches!(
        (affinity, &value),
        (
            Affinity::Integer | Affinity::Real,
            Value::Integer(_) | Value::Real(_)
        ) | (Affinity::Text, Value::Text(_) | Value::Blob(_))
            | (Affinity::Numeric | Affinity::Blob, _)
    );
    if fits {
        Ok(value)
    } else {
        Err(match affinity {
            Affinity::Integer => "a value of the wrong type for an INTEGER column",
            Affinity::Real => "a value of the wrong type for a REAL column",
            _ => "a value of the wrong type for a TEXT column",
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}
