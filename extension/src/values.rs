//! Column values between SQLite and the JSON of `sdsync_changes.data`, exactly.
//!
//! ```ignore
//! assert_eq!(to_json(&Value::Integer(3)), serde_json::json!(3));
//! assert_eq!(to_json(&Value::Real(f64::INFINITY)), serde_json::json!({"$real": "inf"}));
//! assert_eq!(to_json(&Value::Blob(vec![0xab])), serde_json::json!({"$blob": "ab"}));
//! ```
//!
//! Every value SQLite can store travels byte-exactly (the README lists the forms):
//!
//! | SQLite value | JSON |
//! |---|---|
//! | NULL | `null` |
//! | INTEGER (all of i64) | a number without fraction or exponent |
//! | finite REAL (incl. -0.0, subnormals) | a number with `.` or `e` (shortest form that reads back to the same bits) |
//! | REAL ±Infinity | `{"$real": "inf"}`, `{"$real": "-inf"}` |
//! | TEXT, UTF-8 without control characters other than tab, LF, CR | a string |
//! | other TEXT (invalid UTF-8, NUL, other control characters) | `{"$text": "<hex of the bytes>"}` |
//! | BLOB | `{"$blob": "<hex>"}` |
//!
//! NaN never appears: SQLite stores NaN as NULL. Control characters go as hex so
//! that no value's JSON is more than twice its size (JSON escapes `\u0000` in six
//! bytes), which bounds a change by [`sdsync_core::limits::MAX_ROW_BYTES`].
//!
//! On the way in, any value is accepted in any column: both devices apply the
//! same column affinity to the same value and store the same thing (a value
//! SQLite stored on the writer is one it stores on the reader), and a STRICT
//! table, NOT NULL or CHECK constraint is enforced by SQLite itself on apply.
//! Refusing values by affinity would refuse what SQLite accepted on the writer.

use serde_json::Value as Json;

use sdsync_core::limits::MAX_ROW_BYTES;
use sdsync_core::schema::quote_ident;

use crate::catalog::Catalog;
use crate::ffi::{Db, Value};

/// A column value as JSON.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Integer(v) => Json::from(*v),
        Value::Real(v) if v.is_finite() => {
            serde_json::Number::from_f64(*v).map_or(Json::Null, Json::Number)
        }
        Value::Real(v) if v.is_nan() => Json::Null,
        Value::Real(v) => tagged("$real", if *v > 0.0 { "inf" } else { "-inf" }.into()),
        Value::Text(s) if plain(s) => Json::String(s.clone()),
        Value::Text(s) => tagged("$text", hex(s.as_bytes())),
        Value::RawText(b) => tagged("$text", hex(b)),
        Value::Blob(b) => tagged("$blob", hex(b)),
    }
}

/// Appends a column value's JSON text to `out`, exactly as `to_json(value)`
/// prints, without building the JSON value for the common kinds (a sender
/// writes every column of every change it serves).
pub fn write_json(out: &mut Vec<u8>, value: &Value) {
    // Writing to a `Vec` cannot fail, nor can serializing a string, an
    // integer, a finite float or a `Json`: the results carry nothing.
    let _ = match value {
        Value::Null => {
            out.extend_from_slice(b"null");
            Ok(())
        }
        Value::Integer(v) => serde_json::to_writer(&mut *out, v),
        Value::Real(v) if v.is_finite() => serde_json::to_writer(&mut *out, v),
        Value::Text(s) if plain(s) => serde_json::to_writer(&mut *out, s.as_str()),
        other => serde_json::to_writer(&mut *out, &to_json(other)),
    };
}

/// A JSON value as a column value. The error says what was found instead.
pub fn from_json(json: &Json) -> Result<Value, &'static str> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(_) => return Err("a boolean (SQLite has none: send 0 or 1)"),
        Json::Number(n) => match n.as_i64() {
            Some(i) if !n.is_f64() => Value::Integer(i),
            _ => Value::Real(n.as_f64().ok_or("a number out of range")?),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Object(map) => {
            let mut entries = map.iter();
            match (entries.next(), entries.next()) {
                (Some((tag, Json::String(body))), None) => tagged_value(tag, body)?,
                _ => return Err("an object that is not one of {\"$blob\"|\"$text\"|\"$real\": …}"),
            }
        }
        Json::Array(_) => return Err("an array"),
    })
}

