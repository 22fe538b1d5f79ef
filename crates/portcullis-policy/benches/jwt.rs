//! JWT verification throughput: full verification per algorithm (no cache)
//! and cached lookups. `cargo bench -p portcullis-policy --bench jwt`; the
//! reported time per iteration inverts to verifications per second.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark set-up, like tests

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jsonwebtoken::Algorithm;
use portcullis_policy::jwt::cache::TokenCache;
use portcullis_policy::jwt::forge::TestKey;
use portcullis_policy::jwt::{self, JwtPolicy};

const ISS: &str = "https://idp.example.test/";

fn claims(now: u64) -> serde_json::Value {
    serde_json::json!({"iss": ISS, "aud": "api", "sub": "alice", "exp": now + 3600, "iat": now, "roles": ["editor", "viewer"], "scope": "orders:read"})
}

fn verification(c: &mut Criterion) {
    let now = SystemTime::now();
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let mut policy = JwtPolicy::new(ISS);
    policy.audiences = vec!["api".into()];
    let mut group = c.benchmark_group("jwt_verify");
    group.throughput(Throughput::Elements(1));
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let key = TestKey::generate(alg, "k1");
        let keys = TestKey::key_set(&[&key]);
        let token = key.token(&claims(secs));
        assert!(jwt::verify(&token, &policy, &keys, now).is_ok());
        group.bench_function(format!("{alg:?}"), |b| {
            b.iter(|| jwt::verify(black_box(&token), &policy, &keys, now).unwrap());
        });
    }
    group.finish();

    let key = TestKey::generate(Algorithm::ES256, "k1");
    let keys = TestKey::key_set(&[&key]);
    let cache = TokenCache::new(10_000);
    let tokens: Vec<String> = (0..1000)
        .map(|i| {
            let mut c = claims(secs);
            c["sub"] = serde_json::json!(format!("user-{i}"));
            key.token(&c)
        })
        .collect();
    for token in &tokens {
        let verified = jwt::verify(token, &policy, &keys, now).unwrap();
        cache.insert(TokenCache::key(token), &verified.principal);
    }
    let mut group = c.benchmark_group("jwt_cache");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("hit", |b| {
        b.iter(|| {
            i = (i + 1) % tokens.len();
            let key = TokenCache::key(black_box(&tokens[i]));
            cache.get(&key, now).unwrap()
        });
    });
    let later = now + Duration::from_secs(1);
    group.bench_function("miss", |b| b.iter(|| cache.get(&TokenCache::key(black_box("not-a-token")), later)));
    group.finish();
}

criterion_group!(benches, verification);
criterion_main!(benches);
