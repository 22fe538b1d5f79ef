//! WAF request assembly (`portcullis_policy::waf::WafRequest::new`): what
//! the rule engine is given, not the engine itself.
//!
//! Input: a request in the format of `portcullis_fuzz::Request`.
//!
//! Properties:
//! - the engine sees the target as sent (path and query), the method, and
//!   every header in order with its name, and no ASCII byte of a value is
//!   lost or added (only invalid UTF-8 is replaced);
//! - it sees exactly one `Host` whenever the request has one or its target
//!   has an authority, and the body byte for byte;
//! - the verdict cache's key tells apart any two requests that differ in
//!   what the engine sees.

#![no_main]

use std::net::SocketAddr;

use bytes::Bytes;
use http::Version;
use libfuzzer_sys::fuzz_target;
use portcullis_fuzz::Request;
use portcullis_policy::waf::{VerdictCache, WafRequest};

fn ascii(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().copied().filter(u8::is_ascii).collect()
}

fn build(data: &[u8]) -> (Request<'_>, WafRequest) {
    let request = Request::parse(data);
    let version = match request.version {
        b"HTTP/1.0" => Version::HTTP_10,
        b"HTTP/2.0" | b"HTTP/2" => Version::HTTP_2,
        _ => Version::HTTP_11,
    };
    let client: SocketAddr = ([192, 0, 2, 7], 40000).into();
    let waf = WafRequest::new(
        &request.method,
        &request.uri,
        version,
        &request.headers,
        Bytes::copy_from_slice(request.body),
        client,
    );
    (request, waf)
}

fn same(a: &WafRequest, b: &WafRequest) -> bool {
    a.method == b.method
        && a.uri == b.uri
        && a.version == b.version
        && a.headers == b.headers
        && a.body == b.body
        && a.client_ip == b.client_ip
}

fuzz_target!(|data: &[u8]| {
    let (request, waf) = build(data);
    assert_eq!(waf.method, request.method.as_str());
    let expected = request.uri.path_and_query().map_or(request.uri.path(), |pq| pq.as_str());
    assert_eq!(waf.uri, expected);
    assert_eq!(&waf.body[..], request.body);

    let has_host = request.headers.contains_key(http::header::HOST);
    let hosts = waf.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("host")).count();
    if has_host {
        assert_eq!(hosts, request.headers.get_all(http::header::HOST).iter().count());
    } else if let Some(authority) = request.uri.authority() {
        assert_eq!(hosts, 1);
        assert_eq!(waf.headers[0], ("Host".to_owned(), authority.as_str().to_owned()));
    } else {
        assert_eq!(hosts, 0);
    }
    let skip = usize::from(!has_host && request.uri.authority().is_some());
    assert_eq!(waf.headers.len(), request.headers.len() + skip);
    for ((name, value), (seen_name, seen_value)) in request.headers.iter().zip(&waf.headers[skip..]) {
        assert_eq!(name.as_str(), seen_name);
        assert_eq!(ascii(value.as_bytes()), ascii(seen_value.as_bytes()), "{name}: ASCII changed");
    }

    // Two requests from the two halves of the input: equal keys only for
    // requests the engine cannot tell apart.
    let cache = VerdictCache::new(1);
    let (left, right) = data.split_at(data.len() / 2);
    let ((_, a), (_, b)) = (build(left), build(right));
    assert_eq!(same(&a, &b), cache.key(&a) == cache.key(&b), "{a:?} / {b:?}");
    assert_eq!(cache.key(&waf), cache.key(&waf.clone()));
});
