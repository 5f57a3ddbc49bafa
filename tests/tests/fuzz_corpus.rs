//! Replays the fuzzers' kept inputs (`fuzz/corpus/*`) and every crash they found
//! (`fuzz/regressions/*`) as ordinary tests, with the same oracle.

use sdsync_syncer::proto::message::{decode, encode};
use sdsync_tests::root;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let dir = root().join("fuzz").join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("read corpus file");
                out.push((path.display().to_string(), bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn sql_ops_corpus_converges() {
    let mut inputs = inputs("sql_ops");
    // A few fixed sequences, so the test means something without a corpus.
    for seed in 0u8..16 {
        let bytes: Vec<u8> = (0..64u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(seed.wrapping_mul(11)))
            .collect();
        inputs.push((format!("fixed {seed}"), bytes));
    }
    for (name, bytes) in inputs {
        if let Err(broken) = sdsync_tests::fuzz_ops::run(&bytes, None) {
            panic!("{name}: {broken}");
        }
    }
}

#[test]
fn wire_corpus_decodes_stably() {
    for (name, bytes) in inputs("wire") {
        if let Ok(envelope) = decode(&bytes) {
            let again = encode(&envelope);
            let back = decode(&again).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(encode(&back), again, "{name}");
        }
    }
}