/// Decodes `{"$blob": hex}`, `{"$text": hex}` and `{"$real": "inf"|"-inf"}`.
fn tagged_value(tag: &str, body: &str) -> Result<Value, &'static str> {
    match tag {
        "$blob" => Ok(Value::Blob(unhex(body).ok_or("a $blob that is not hex")?)),
        "$text" => {
            let bytes = unhex(body).ok_or("a $text that is not hex")?;
            Ok(match String::from_utf8(bytes) {
                Ok(s) => Value::Text(s),
                Err(e) => Value::RawText(e.into_bytes()),
            })
        }
        "$real" => match body {
            "inf" => Ok(Value::Real(f64::INFINITY)),
            "-inf" => Ok(Value::Real(f64::NEG_INFINITY)),
            _ => Err("a $real other than \"inf\" or \"-inf\""),
        },
        _ => Err("an object with an unknown tag (expected $blob, $text or $real)"),
    }
}

/// The error for a row no peer could receive (`sdsync_refuse_row(table, rid)`,
/// called by the capture triggers only then, see `limits::size_check`): a REAL
/// uuid, or a row over [`MAX_ROW_BYTES`]. It names the table, the row's uuid and
/// its largest column, so the writer knows what to change.
pub fn unsyncable_row(db: Db, table: &str, rid: i64) -> String {
    let found = (|| -> Result<(Value, String, i64, String, i64), String> {
        let catalog = Catalog::load(db).map_err(|e| e.to_string())?;
        let spec = catalog
            .by_name(table)
            .ok_or_else(|| format!("table {table} is not tracked"))?;
        let names: Vec<&str> = std::iter::once(spec.uuid_column.as_str())
            .chain(spec.columns.iter().map(|c| c.name.as_str()))
            .collect();
        let sizes: Vec<String> = names
            .iter()
            .map(|n| format!("coalesce(length(CAST({} AS BLOB)), 0)", quote_ident(n)))
            .collect();
        let mut stmt = db
            .prepare(&format!(
                "SELECT {}, {} FROM {} WHERE {} = ?1",
                quote_ident(&spec.uuid_column),
                sizes.join(", "),
                quote_ident(&spec.name),
                quote_ident(&spec.local_id)
            ))
            .map_err(|e| e.to_string())?;
        stmt.bind_all(&[Value::Integer(rid)])
            .map_err(|e| e.to_string())?;
        if !stmt.step().map_err(|e| e.to_string())? {
            return Err(format!("row {rid} not found"));
        }
        let sizes: Vec<i64> = (1..=names.len()).map(|i| stmt.int(i)).collect();
        let (largest, size) = names
            .iter()
            .zip(&sizes)
            .max_by_key(|(_, s)| **s)
            .map_or(("?", 0), |(n, s)| (*n, *s));
        Ok((
            stmt.value(0),
            spec.uuid_column.clone(),
            sizes.iter().sum(),
            largest.to_string(),
            size,
        ))
    })();
    match found {
        Ok((uuid @ Value::Real(_), column, ..)) => format!(
            "sdsync: table {table}: the uuid column {column} of a synced row must hold TEXT, \
             BLOB or INTEGER, not the REAL {uuid}; refused so that no peer is ever sent a \
             change it cannot apply"
        ),
        Ok((uuid, _, total, largest, size)) => format!(
            "sdsync: row {uuid} of table {table} is {total} bytes (column {largest}: {size} \
             bytes), over the {MAX_ROW_BYTES}-byte limit of a synced row; refused so that no \
             peer is ever sent a change it cannot receive (keep large content in files, or \
             in a column declared local in sdsync_track's options)"
        ),
        Err(why) => format!(
            "sdsync: a row of table {table} (local id {rid}) cannot sync: it is a REAL uuid \
             or over the {MAX_ROW_BYTES}-byte limit of a synced row ({why})"
        ),
    }
}

