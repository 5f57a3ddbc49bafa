//! SQL sequences against the extension with a convergence oracle
//! (`sdsync_tests::fuzz_ops`). The extension is loaded from `$SDSYNC_FUZZ_EXT`
//! (an instrumented build, see the README), else from `target/release`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn extension() -> Option<&'static PathBuf> {
    static EXT: OnceLock<Option<PathBuf>> = OnceLock::new();
    EXT.get_or_init(|| {
        let ext = std::env::var_os("SDSYNC_FUZZ_EXT").map(PathBuf::from);
        if let Some(path) = &ext {
            sdsync_tests::fuzz_ops::pin_extension(path).expect("load the instrumented extension");
        }
        ext
    })
    .as_ref()
}

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = sdsync_tests::fuzz_ops::run(data, extension().map(PathBuf::as_path)) {
        panic!("{broken}");
    }
});
