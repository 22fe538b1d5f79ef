//! The `portcullis` WAF engine on bench/pipeline's unique requests, in one
//! process: CRS v4 at PL1 loaded from `../shared/crs`, 3 000 requests to
//! warm it (the lazy DFAs determinize on novel input), then N measured ones,
//! each with a path and query never seen (GET) or also a ~470-byte JSON
//! order (`post`). Prints µs per request; its real use is under callgrind,
//! whose instruction counts do not depend on how busy the machine is:
//!
//! ```text
//! cargo build --release -p portcullis-policy --example waf_profile
//! for n in 500 1500; do valgrind --tool=callgrind --toggle-collect='*inspect_request*' \
//!     --callgrind-out-file=cg-$n.out target/release/examples/waf_profile $n [post]; done
//! ```
//!
//! (inclusive cost in cg-1500.out minus cg-500.out) / 1000 = instructions per
//! request in the steady state. See bench/README.md ("WAF engine: instructions").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a measuring tool, like the benches
use bytes::Bytes;
use portcullis_policy::waf::{self, EngineKind, Profile, WafRequest};
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Request `n`: bench/pipeline's browser headers and cookie, a unique path and query.
fn req(n: u64, post: bool) -> WafRequest {
    let mut headers: Vec<(String, String)> = [
        ("Host", "shop.example.com"),
        ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
        ("Accept", "application/json, text/plain, */*"),
        ("Accept-Language", "en-GB,en;q=0.9,fr;q=0.8"),
        ("Accept-Encoding", "gzip, deflate, br"),
        (
            "Cookie",
            "theme=dark; lang=en-GB; cart=7f3c2a91-5b8e-4d2f-9c1a-3e6b8d0f4a21; _ga=GA1.1.1234567890.1733300000",
        ),
        ("Authorization", "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJl"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    let body = if post {
        let b = r#"{"order_id":"ORDER_ID","customer":{"name":"Chloé Dubois","email":"chloe.dubois@example.com","phone":"+33 1 42 68 53 00"},"shipping":{"street":"12 Rue de la Paix","city":"Paris","postcode":"75002","country":"FR"},"items":[{"sku":"SKU-00042","name":"Blue mug (350 ml)","quantity":2,"price":9.5},{"sku":"SKU-01337","name":"Tea towel, linen","quantity":1,"price":12}],"note":"Please leave the parcel with the neighbour if I am not home.","deliver_on":"2026-12-03","gift":false}"#.replace("ORDER_ID", &n.to_string());
        headers.push(("Content-Type".into(), "application/json".into()));
        headers.push(("Content-Length".into(), b.len().to_string()));
        Bytes::from(b)
    } else {
        Bytes::new()
    };
    WafRequest {
        method: if post { "POST" } else { "GET" }.to_owned(),
        uri: if post {
            format!("/api/orders?ref={n}")
        } else {
            format!("/api/orders/{n}?expand=items&ref={n}&utm_source=newsletter")
        },
        version: "HTTP/1.1",
        headers,
        body,
        body_complete: true,
        client_ip: std::net::Ipv4Addr::new(198, 51, 100, 7).into(),
        client_port: 40_000,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).map_or(2000, |a| a.parse().unwrap());
    let post = args.get(2).is_some_and(|a| a == "post");
    let crs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/crs");
    let engine = waf::load(EngineKind::Portcullis, &crs, &Profile::default()).unwrap();
    for i in 0..3000 {
        assert!(!engine.inspect(&req(100_000 + i, post)).unwrap().intervened);
    }
    let reqs: Vec<WafRequest> = (0..n).map(|i| req(200_000 + i, post)).collect();
    let t = std::time::Instant::now();
    for r in &reqs {
        std::hint::black_box(engine.inspect(r).unwrap());
    }
    eprintln!("{:.1} us/req", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}
