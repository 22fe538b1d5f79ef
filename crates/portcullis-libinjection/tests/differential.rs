//! Differential tests against the C library (libinjection 3.9.2 as exported
//! by libmodsecurity 3.0.9): every answer of the port, on every test file
//! input, every data-list line and a few hundred thousand generated and
//! mutated inputs, must be the C library's — SQLi fingerprints, XSS
//! verdicts, and the tokens of the tokenizers and of folding.

use crate::common;

use common::{data_lines, lists, shared, test_files};
use portcullis_libinjection as rust;
use portcullis_libinjection::{Flags, Html5Start};
use portcullis_modsec::libinjection as c;

const ALL_FLAGS: [Flags; 5] = [
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

/// `input` in a buffer with NUL bytes after it: the C XSS code may read a
/// few bytes past its input (attribute names, `&#` entities), and NUL is
/// what it would find after a C string.
fn padded(input: &[u8]) -> Vec<u8> {
    let mut buf = input.to_vec();
    buf.extend_from_slice(&[0; 64]);
    buf
}

type RustToken = (u8, usize, usize, i32, u8, u8, Vec<u8>);

fn rust_token(t: &rust::Token) -> RustToken {
    (t.kind(), t.pos(), t.len(), t.count(), t.str_open(), t.str_close(), t.value().to_vec())
}

fn c_token(t: &c::SqliToken) -> RustToken {
    (t.kind, t.pos, t.len, t.count, t.str_open, t.str_close, t.val.clone())
}

#[derive(Default)]
struct Report {
    inputs: usize,
    sqli_c: usize,
    sqli_rust: usize,
    xss_c: usize,
    xss_rust: usize,
    mismatches: Vec<String>,
}

impl Report {
    fn mismatch(&mut self, what: &str, input: &[u8], c: &str, rust: &str) {
        if self.mismatches.len() < 20 {
            self.mismatches.push(format!("{what} {:?}\n  C    {c}\n  Rust {rust}", String::from_utf8_lossy(input)));
        } else {
            self.mismatches.push(String::new());
        }
    }

    /// The detection answers (what the WAF uses).
    fn verdicts(&mut self, input: &[u8]) {
        self.inputs += 1;
        let c_fp = c::sqli(input);
        let rust_fp = rust::sqli(input).map(|f| f.to_string());
        self.sqli_c += usize::from(c_fp.is_some());
        self.sqli_rust += usize::from(rust_fp.is_some());
        if c_fp != rust_fp {
            self.mismatch("sqli", input, &format!("{c_fp:?}"), &format!("{rust_fp:?}"));
        }
        let buf = padded(input);
        let c_xss = c::xss(&buf[..input.len()]);
        let rust_xss = rust::xss(input);
        self.xss_c += usize::from(c_xss);
        self.xss_rust += usize::from(rust_xss);
        if c_xss != rust_xss {
            self.mismatch("xss", input, &c_xss.to_string(), &rust_xss.to_string());
        }
    }

    /// The tokenizers, in every mode the detectors use.
    fn tokens(&mut self, input: &[u8]) {
        for flags in ALL_FLAGS {
            let c_tokens: Vec<RustToken> = c::sqli_tokenize(input, flags.bits() as i32).iter().map(c_token).collect();
            let rust_tokens: Vec<RustToken> = rust::tokenize(input, flags).map(|t| rust_token(&t)).collect();
            if c_tokens != rust_tokens {
                self.mismatch(
                    &format!("tokenize {flags:?}"),
                    input,
                    &format!("{c_tokens:?}"),
                    &format!("{rust_tokens:?}"),
                );
            }
            let c_folded: Vec<RustToken> = c::sqli_fold(input, flags.bits() as i32).iter().map(c_token).collect();
            let rust_folded: Vec<RustToken> = rust::fold(input, flags).tokens().iter().map(rust_token).collect();
            if c_folded != rust_folded {
                self.mismatch(&format!("fold {flags:?}"), input, &format!("{c_folded:?}"), &format!("{rust_folded:?}"));
            }
        }
        let buf = padded(input);
        for (code, start) in STARTS.into_iter().enumerate() {
            let c_tokens = c::h5_tokenize(&buf[..input.len()], code as i32);
            let rust_tokens: Vec<(i32, usize, usize)> =
                rust::html5_tokenize(input, start).map(|t| (t.kind.code(), t.pos, t.value.len())).collect();
            if c_tokens != rust_tokens {
                self.mismatch(
                    &format!("html5 {start:?}"),
                    input,
                    &format!("{c_tokens:?}"),
                    &format!("{rust_tokens:?}"),
                );
            }
        }
    }

    fn assert_clean(&self, what: &str) {
        println!(
            "{what}: {} inputs; SQLi C {} / Rust {}; XSS C {} / Rust {}; {} mismatches",
            self.inputs,
            self.sqli_c,
            self.sqli_rust,
            self.xss_c,
            self.xss_rust,
            self.mismatches.len()
        );
        let shown: Vec<&String> = self.mismatches.iter().filter(|m| !m.is_empty()).collect();
        assert!(
            self.mismatches.is_empty(),
            "{what}: {} mismatches with the C library, first ones:\n{}",
            self.mismatches.len(),
            shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        );
    }
}

fn all_data_lines() -> Vec<Vec<u8>> {
    let mut paths = lists("");
    paths.retain(|p| p.extension().is_some_and(|e| e == "txt"));
    assert!(paths.len() >= 40, "{paths:?}");
    paths.iter().flat_map(|p| data_lines(p)).collect()
}

#[test]
fn test_file_inputs_match_the_c_library() {
    let mut report = Report::default();
    for file in test_files() {
        report.verdicts(&file.input);
        report.tokens(&file.input);
    }
    report.assert_clean("test files");
}

#[test]
fn data_lists_match_the_c_library() {
    let mut report = Report::default();
    for line in all_data_lines() {
        report.verdicts(&line);
        report.tokens(&line);
    }
    report.assert_clean("data lists");
}

/// The upstream attack lists and false positives: the port's counts are
/// the C library's (also checked input by input above).
#[test]
fn data_list_figures_are_the_c_librarys() {
    for (prefix, is_sqli) in [("sqli-", true), ("xss-", false), ("false_positives", true)] {
        let inputs: Vec<Vec<u8>> = lists(prefix).iter().flat_map(|p| data_lines(p)).collect();
        let (c_hits, rust_hits) = if is_sqli {
            (
                inputs.iter().filter(|i| c::sqli(i).is_some()).count(),
                inputs.iter().filter(|i| rust::sqli(i).is_some()).count(),
            )
        } else {
            (
                inputs.iter().filter(|i| c::xss(&padded(i)[..i.len()])).count(),
                inputs.iter().filter(|i| rust::xss(i)).count(),
            )
        };
        println!("{prefix}: {} inputs, C flags {c_hits}, Rust flags {rust_hits}", inputs.len());
        assert_eq!(c_hits, rust_hits, "{prefix}");
    }
    assert!(shared().join("data/false_positives.txt").exists());
}

/// SplitMix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Pieces SQL injections and XSS are made of, and the tokenizers' edge cases.
const FRAGMENTS: &[&str] = &[
    "'",
    "\"",
    "`",
    " ",
    "  ",
    "\t",
    "\n",
    "\r",
    "\0",
    "\u{a0}",
    "\x0b",
    "(",
    ")",
    "((",
    "))",
    ",",
    ";",
    ";;",
    ".",
    ":",
    "::",
    "{",
    "}",
    "[",
    "]",
    "[x]",
    "\\",
    "\\N",
    "\\%",
    "?",
    "@",
    "@@",
    "@x",
    "@@version",
    "@`v`",
    "@'v'",
    "$",
    "$$",
    "$1,000.00",
    "$tag$",
    "$$x$$",
    "$.",
    "#",
    "--",
    "-- ",
    "--x",
    "-",
    "+",
    "*",
    "/",
    "/*",
    "*/",
    "/**/",
    "/*!",
    "/*!50000",
    "/* /* */",
    "%",
    "^",
    "~",
    "!",
    "!!",
    "!=",
    "<>",
    "<=>",
    "<=",
    ">=",
    "=",
    "==",
    "||",
    "&&",
    "|",
    "&",
    "0",
    "1",
    "00",
    "12",
    "1.5",
    "1e5",
    "1e",
    "1.e",
    "1.e+",
    ".5",
    "1f",
    "1d;",
    "1fUNION",
    "0x",
    "0x1f",
    "0b",
    "0b101",
    "0xZZ",
    "b'01'",
    "x'1f'",
    "n'a'",
    "e'a'",
    "u&'a'",
    "q'(a)'",
    "nq'<a>'",
    "q'",
    "N'",
    "E'",
    "1'",
    "'1",
    "''",
    "\"\"",
    "'a''b'",
    "'a\\'b'",
    "\\'",
    "\\\\'",
    "select",
    "SELECT",
    "union",
    "UNION ALL",
    "union all select",
    "from",
    "where",
    "or",
    "OR",
    "and",
    "AND",
    "not",
    "NOT",
    "in",
    "not in",
    "like",
    "not like",
    "is",
    "null",
    "NULL",
    "true",
    "sleep",
    "benchmark",
    "user",
    "user()",
    "database()",
    "current_user",
    "version()",
    "char(",
    "concat(",
    "if(",
    "ifnull(",
    "; if",
    ";if ",
    "waitfor delay",
    "exec",
    "declare",
    "begin",
    "drop table",
    "insert into",
    "into outfile",
    "into dumpfile",
    "order by",
    "group by",
    "having",
    "limit",
    "case",
    "when",
    "then",
    "else",
    "end",
    "collate",
    "utf8_bin",
    "_latin1",
    "binary",
    "cast(",
    "as",
    "char",
    "varchar",
    "::text",
    "::int",
    "sp_password",
    "xp_cmdshell",
    "information_schema.tables",
    "a.b",
    "select.1",
    "select`x`",
    "foo",
    "bar",
    "a",
    "x",
    "1=1",
    "1'='1",
    "' or '1'='1",
    "\" or \"1\"=\"1",
    "admin'--",
    "1 union select 1,2,3--",
    "') or ('a'='a",
    "<",
    ">",
    "</",
    "/>",
    "<!",
    "<!--",
    "-->",
    "--!>",
    "<!DOCTYPE html>",
    "<![CDATA[",
    "]]>",
    "<?",
    "<?xml",
    "<%",
    "%>",
    "<script>",
    "</script>",
    "<ScRiPt",
    "<svg",
    "<svg/onload=",
    "<xsl:",
    "<img",
    "<a",
    "<iframe",
    "<b>",
    "<x",
    "<\0script>",
    " src=",
    " href=",
    " style=",
    " onload=",
    " onerror=",
    " on",
    " onx=",
    " xmlns=",
    " xlink:href=",
    " attributeName=",
    " values=",
    " from=",
    " to=",
    " by=",
    " formaction=",
    " background=",
    " dynsrc=",
    " lowsrc=",
    " datasrc=",
    " filter=",
    "=",
    "=\"",
    "='",
    "=`",
    "javascript:",
    "JaVaScRiPt:",
    "java\0script:",
    "&#106;avascript:",
    "&#x6A;avascript:",
    "&#0000106",
    "&#x6a",
    "&#",
    "&#x",
    "&#;",
    "&amp;",
    "data:",
    "data:text/html,",
    "vbscript:",
    "view-source:",
    " \x01java",
    "\u{80}java",
    "[if",
    "[IF IE]",
    "import",
    "entity",
    "xml",
    "alert(1)",
    "prompt(1)",
    "\u{ff}",
    "\u{c0}",
    "é",
];

fn generated(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(4) {
        // Concatenated fragments.
        0 | 1 => {
            let mut out = Vec::new();
            for _ in 0..1 + rng.below(8) {
                out.extend_from_slice(rng.pick(FRAGMENTS).as_bytes());
            }
            out
        }
        // Random bytes over the characters the tokenizers dispatch on.
        2 => {
            const ALPHABET: &[u8] = b" \t\n\0'\"`()[]{},;.:@$#-+*/%^~!<>=|&?\\_01259aAbBeEnNqQuUxXfFdDsSoO\xa0\x80\xff";
            (0..1 + rng.below(24)).map(|_| *rng.pick(ALPHABET)).collect()
        }
        // A data-list line or test input, mutated.
        _ => {
            let mut out = rng.pick(seeds).clone();
            for _ in 0..1 + rng.below(4) {
                let at = if out.is_empty() { 0 } else { rng.below(out.len() + 1) };
                match rng.below(4) {
                    0 if at < out.len() => {
                        out.remove(at);
                    }
                    1 if at < out.len() => out[at] = rng.next().to_le_bytes()[0],
                    2 => {
                        let fragment = rng.pick(FRAGMENTS).as_bytes();
                        out.splice(at..at, fragment.iter().copied());
                    }
                    _ => out.truncate(at),
                }
            }
            out
        }
    }
}

#[test]
fn generated_and_mutated_inputs_match_the_c_library() {
    let mut seeds = all_data_lines();
    seeds.extend(test_files().into_iter().map(|f| f.input));
    let mut rng = Rng(0x6c69_6269_6e6a_6563);
    let count: usize = std::env::var("LIBINJECTION_DIFF_INPUTS").ok().and_then(|n| n.parse().ok()).unwrap_or(300_000);
    let mut report = Report::default();
    for i in 0..count {
        let input = generated(&mut rng, &seeds);
        report.verdicts(&input);
        // The tokenizers on a third of them (ten C and Rust runs each).
        if i % 3 == 0 {
            report.tokens(&input);
        }
    }
    report.assert_clean("generated inputs");
}
