//! WAF inspection cost with the OWASP CRS v4.28 rules (../shared/crs) at
//! paranoia 1, per engine (`waf/portcullis`, `waf/zentinel`): a clean GET, a
//! clean JSON POST, a clean 500-byte JSON POST, a browser GET with cookies,
//! an SQL injection; the response phases on a clean HTML page
//! (`waf/portcullis-responses`); and a verdict-cache hit (key + lookup).
//! `cargo bench -p portcullis-policy --bench waf` (system allocator) and
//! `--bench waf_mimalloc` (the allocator the gateway binary uses).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark set-up, like tests

use criterion::{criterion_group, criterion_main};

#[path = "support/waf_cases.rs"]
mod cases;

criterion_group!(benches, cases::bench);
criterion_main!(benches);
