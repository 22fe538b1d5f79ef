//! libinjection's data lists (attack collections and known false
//! positives): the port flags exactly as many as the C library does
//! (figures measured with libinjection 3.9.2 from libmodsecurity 3.0.9; the
//! `libmodsecurity` feature's differential tests compare line by line), and
//! stays within upstream's own limits (`reader -i -m 19` for SQL injection,
//! `-x -m 20` for XSS).

use crate::common;

use common::{data_lines, lists};
use portcullis_libinjection::{sqli, xss};

fn inputs(prefix: &str) -> Vec<Vec<u8>> {
    lists(prefix).iter().flat_map(|p| data_lines(p)).collect()
}

#[test]
fn sqli_attack_lists() {
    let attacks = inputs("sqli-");
    let flagged = attacks.iter().filter(|a| sqli(a).is_some()).count();
    assert_eq!((attacks.len(), flagged), (17_149, 17_131), "SQLi lists: (inputs, flagged) differ from the C library's");
    assert!(attacks.len() - flagged <= 19);
}

#[test]
fn xss_attack_lists() {
    let attacks = inputs("xss-");
    let flagged = attacks.iter().filter(|a| xss(a)).count();
    assert_eq!((attacks.len(), flagged), (1_645, 1_640), "XSS lists: (inputs, flagged) differ from the C library's");
    assert!(attacks.len() - flagged <= 20);
}

#[test]
fn false_positives_list() {
    let plain = inputs("false_positives");
    let flagged = plain.iter().filter(|p| sqli(p).is_some()).count();
    assert_eq!((plain.len(), flagged), (421, 21), "false_positives.txt: (inputs, flagged) differ from the C library's");
}

#[test]
fn plain_text_is_left_alone() {
    for plain in [&b"SELECT is a great word in English"[..], b"Order #12345 -- shipped", b"O'Brien", b"<b>bold</b>"] {
        assert_eq!(sqli(plain), None, "{}", String::from_utf8_lossy(plain));
        assert!(!xss(plain), "{}", String::from_utf8_lossy(plain));
    }
    assert_eq!(sqli(b"1' OR '1'='1").map(|f| f.to_string()).as_deref(), Some("s&sos"));
    assert!(xss(b"<script>alert(1)</script>"));
}