fn tagged(tag: &str, body: String) -> Json {
    let mut map = serde_json::Map::with_capacity(1);
    map.insert(tag.into(), Json::String(body));
    Json::Object(map)
}

/// Text that travels as a JSON string: escaping it at most doubles its size.
fn plain(s: &str) -> bool {
    !s.bytes()
        .any(|b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: Value) {
        let text = to_json(&v).to_string();
        let back = from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        match (&v, &back) {
            (Value::Real(a), Value::Real(b)) => assert_eq!(a.to_bits(), b.to_bits(), "{text}"),
            _ => assert_eq!(v, back, "{text}"),
        }
    }

    #[test]
    fn every_kind_of_value_round_trips_exactly() {
        for v in [
            Value::Null,
            Value::Integer(i64::MIN),
            Value::Integer(i64::MAX),
            Value::Integer(0),
            Value::Real(0.1 + 0.2),
            Value::Real(-0.0),
            Value::Real(1.0),
            Value::Real(1e300),
            Value::Real(f64::MIN_POSITIVE),
            Value::Real(5e-324),
            Value::Real(f64::MAX),
            Value::Real(f64::INFINITY),
            Value::Real(f64::NEG_INFINITY),
            Value::Text(String::new()),
            Value::Text("a\0b".into()),
            Value::Text("tab\there\nline \"q\" \\ 😀".into()),
            Value::RawText(vec![0xff, 0x00, 0xfe]),
            Value::Blob(vec![]),
            Value::Blob(vec![0, 1, 0xff]),
        ] {
            round_trip(v);
        }
    }

    #[test]
    fn written_json_is_the_printed_json() {
        // Texts written directly and texts that go through `to_json`.
        let mut plains = [0; 2];
        for v in [
            Value::Null,
            Value::Integer(i64::MIN),
            Value::Integer(-7),
            Value::Real(0.1 + 0.2),
            Value::Real(-0.0),
            Value::Real(1.0),
            Value::Real(5e-324),
            Value::Real(1e300),
            Value::Real(f64::INFINITY),
            Value::Real(f64::NAN),
            Value::Text(String::new()),
            Value::Text("a\0b".into()),
            Value::Text("tab\there\nline \"q\" \\ 😀 \u{2028} é".into()),
            Value::Text("with a control \u{7f}".into()),
            Value::RawText(vec![0xff, 0x00]),
            Value::Blob(vec![0, 1, 0xff]),
        ] {
            let mut out = Vec::new();
            write_json(&mut out, &v);
            if let Value::Text(t) = &v {
                plains[usize::from(plain(t))] += 1;
            }
            assert_eq!(
                String::from_utf8(out).unwrap(),
                to_json(&v).to_string(),
                "{v:?}"
            );
        }
    }

    #[test]
    fn the_json_forms_are_the_documented_ones() {
        assert_eq!(to_json(&Value::Real(1.0)).to_string(), "1.0");
        assert_eq!(to_json(&Value::Real(-0.0)).to_string(), "-0.0");
        assert_eq!(
            to_json(&Value::Real(f64::NEG_INFINITY)).to_string(),
            r#"{"$real":"-inf"}"#
        );
        assert_eq!(to_json(&Value::Real(f64::NAN)), Json::Null);
        assert_eq!(
            to_json(&Value::Text("a\0".into())).to_string(),
            r#"{"$text":"6100"}"#
        );
        assert_eq!(
            to_json(&Value::RawText(vec![0xff])).to_string(),
            r#"{"$text":"ff"}"#
        );
        for bad in [
            r#"{"$real":"nan"}"#,
            r#"{"$blob":"f"}"#,
            r#"{"$x":"00"}"#,
            "[1]",
            "true",
        ] {
            assert!(
                from_json(&serde_json::from_str(bad).unwrap()).is_err(),
                "{bad}"
            );
        }
    }
}
