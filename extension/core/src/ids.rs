//! Row and device identities.
//!
//! ```
//! use sdsync_core::ids::uuid_v5;
//! // Two devices that create the tag "Vacation" independently get the same row id,
//! // so the rows merge instead of duplicating.
//! assert_eq!(uuid_v5("tag", "Vacation"), uuid_v5("tag", "Vacation"));
//! assert_ne!(uuid_v5("tag", "Vacation"), uuid_v5("album", "Vacation"));
//! ```

use uuid::Uuid;

/// The largest sequence number a device may issue or claim. A change or watermark
/// beyond it is refused: an applied change of our own origin moves the local
/// sequence past it, and at `i64::MAX` the next local write would overflow
/// (SQLite turns the sum into a REAL, so every later change had the same number).
/// 2^53 also stays exact in JSON and JavaScript; at a million changes a second it
/// lasts 285 years.
pub const MAX_SEQ: i64 = 1 << 53;

/// The fixed namespace under which sdsync derives named namespaces
/// (`sdsync_uuid_v5('tag', …)`). Changing it would change every deterministic
/// id, so it is part of the format.
pub const SDSYNC_NAMESPACE: Uuid = Uuid::from_u128(0x5d5a_7c00_2b1e_4f4b_9a61_0c1e_5d5a_7c00);

/// A UUIDv5 of `name` in `namespace`. The namespace is either a UUID in text
/// form, used as is, or any other text, which names a namespace derived from
/// [`SDSYNC_NAMESPACE`] — so plain SQL can write `sdsync_uuid_v5('tag', name)`.
pub fn uuid_v5(namespace: &str, name: &str) -> String {
    let ns = Uuid::parse_str(namespace)
        .unwrap_or_else(|_| Uuid::new_v5(&SDSYNC_NAMESPACE, namespace.as_bytes()));
    Uuid::new_v5(&ns, name.as_bytes()).hyphenated().to_string()
}

/// A fresh time-ordered UUIDv7 for new rows: ordered ids keep uuid indexes
/// append-mostly, which is cheaper to insert than random v4 ids.
pub fn uuid_v7() -> String {
    Uuid::now_v7().hyphenated().to_string()
}

/// A fresh random identity for a device.
pub fn device_uuid() -> String {
    Uuid::new_v4().hyphenated().to_string()
}

/// Parses a device id as it travels (hyphenated text); the canonical form is
/// what gets stored, so two spellings of one id cannot become two origins.
pub fn parse_device(text: &str) -> Option<String> {
    Uuid::parse_str(text)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_namespace_is_used_as_is() {
        let ns = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"; // RFC 4122 DNS namespace
        assert_eq!(
            uuid_v5(ns, "python.org"),
            "886313e1-3b8a-5372-9b90-0c9aee199e5d"
        );
    }

    #[test]
    fn named_namespace_is_stable() {
        // Pinned: a change here would split every deterministic row in the field.
        let a = uuid_v5("tag", "Vacation");
        assert_eq!(a, uuid_v5("tag", "Vacation"));
        assert_eq!(Uuid::parse_str(&a).map(|u| u.get_version_num()), Ok(5));
    }

    #[test]
    fn v7_ids_are_ordered_and_unique() {
        let a = uuid_v7();
        let b = uuid_v7();
        assert!(a < b, "{a} < {b}");
    }

    #[test]
    fn device_ids_are_canonicalised() {
        let id = "6BA7B810-9DAD-11D1-80B4-00C04FD430C8";
        assert_eq!(
            parse_device(id).as_deref(),
            Some("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
        );
        assert_eq!(parse_device("not-a-uuid"), None);
    }
}
