//! A pure-Rust port of libinjection 3.9.2, the SQL injection and XSS
//! detector behind ModSecurity's `@detectSQLi` and `@detectXSS` (and so
//! behind the OWASP Core Rule Set's libinjection rules): same tokenizers,
//! same folding, same tables, same answers as the C library that
//! libmodsecurity 3.0.9 exports, byte for byte.
//!
//! - [`sqli()`] returns the fingerprint (`s&sos`) of an input libinjection
//!   reads as SQL injection; [`xss()`] whether it reads it as cross-site
//!   scripting. Both take the raw bytes (NUL and non-UTF-8 bytes are read
//!   like any other), allocate nothing and keep their state on the stack.
//! - [`tokenize`], [`fold`] and [`html5_tokenize`] expose the tokenizers as
//!   libinjection's own test files exercise them.
//!
//! Decision rules are libinjection's; see the [`mod@sqli`] and [`mod@xss`] modules'
//! documentation for the details that matter at the edges (31-byte token
//! values, case-insensitive ASCII keywords, the false-positive rules for
//! short fingerprints, the five HTML contexts). The tests check every
//! libinjection test file and data list, and compare every answer with the
//! C library (feature `libmodsecurity`) on a few hundred thousand generated
//! inputs; the keyword, fingerprint and XSS tables in `data.rs` are derived
//! from the C library and checked against it.
//!
//! Deployment caveat: this is libinjection 3.9.2 as ModSecurity 3.0.9 ships
//! it, not a later release (4.x changed number parsing, `[` in ANSI mode and
//! the `on*` attribute list).
//!
//! Credit: libinjection is Copyright (c) 2012-2016 Nick Galbreath and the
//! libinjection contributors, BSD-3-Clause (`LICENSE-libinjection`). This
//! crate's code is a rewrite, but its data (keywords, fingerprints, XSS tag
//! and attribute lists) is libinjection's.

mod data;
mod html5;
pub mod sqli;
pub mod xss;

pub use html5::{Html5Kind, Html5Start, Html5Token, Html5Tokens, html5_tokenize};
pub use sqli::{Fingerprint, Flags, Folded, Token, Tokens, fold, lookup_word, sqli, tokenize};
pub use xss::xss;
