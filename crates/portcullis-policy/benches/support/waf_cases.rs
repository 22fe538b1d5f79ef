//! The cases of benches/waf.rs and benches/waf_mimalloc.rs.

use std::hint::black_box;
use std::path::Path;

use bytes::Bytes;
use criterion::{BatchSize, Criterion};
use portcullis_policy::waf::{self, EngineKind, Profile, VerdictCache, WafRequest, WafResponse};

fn request(method: &str, uri: &str, content_type: Option<&str>, body: &'static str) -> WafRequest {
    let mut headers = vec![
        ("Host".to_owned(), "api.example.com".to_owned()),
        ("User-Agent".to_owned(), "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0".to_owned()),
        ("Accept".to_owned(), "application/json".to_owned()),
        ("Accept-Encoding".to_owned(), "gzip, deflate, br".to_owned()),
        ("Authorization".to_owned(), "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJl".to_owned()),
    ];
    if let Some(content_type) = content_type {
        headers.push(("Content-Type".to_owned(), content_type.to_owned()));
        headers.push(("Content-Length".to_owned(), body.len().to_string()));
    }
    WafRequest {
        method: method.to_owned(),
        uri: uri.to_owned(),
        version: "HTTP/1.1",
        headers,
        body: Bytes::from_static(body.as_bytes()),
        body_complete: true,
        client_ip: std::net::Ipv4Addr::new(198, 51, 100, 7).into(),
        client_port: 40_000,
    }
}

/// `req` made unique by `n`: a query value (and the body's `NONCE`), and
/// with `all_new` its user agent and cookie values too.
fn unique(req: &WafRequest, n: u64, all_new: bool) -> WafRequest {
    let mut req = req.clone();
    let separator = if req.uri.contains('?') { '&' } else { '?' };
    req.uri = format!("{}{separator}v={n}", req.uri);
    if req.body.windows(5).any(|w| w == b"NONCE") {
        let body = String::from_utf8_lossy(&req.body).replace("NONCE", &format!("{:05}", n % 100_000));
        req.body = Bytes::from(body);
    }
    if all_new {
        for (name, value) in &mut req.headers {
            if name == "User-Agent" || name == "Cookie" {
                *value = value.replace("128.0", &format!("128.{n}")).replace("dark", &format!("dark{n}"));
            }
        }
    }
    req
}

pub fn bench(c: &mut Criterion) {
    let crs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/crs");
    let json_500 = format!(
        r#"{{"customer":{{"name":"Jeanne d'Arc","email":"jeanne@example.org","phone":"+33 1 23 45 67 89"}},"items":[{{"sku":"WID-1042","quantity":3,"price":19.99}},{{"sku":"GAD-7","quantity":1,"price":249.0}}],"shipping":{{"street":"12 Rue de la Paix","city":"Paris","zip":"75002","country":"FR"}},"note":"Please leave it with the neighbour at number 14 if nobody is home; ring twice.","coupon":"WINTER-NONCE","gift":false,"pad":"{}"}}"#,
        "x".repeat(60)
    );
    let json_500: &'static str = Box::leak(json_500.into_boxed_str());
    let cases = [
        ("clean GET", request("GET", "/api/orders?page=2&sort=created", None, "")),
        (
            "clean JSON POST",
            request(
                "POST",
                "/api/orders",
                Some("application/json"),
                r#"{"item":"widget-NONCE","quantity":3,"address":{"street":"12 Rue de la Paix","city":"Paris"},"note":"Leave it with the neighbour"}"#,
            ),
        ),
        ("clean 500-byte JSON POST", request("POST", "/api/orders", Some("application/json"), json_500)),
        ("browser GET with cookies", {
            // What bench/pipeline sends: a browser's language and four cookies
            // (each cookie is two more values for most attack rules).
            let mut req = request("GET", "/api/orders/1042?expand=items&ref=0", None, "");
            req.headers.push(("Accept-Language".to_owned(), "en-GB,en;q=0.9,fr;q=0.8".to_owned()));
            req.headers.push((
                "Cookie".to_owned(),
                "theme=dark; lang=en-GB; cart=7f3c2a91-5b8e-4d2f-9c1a-3e6b8d0f4a21; _ga=GA1.1.1234567890.1733300000"
                    .to_owned(),
            ));
            req
        }),
        (
            "SQL injection",
            request("GET", "/api/products?id=1%27%20UNION%20SELECT%20password%20FROM%20users--", None, ""),
        ),
    ];
    // Every iteration inspects a request no earlier one was: a fresh query
    // value (and JSON value), as bench/pipeline's unique requests. Header
    // values and argument names repeat, as a browser's and an API's do;
    // the last case makes every value new (a new browser, new cookies).
    let mut cases: Vec<(&str, WafRequest)> = cases.into_iter().collect();
    cases.push(("browser GET, every value new", cases[3].1.clone()));
    cases.push(("browser GET, repeated", cases[3].1.clone()));
    let engine = waf::load(EngineKind::Zentinel, &crs, &Profile::default()).unwrap();
    for kind in [EngineKind::Portcullis, EngineKind::Zentinel] {
        let engine = waf::load(kind, &crs, &Profile::default()).unwrap();
        let mut group = c.benchmark_group(format!("waf/{}", kind.as_str()));
        for (name, req) in &cases {
            let all_new = name.ends_with("every value new");
            assert_eq!(engine.inspect(&unique(req, 0, all_new)).unwrap().intervened, name.starts_with("SQL"), "{name}");
            let mut n = 0_u64;
            group.bench_function(*name, |b| {
                let repeated = name.ends_with("repeated");
                b.iter_batched(
                    || {
                        n += u64::from(!repeated);
                        unique(req, n, all_new)
                    },
                    |req| engine.inspect(black_box(&req)).unwrap(),
                    BatchSize::SmallInput,
                );
            });
        }
        group.finish();
    }
    // The response phases (RESPONSE-95x) on a clean 2 KiB HTML page, after
    // the request's transaction.
    let responses =
        waf::load(EngineKind::Portcullis, &crs, &Profile { responses: true, ..Profile::default() }).unwrap();
    let page: String = format!(
        "<html><head><title>Orders</title></head><body>{}</body></html>",
        "<p>Order 1042: 2 mugs, shipped Monday to 12 Rue de la Paix.</p>".repeat(32)
    );
    let response = WafResponse {
        status: 200,
        version: "HTTP/1.1",
        headers: vec![("Content-Type".to_owned(), "text/html; charset=utf-8".to_owned())],
        body: Some(Bytes::from(page)),
    };
    let (_, get) = &cases[0];
    let mut group = c.benchmark_group("waf/portcullis-responses");
    group.bench_function("clean GET, then a 2 KiB HTML response", |b| {
        b.iter(|| {
            let (_, transaction) = responses.begin(black_box(get)).unwrap();
            responses.inspect_response(get, transaction, black_box(&response)).unwrap()
        });
    });
    group.finish();
    let mut group = c.benchmark_group("waf/cache");
    let cache = VerdictCache::new(1000);
    let (_, clean) = &cases[0];
    cache.insert(cache.key(clean), engine.inspect(clean).unwrap());
    group.bench_function("cache hit (clean GET)", |b| b.iter(|| cache.get(&cache.key(black_box(clean))).unwrap()));
    group.finish();
}
