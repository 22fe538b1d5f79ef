//! The Rust libinjection port (`portcullis_libinjection`) against the C
//! library it ports (libinjection 3.9.2 in libmodsecurity 3.0.9).
//!
//! Properties, for any bytes:
//! - the SQLi fingerprint (or none) is the C library's, and so is the XSS
//!   verdict;
//! - the SQL tokens and folded tokens, in each of the five modes SQLi
//!   detection reads an input in, are the C tokenizer's (type, position,
//!   length, quotes, value);
//! - the HTML5 tokens, from each of the five starting states XSS detection
//!   uses, are the C tokenizer's.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_libinjection::{self as rust, Flags, Html5Start};
use portcullis_modsec::libinjection as c;

const FLAGS: [Flags; 5] = [
    Flags::QUOTE_NONE.union(Flags::SQL_ANSI),
    Flags::QUOTE_NONE.union(Flags::SQL_MYSQL),
    Flags::QUOTE_SINGLE.union(Flags::SQL_ANSI),
    Flags::QUOTE_SINGLE.union(Flags::SQL_MYSQL),
    Flags::QUOTE_DOUBLE.union(Flags::SQL_MYSQL),
];

const STARTS: [Html5Start; 5] = [
    Html5Start::Data,
    Html5Start::ValueNoQuote,
    Html5Start::ValueSingleQuote,
    Html5Start::ValueDoubleQuote,
    Html5Start::ValueBackQuote,
];

type TokenView = (u8, usize, usize, i32, u8, u8, Vec<u8>);

fuzz_target!(|input: &[u8]| {
    // NUL bytes after the input: the C XSS code may read a few bytes past it.
    let mut padded = input.to_vec();
    padded.extend_from_slice(&[0; 64]);
    let c_input = &padded[..input.len()];

    let rust_fp = rust::sqli(input).map(|f| f.to_string());
    assert_eq!(rust_fp, c::sqli(c_input), "sqli fingerprint");
    assert_eq!(rust::xss(input), c::xss(c_input), "xss verdict");

    for flags in FLAGS {
        let bits = i32::try_from(flags.bits()).unwrap_or(0);
        let rust_tokens: Vec<TokenView> = rust::tokenize(input, flags)
            .map(|t| (t.kind(), t.pos(), t.len(), t.count(), t.str_open(), t.str_close(), t.value().to_vec()))
            .collect();
        let c_tokens: Vec<TokenView> = c::sqli_tokenize(c_input, bits)
            .into_iter()
            .map(|t| (t.kind, t.pos, t.len, t.count, t.str_open, t.str_close, t.val))
            .collect();
        assert_eq!(rust_tokens, c_tokens, "tokens {flags:?}");
        let rust_folded: Vec<TokenView> = rust::fold(input, flags)
            .tokens()
            .iter()
            .map(|t| (t.kind(), t.pos(), t.len(), t.count(), t.str_open(), t.str_close(), t.value().to_vec()))
            .collect();
        let c_folded: Vec<TokenView> = c::sqli_fold(c_input, bits)
            .into_iter()
            .map(|t| (t.kind, t.pos, t.len, t.count, t.str_open, t.str_close, t.val))
            .collect();
        assert_eq!(rust_folded, c_folded, "folded tokens {flags:?}");
    }

    for (code, start) in (0..).zip(STARTS) {
        let rust_tokens: Vec<(i32, usize, usize)> =
            rust::html5_tokenize(input, start).map(|t| (t.kind.code(), t.pos, t.value.len())).collect();
        assert_eq!(rust_tokens, c::h5_tokenize(c_input, code), "html5 tokens {start:?}");
    }
});
