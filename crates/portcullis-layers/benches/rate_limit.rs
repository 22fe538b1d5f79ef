//! The local rate-limit check: one GCRA decision in the sharded memory store
//! (hash, shard lock, map lookup, a few additions). Target: under 100 ns.
//! `cargo bench -p portcullis-layers --bench rate_limit`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark set-up, like tests

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis_layers::store::MemoryStore;
use portcullis_policy::rate_limit::Gcra;

fn local_check(c: &mut Criterion) {
    let store = MemoryStore::new(1_000_000);
    let quota = Gcra::new(1_000_000, Duration::from_secs(1), 1_000_000).unwrap();
    let keys: Vec<String> = (0..10_000).map(|i| format!("rl:per_ip:10.0.{}.{}", i / 256, i % 256)).collect();
    let mut now = 1_000_000_000_000u64;
    for key in &keys {
        store.check_now(key, quota, now);
    }
    let mut group = c.benchmark_group("rate_limit");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("memory_check_10k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            now += 1_000;
            black_box(store.check_now(black_box(&keys[i]), quota, now))
        });
    });
    group.finish();
}

criterion_group!(benches, local_check);
criterion_main!(benches);
