//! libinjection's own test files (tests/ of the C repository, 480 files):
//! tokens, folding, SQLi fingerprints and HTML5 tokens, compared with the
//! expected output byte for byte as the C test driver prints it.

use crate::common;

use common::{TEST_FLAGS, print_rust_token, test_files};
use portcullis_libinjection::{Html5Start, fold, html5_tokenize, sqli, tokenize};

fn actual(name: &str, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if name.contains("test-tokens-") {
        for token in tokenize(input, TEST_FLAGS) {
            print_rust_token(&mut out, &token);
        }
    } else if name.contains("test-folding-") {
        for token in fold(input, TEST_FLAGS).tokens() {
            print_rust_token(&mut out, token);
        }
    } else if name.contains("test-sqli-") {
        if let Some(fingerprint) = sqli(input) {
            out.extend_from_slice(fingerprint.as_bytes());
        }
    } else if name.contains("test-html5-") {
        for token in html5_tokenize(input, Html5Start::Data) {
            out.extend_from_slice(format!("{},{},", token.kind.as_str(), token.value.len()).as_bytes());
            out.extend_from_slice(token.value);
            out.push(b'\n');
        }
    } else if name.contains("test-xss-") {
        out.push(if portcullis_libinjection::xss(input) { b'1' } else { b'0' });
    } else {
        panic!("unknown test type: {name}");
    }
    while out.last().is_some_and(|b| b" \n\t\r".contains(b)) {
        out.pop();
    }
    out
}

#[test]
fn every_libinjection_test_file_passes() {
    let files = test_files();
    assert_eq!(files.len(), 480, "libinjection's test files under ../shared/libinjection/tests");
    let mut failed = Vec::new();
    for file in &files {
        let got = actual(&file.name, &file.input);
        if got != file.expected {
            failed.push(format!(
                "{}\n  input    {:?}\n  expected {:?}\n  got      {:?}",
                file.name,
                String::from_utf8_lossy(&file.input),
                String::from_utf8_lossy(&file.expected),
                String::from_utf8_lossy(&got)
            ));
        }
    }
    assert!(failed.is_empty(), "{} of {} test files fail:\n{}", failed.len(), files.len(), failed.join("\n"));
}
