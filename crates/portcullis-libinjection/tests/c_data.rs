//! Derives `src/data.rs` (libinjection's keyword, fingerprint and XSS tables)
//! from the C library itself, and checks that the committed file is what the
//! C library holds, so the port's data cannot drift from it.
//!
//! The tables are not copied from libinjection's header: every candidate is
//! put to the library through its exported functions.
//! - Keywords: every suffix of every printable string in libmodsecurity's
//!   read-only data (the linker merges a string into the tail of a longer
//!   one, so suffixes are needed) that `libinjection_sqli_lookup_word` types.
//! - Fingerprints: every string of 1 to 5 token types (the table stores them
//!   upper case behind a `0`), looked up the same way; the `F` entries found
//!   among the strings must all be among them.
//! - XSS tags, attributes and URL schemes: the strings for which
//!   `libinjection_xss` flags `<NAME>`, `<a NAME=x>` (black, or style: both
//!   are flagged whatever the value), `<a NAME=javascript:x>` (a URL
//!   attribute), `<a NAME=href>` (an attribute naming another), and
//!   `<a href="SCHEME">` (shortest flagged prefixes).
//!
//! Regenerate with
//! `cargo test -p portcullis-libinjection --features libmodsecurity --test integration -- --ignored --exact c_data::regenerate`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use portcullis_modsec::libinjection as c;

/// libmodsecurity 3, which exports libinjection 3.9.2 (Debian 12's path;
/// `LIBMODSECURITY_SO` overrides it).
fn library_path() -> PathBuf {
    std::env::var_os("LIBMODSECURITY_SO")
        .map_or_else(|| PathBuf::from("/usr/lib/x86_64-linux-gnu/libmodsecurity.so.3"), PathBuf::from)
}

fn data_rs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/data.rs")
}

/// Every suffix (2 to 48 bytes) of every run of printable ASCII in the library.
fn candidates() -> BTreeSet<Vec<u8>> {
    let bytes = std::fs::read(library_path()).expect("libmodsecurity.so.3 (set LIBMODSECURITY_SO)");
    let mut out = BTreeSet::new();
    for run in bytes.split(|b| !(0x20..0x7f).contains(b)) {
        for start in 0..run.len() {
            let suffix = &run[start..];
            if (2..=48).contains(&suffix.len()) {
                out.insert(suffix.to_ascii_uppercase());
            }
        }
    }
    out
}

/// libinjection's own token types (those the tokenizer assigns without the table).
const TOKENIZER_TYPES: &[u8] = b"kUBEtfn1vsoc&A(){}.,:;T?X\\";

struct Tables {
    keywords: BTreeMap<Vec<u8>, u8>,
    fingerprints: BTreeSet<Vec<u8>>,
    tags: BTreeSet<Vec<u8>>,
    attrs: BTreeMap<Vec<u8>, &'static str>,
    schemes: BTreeSet<Vec<u8>>,
}

fn xss(input: &[u8]) -> bool {
    // NUL bytes after the input: the C library may read past it.
    let mut padded = input.to_vec();
    padded.extend_from_slice(&[0; 64]);
    c::xss(&padded[..input.len()])
}

fn derive() -> Tables {
    let candidates = candidates();
    let (keywords, found_fingerprints, fingerprints) = c::with_word_lookup(|lookup| {
        let mut keywords = BTreeMap::new();
        let mut found_fingerprints = BTreeSet::new();
        for word in &candidates {
            match lookup(word) {
                Some(b'F') if word.first() == Some(&b'0') => {
                    found_fingerprints.insert(word[1..].to_vec());
                }
                Some(kind) => {
                    keywords.insert(word.clone(), kind);
                }
                None => {}
            }
        }
        let mut alphabet: BTreeSet<u8> = TOKENIZER_TYPES.iter().map(u8::to_ascii_uppercase).collect();
        alphabet.extend(keywords.values().map(u8::to_ascii_uppercase));
        alphabet.insert(b'F');
        let alphabet: Vec<u8> = alphabet.into_iter().collect();
        let mut fingerprints = BTreeSet::new();
        let mut key = [0u8; 6];
        key[0] = b'0';
        for len in 1..=5usize {
            let total = alphabet.len().pow(u32::try_from(len).unwrap());
            for mut n in 0..total {
                for slot in key[1..=len].iter_mut() {
                    *slot = alphabet[n % alphabet.len()];
                    n /= alphabet.len();
                }
                if lookup(&key[..=len]) == Some(b'F') {
                    fingerprints.insert(key[1..=len].to_vec());
                }
            }
        }
        (keywords, found_fingerprints, fingerprints)
    });
    let missing: Vec<_> = found_fingerprints.difference(&fingerprints).collect();
    assert!(missing.is_empty(), "fingerprints outside the token alphabet: {missing:?}");

    let word = |w: &Vec<u8>| w.iter().all(|b| b.is_ascii_alphanumeric() || b"-_:".contains(b));
    let svg_or_xsl = |w: &[u8]| w.starts_with(b"SVG") || w.starts_with(b"XSL");
    let tags = candidates
        .iter()
        .filter(|w| word(w) && !svg_or_xsl(w) && xss(&[b"<", &w[..], b">"].concat()))
        .cloned()
        .collect();
    let mut attrs = BTreeMap::new();
    for w in candidates.iter().filter(|w| word(w)) {
        // Rules of the code, not of the table: on* and xmlns*/xlink* (5+ bytes).
        if w.len() >= 5 && (w.starts_with(b"ON") || w.starts_with(b"XMLNS") || w.starts_with(b"XLINK")) {
            continue;
        }
        let with_value = |value: &[u8]| xss(&[b"<a ", &w[..], b"=", value, b">"].concat());
        let kind = if with_value(b"x") {
            "Black"
        } else if with_value(b"javascript:x") {
            "Url"
        } else if with_value(b"href") {
            "Indirect"
        } else {
            continue;
        };
        attrs.insert(w.clone(), kind);
    }
    let url_attr =
        attrs.iter().find(|(_, kind)| **kind == "Url").map(|(name, _)| name.clone()).expect("a URL attribute");
    let flagged = |scheme: &[u8]| xss(&[b"<a ", &url_attr[..], b"=\"", scheme, b"\">"].concat());
    let mut schemes = BTreeSet::new();
    for w in candidates.iter().filter(|w| w.iter().all(|b| b.is_ascii_uppercase() || *b == b'-')) {
        if flagged(w) {
            let shortest = (1..=w.len()).find(|n| flagged(&w[..*n])).unwrap_or(w.len());
            schemes.insert(w[..shortest].to_vec());
        }
    }
    Tables { keywords, fingerprints, tags, attrs, schemes }
}

