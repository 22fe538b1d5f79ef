//! Cookie parsing and removal (`portcullis_policy::cookies`).
//!
//! Input: the cookie name to remove on the first line, then one `Cookie`
//! field per line (any bytes a header value may hold).
//!
//! Properties, after `remove(name)`:
//! - the cookie is gone: neither the gateway's parser nor a model of Node's
//!   `cookie` parser (Express, NestJS) finds it, nor the pair-level parser
//!   that reads names before the first `=`;
//! - every other pair is kept, in order, byte for byte;
//! - `get` agrees with the Node model on the first value of every name;
//! - removing twice changes nothing;
//! - the duplicates check refuses a cookie Node's parser sees twice.

#![no_main]

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis_policy::cookies;
use portcullis_policy::duplicates::Singletons;

fn is_space(b: &u8) -> bool {
    matches!(b, b' ' | b'\t')
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !is_space(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !is_space(b)).map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Node's `cookie.parse` (0.7), one field: `name=value` pairs split on `;`,
/// names and values trimmed of spaces and tabs, pairs without `=` skipped.
fn node_pairs(field: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    field
        .split(|b| *b == b';')
        .filter_map(|pair| {
            let at = pair.iter().position(|b| *b == b'=')?;
            Some((trim(&pair[..at]).to_vec(), trim(&pair[at + 1..]).to_vec()))
        })
        .collect()
}

/// Every non-empty pair of every field, trimmed, in order.
fn all_pairs(headers: &HeaderMap) -> Vec<Vec<u8>> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';').map(trim).filter(|p| !p.is_empty()).map(<[u8]>::to_vec))
        .collect()
}

fn name_of(pair: &[u8]) -> Option<&[u8]> {
    pair.iter().position(|b| *b == b'=').map(|at| trim(&pair[..at]))
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let Some(name) = lines.next().and_then(|l| std::str::from_utf8(l).ok()) else { return };
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(COOKIE, value);
        }
    }
    let before = all_pairs(&headers);
    let node: Vec<(Vec<u8>, Vec<u8>)> = headers.get_all(COOKIE).iter().flat_map(|v| node_pairs(v.as_bytes())).collect();
    for (n, v) in &node {
        let Ok(n) = std::str::from_utf8(n) else { continue };
        let first = node.iter().find(|(m, _)| m == n.as_bytes()).map(|(_, v)| v.as_slice());
        let got = cookies::get(&headers, n).map(str::as_bytes);
        if std::str::from_utf8(v).is_ok() && first == Some(v.as_slice()) {
            assert_eq!(got, first, "get({n:?}) disagrees with Node's parser");
        }
    }

    let had = node.iter().any(|(n, _)| n == name.as_bytes());
    let mut after = headers.clone();
    assert_eq!(cookies::remove(&mut after, name), had, "remove's answer");
    assert!(cookies::get(&after, name).is_none());
    assert!(cookies::pairs(&after).all(|(n, _)| n != name.as_bytes()));
    for value in after.get_all(COOKIE) {
        assert!(node_pairs(value.as_bytes()).iter().all(|(n, _)| n != name.as_bytes()), "Node still finds {name:?}");
    }
    if had {
        assert!(after.get_all(COOKIE).iter().count() <= 1);
        let kept: Vec<Vec<u8>> = before.into_iter().filter(|p| name_of(p) != Some(name.as_bytes())).collect();
        assert_eq!(all_pairs(&after), kept, "other cookies lost or changed");
    } else {
        assert_eq!(after, headers, "nothing to remove, yet the fields changed");
    }
    // A cookie that must not repeat (the session cookie) passes the
    // duplicates check only when Node's parser sees it at most once.
    if Singletons::default().with_cookie(name).check(&headers).is_ok() && !name.is_empty() {
        let seen = node.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).count();
        assert!(seen <= 1, "{name:?} sent {seen} times passed the duplicates check");
    }

    let mut twice = after.clone();
    assert!(!cookies::remove(&mut twice, name));
    assert_eq!(twice, after);
});
