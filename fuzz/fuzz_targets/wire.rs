//! The wire decoder on arbitrary bytes: it never panics, and whatever it accepts
//! re-encodes to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdsync_syncer::proto::message::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = decode(data) {
        let bytes = encode(&envelope);
        let again = decode(&bytes).expect("an encoded message decodes");
        assert_eq!(encode(&again), bytes, "re-encoding is stable");
    }
});
