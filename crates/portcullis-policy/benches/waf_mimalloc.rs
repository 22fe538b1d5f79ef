//! The WAF benchmark (benches/waf.rs) with mimalloc, the global allocator of
//! the `portcullis` binary: the engine allocates heavily per request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark set-up, like tests

use criterion::{criterion_group, criterion_main};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/waf_cases.rs"]
mod cases;

criterion_group!(benches, cases::bench);
criterion_main!(benches);