fn literal(bytes: &[u8]) -> String {
    let mut out = String::from("b\"");
    for b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(*b)),
            _ => write!(out, "\\x{b:02x}").unwrap(),
        }
    }
    out.push('"');
    out
}

fn render(tables: &Tables) -> String {
    let mut out = String::new();
    out.push_str(
        "//! libinjection 3.9.2's tables, as libmodsecurity 3.0.9's copy of the C library\n\
         //! holds them (BSD-3-Clause, see LICENSE-libinjection): derived from the library by\n\
         //! `tests/c_data.rs`, which also checks this file against it. Do not edit: regenerate with\n\
         //! `cargo test -p portcullis-libinjection --features libmodsecurity --test integration -- --ignored --exact c_data::regenerate`.\n\n\
         use crate::xss::AttrKind;\n\n",
    );
    writeln!(out, "/// SQL words, phrases and operators (upper case, sorted) and their token type.").unwrap();
    out.push_str("#[rustfmt::skip]\npub(crate) static KEYWORDS: &[(&[u8], u8)] = &[\n");
    for (word, kind) in &tables.keywords {
        writeln!(out, "    ({}, {}),", literal(word), byte_literal(*kind)).unwrap();
    }
    out.push_str("];\n\n");
    writeln!(out, "/// Fingerprints read as SQL injection (upper case, sorted; the C table stores them behind a `0`).")
        .unwrap();
    out.push_str("#[rustfmt::skip]\npub(crate) static FINGERPRINTS: &[&[u8]] = &[\n");
    let fingerprints: Vec<&Vec<u8>> = tables.fingerprints.iter().collect();
    for chunk in fingerprints.chunks(10) {
        let line: Vec<String> = chunk.iter().map(|f| literal(f)).collect();
        writeln!(out, "    {},", line.join(", ")).unwrap();
    }
    out.push_str("];\n\n");
    writeln!(out, "/// Tag names that are XSS whatever their content (upper case; besides `svg*` and `xsl*`).")
        .unwrap();
    out.push_str("#[rustfmt::skip]\npub(crate) static BLACK_TAGS: &[&[u8]] = &[\n");
    for tag in &tables.tags {
        writeln!(out, "    {},", literal(tag)).unwrap();
    }
    out.push_str("];\n\n");
    writeln!(out, "/// Attribute names and what makes them XSS (upper case; besides `on*`, `xmlns*`, `xlink*`).")
        .unwrap();
    out.push_str("#[rustfmt::skip]\npub(crate) static BLACK_ATTRS: &[(&[u8], AttrKind)] = &[\n");
    for (attr, kind) in &tables.attrs {
        writeln!(out, "    ({}, AttrKind::{kind}),", literal(attr)).unwrap();
    }
    out.push_str("];\n\n");
    writeln!(out, "/// URL schemes (upper case prefixes) that make a URL attribute XSS.").unwrap();
    out.push_str("#[rustfmt::skip]\npub(crate) static URL_SCHEMES: &[&[u8]] = &[\n");
    for scheme in &tables.schemes {
        writeln!(out, "    {},", literal(scheme)).unwrap();
    }
    out.push_str("];\n");
    out
}

fn byte_literal(b: u8) -> String {
    match b {
        b'\'' => "b'\\''".to_owned(),
        b'\\' => "b'\\\\'".to_owned(),
        0x20..=0x7e => format!("b'{}'", char::from(b)),
        _ => format!("b'\\x{b:02x}'"),
    }
}

/// Writes `src/data.rs` from the C library.
#[test]
#[ignore = "rewrites src/data.rs"]
fn regenerate() {
    let tables = derive();
    std::fs::write(data_rs(), render(&tables)).unwrap();
    println!(
        "{} keywords, {} fingerprints, {} tags, {} attributes, {} URL schemes",
        tables.keywords.len(),
        tables.fingerprints.len(),
        tables.tags.len(),
        tables.attrs.len(),
        tables.schemes.len()
    );
}

/// The committed tables are exactly what the C library holds.
#[test]
fn committed_tables_are_the_c_librarys() {
    let committed = std::fs::read_to_string(data_rs()).unwrap();
    let derived = render(&derive());
    assert!(
        committed == derived,
        "src/data.rs differs from the C library's tables: regenerate it (see tests/c_data.rs)"
    );
}
