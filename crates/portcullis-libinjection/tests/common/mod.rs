//! Shared test helpers: libinjection's test files and data lists, read from
//! /work/shared (never copied into the repository).

use std::path::{Path, PathBuf};

use portcullis_libinjection::{Flags, Token};

pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/libinjection")
}

/// A libinjection test file: name, input and expected output, trimmed as
/// its C test driver trims them (trailing spaces, tabs and newlines).
pub struct TestFile {
    pub name: String,
    pub input: Vec<u8>,
    pub expected: Vec<u8>,
}

fn rtrim(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\n' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn test_files() -> Vec<TestFile> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(shared().join("tests"))
        .expect("libinjection's test files under ../shared/libinjection/tests")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read(&path).unwrap();
            let input_at = find(&text, b"--INPUT--\n").unwrap() + 10;
            let expected_at = find(&text, b"--EXPECTED--\n").unwrap();
            TestFile {
                name: path.file_name().unwrap().to_string_lossy().into_owned(),
                input: rtrim(&text[input_at..expected_at]).to_vec(),
                expected: rtrim(&text[expected_at + 13..]).to_vec(),
            }
        })
        .collect()
}

/// The flags the C test driver tokenizes with.
pub const TEST_FLAGS: Flags = Flags::QUOTE_NONE.union(Flags::SQL_ANSI);

/// A token as the C test driver prints it (`s 'FOO'`, `v @@x`).
pub fn print_token(out: &mut Vec<u8>, kind: u8, count: i32, open: u8, close: u8, value: &[u8]) {
    out.push(kind);
    out.push(b' ');
    if kind == b'v' {
        if count >= 1 {
            out.push(b'@');
        }
        if count == 2 {
            out.push(b'@');
        }
    }
    if kind == b's' || kind == b'v' {
        if open != 0 {
            out.push(open);
        }
        out.extend_from_slice(value);
        if close != 0 {
            out.push(close);
        }
    } else {
        out.extend_from_slice(value);
    }
    out.push(b'\n');
}

pub fn print_rust_token(out: &mut Vec<u8>, t: &Token) {
    print_token(out, t.kind(), t.count(), t.str_open(), t.str_close(), t.value());
}

/// The URL-encoded lines of a data list (blank and `#` lines skipped),
/// decoded as upstream's reader decodes them.
pub fn data_lines(path: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read(path).unwrap();
    text.split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty() && !line.starts_with(b"#"))
        .map(|line| {
            let spaced: Vec<u8> = line.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
            percent_encoding::percent_decode(&spaced).collect()
        })
        .collect()
}

/// The data lists whose names start with `prefix`, sorted.
pub fn lists(prefix: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir(shared().join("data")).unwrap().filter_map(Result::ok).map(|e| e.path()).collect();
    paths.retain(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)));
    paths.sort();
    paths
}
