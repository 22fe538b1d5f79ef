//! Configuration parsing and validation on arbitrary TOML text.
//!
//! Property: `portcullis::config::parse` never panics; it returns a
//! configuration or errors, and every error points inside the file.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else { return };
    if portcullis_fuzz::touches_special_files(source) {
        return;
    }
    // Relative paths in the file resolve under a directory that does not
    // exist, so no certificate, key or document is really read.
    let path = Path::new("/nonexistent-portcullis-fuzz/portcullis.toml");
    let env = |name: &str| (name == "FUZZ_SECRET").then(|| "0123456789abcdef0123456789abcdef".to_owned());
    if let Err(errors) = portcullis::config::parse(path, source, env) {
        let lines = source.lines().count().max(1);
        for error in &errors.0 {
            assert!(error.line <= lines + 1, "error line {} outside a {lines}-line file: {error:?}", error.line);
            assert!(!error.message.is_empty(), "{error:?}");
        }
    }
});
