//! Route patterns and route matching (`portcullis_policy::route`).
//!
//! Input, one item per line: routes as `PATTERN [HOST|-] [METHOD,…|-]`,
//! then the request as `METHOD HOST|- PATH` on the last line.
//!
//! Properties:
//! - a pattern parses back to itself from its text, and folding is stable;
//! - the table's indexed lookup agrees with a plain scan of its entries in
//!   match order (the first entry whose host, path and method match wins,
//!   HEAD served by GET; else 405 with every allowed method, else none);
//! - a route that passes `check_normal` (configuration refuses the others)
//!   and has literal segments only is reached by a request spelled like it:
//!   its text, normalized as requests are (default policy,
//!   case-insensitive), matches the folded pattern; a spelling suggested for
//!   a refused pattern passes the check.

#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use portcullis_policy::normalize::{PathPolicy, normalize};
use portcullis_policy::route::{HostPattern, Match, PathPattern, PatternError, RouteEntry, RouteTable};

fn methods(text: &str) -> Option<Vec<Method>> {
    if text == "-" {
        return None;
    }
    Some(text.split(',').filter_map(|m| Method::from_bytes(m.as_bytes()).ok()).collect())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines: Vec<&str> = text.lines().collect();
    let Some(request) = lines.pop() else { return };
    let mut entries = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let mut words = line.split(' ');
        let pattern = words.next().unwrap_or_default();
        let Ok(path) = PathPattern::parse(pattern) else { continue };
        assert_eq!(PathPattern::parse(path.as_str()).as_ref(), Ok(&path), "{pattern:?} does not parse back");
        let folded = path.folded();
        assert_eq!(folded.folded(), folded, "{pattern:?}: folding twice changes it");
        let policy = PathPolicy::default();
        match path.check_normal(&policy) {
            Ok(()) if !pattern.contains(['{', '*']) => {
                let normal = normalize(pattern, &policy)
                    .unwrap_or_else(|e| panic!("{pattern:?} passed the check but its spelling is refused: {e}"));
                let key = policy.match_key(&normal).into_owned();
                assert!(
                    folded.matches(&key),
                    "{pattern:?}: its own spelling, normalized to {key:?}, does not reach it"
                );
            }
            Ok(()) => {}
            Err(PatternError::NotNormal { suggestion: Some(better), .. }) => {
                let better = PathPattern::parse(&better).unwrap_or_else(|e| panic!("suggested {better:?}: {e}"));
                assert_eq!(better.check_normal(&policy), Ok(()), "{pattern:?}: the suggestion is not normal either");
            }
            Err(_) => {}
        }
        let host = match words.next() {
            None | Some("-") => None,
            Some(h) => match HostPattern::parse(h) {
                Ok(host) => Some(host),
                Err(_) => continue,
            },
        };
        let methods = words.next().and_then(methods);
        entries.push(RouteEntry { host, path: folded, methods, value: i });
    }
    let table = RouteTable::new(entries);

    let mut words = request.split(' ');
    let (Some(method), Some(host), Some(path)) = (words.next(), words.next(), words.next()) else { return };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return };
    let host = (host != "-").then_some(host);

    let mut expected = None;
    let mut allowed: Vec<Method> = Vec::new();
    let mut path_matched = false;
    for entry in table.entries() {
        let host_ok = match (&entry.host, host) {
            (None, _) => true,
            (Some(pattern), Some(h)) => pattern.matches(h),
            (Some(_), None) => false,
        };
        if !host_ok || !entry.path.matches(path) {
            continue;
        }
        let ok = entry
            .methods
            .as_ref()
            .is_none_or(|ms| ms.contains(&method) || (method == Method::HEAD && ms.contains(&Method::GET)));
        if ok {
            expected = Some(entry.value);
            break;
        }
        path_matched = true;
        for m in entry.methods.iter().flatten() {
            if !allowed.contains(m) {
                allowed.push(m.clone());
            }
        }
    }
    match table.find(host, path, &method) {
        Match::Found(value) => assert_eq!(Some(*value), expected, "indexed lookup disagrees with a scan"),
        Match::MethodNotAllowed(methods) => {
            assert_eq!(expected, None);
            assert!(path_matched);
            assert_eq!(methods, allowed);
        }
        Match::None => assert!(expected.is_none() && !path_matched, "indexed lookup missed a route"),
    }
});
