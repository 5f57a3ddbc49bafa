//! Fuzzing `INSERT INTO sdsync_changes` with arbitrary rows (the fuzz target for
//! applying changes; `cargo fuzz` needs a nightly toolchain this machine lacks, so
//! proptest drives it). Every row either applies or fails with an sdsync error; none
//! panics inside the extension (which would surface as "internal error").
//! `PROPTEST_CASES=20000 cargo test --release -p sdsync-tests --test fuzz_apply` runs longer.

use proptest::prelude::*;
use rusqlite::params;
use sdsync_tests::{Lib, temp_dir};

fn text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("tags".to_string())),
        Just(Some("entries".to_string())),
        Just(Some("upsert".to_string())),
        Just(Some("delete".to_string())),
        Just(Some("00000000-0000-4000-8000-000000000001".to_string())),
        Just(Some(r#"{"canonical_name":"x","color":null}"#.to_string())),
        Just(Some(r#"{"name":"n","kind":"file","size":1,"extension":null,"inode":null,"created_at":null,"modified_at":null,"location_id":"nope","parent_id":null,"content_id":null}"#.to_string())),
        ".{0,40}".prop_map(Some),
    ]
}

fn number() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        Just(None),
        any::<i64>().prop_map(Some),
        (0i64..100).prop_map(Some),
        Just(Some(1_795_305_600_000i64 << 16))
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_change_rows_never_crash(rows in proptest::collection::vec((text(), text(), text(), text(), text(), number(), number(), number()), 1..12)) {
        let lib = Lib::create(&temp_dir("fuzz").join("db.db"));
        for (tbl, pk, op, data, origin, seq, hlc, creates) in rows {
            let r = lib.conn.execute(
                "INSERT INTO sdsync_changes(tbl, pk, op, data, origin, seq, hlc, creates) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![tbl, pk, op, data, origin, seq, hlc, creates],
            );
            if let Err(e) = r {
                let msg = e.to_string();
                prop_assert!(msg.starts_with("sdsync_changes:"), "{msg}");
                prop_assert!(!msg.contains("internal error"), "{msg}");
            }
        }
        let check: String = lib.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        prop_assert_eq!(check, "ok");
    }
}
