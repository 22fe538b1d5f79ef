//! libinjection's SQLi and XSS checks on typical request values: the Rust
//! port, and (feature `libmodsecurity`) the C library side by side.
//!
//! `cargo bench -p portcullis-libinjection --features libmodsecurity`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let json = {
        let mut v = String::from("{");
        let mut i = 0;
        while v.len() < 480 {
            v.push_str(&format!("\"field_{i}\":\"value number {i} with some text\","));
            i += 1;
        }
        v.push_str("\"end\":true}");
        v.into_bytes()
    };
    vec![
        ("short_clean", b"john.smith".to_vec()),
        ("json_500b", json),
        ("sqli_attack", b"1' UNION SELECT username, password FROM users--".to_vec()),
        ("xss_attack", b"<img src=x onerror=alert(document.cookie)>".to_vec()),
    ]
}

fn bench(c: &mut Criterion) {
    for (name, input) in inputs() {
        let mut group = c.benchmark_group(name);
        group.bench_function("rust_sqli", |b| b.iter(|| portcullis_libinjection::sqli(black_box(&input))));
        group.bench_function("rust_xss", |b| b.iter(|| portcullis_libinjection::xss(black_box(&input))));
        #[cfg(feature = "libmodsecurity")]
        {
            use portcullis_modsec::libinjection as c;
            group.bench_function("c_sqli", |b| b.iter(|| c::sqli(black_box(&input))));
            group.bench_function("c_xss", |b| b.iter(|| c::xss(black_box(&input))));
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
