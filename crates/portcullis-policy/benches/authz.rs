//! Authorization decisions per second with a 200-rule policy: normalize the
//! path, find the most specific rule, check its requirement against the
//! caller. `cargo bench -p portcullis-policy --bench authz`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark set-up, like tests

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::Method;
use portcullis_policy::normalize::{PathPolicy, normalize};
use portcullis_policy::rbac::{Requirement, RoleDef, Roles, authorize};
use portcullis_policy::route::{Match, PathPattern, RouteEntry, RouteTable};
use portcullis_policy::{AuthMethod, Principal};

/// 200 rules over 50 services: read, write, per-object owner and admin.
fn policy() -> (RouteTable<(PathPattern, Requirement)>, Roles) {
    let mut entries = Vec::new();
    let mut defs = HashMap::new();
    for i in 0..50 {
        let svc = format!("svc{i}");
        defs.insert(format!("{svc}-reader"), RoleDef { permissions: vec![format!("{svc}:read")], inherits: vec![] });
        defs.insert(
            format!("{svc}-writer"),
            RoleDef { permissions: vec![format!("{svc}:write")], inherits: vec![format!("{svc}-reader")] },
        );
        let rules: [(String, Option<Vec<Method>>, Requirement); 4] = [
            (
                format!("/{svc}/items/**"),
                Some(vec![Method::GET]),
                Requirement { permissions: vec![format!("{svc}:read")], ..Requirement::default() },
            ),
            (
                format!("/{svc}/items/**"),
                Some(vec![Method::POST, Method::DELETE]),
                Requirement { permissions: vec![format!("{svc}:write")], ..Requirement::default() },
            ),
            (
                format!("/{svc}/users/{{id}}/**"),
                None,
                Requirement { owner: Some("id".into()), ..Requirement::default() },
            ),
            (format!("/{svc}/admin/**"), None, Requirement { roles: vec!["admin".into()], ..Requirement::default() }),
        ];
        for (path, methods, requirement) in rules {
            let pattern = PathPattern::parse(&path).unwrap();
            entries.push(RouteEntry { host: None, path: pattern.clone(), methods, value: (pattern, requirement) });
        }
    }
    defs.insert("admin".into(), RoleDef { permissions: vec!["*".into()], inherits: vec![] });
    (RouteTable::new(entries), Roles::compile(&defs).unwrap())
}

fn decisions(c: &mut Criterion) {
    let (table, roles) = policy();
    let paths = PathPolicy::default();
    let mut caller = Principal::new("alice", AuthMethod::Jwt, b"t");
    caller.roles = vec!["svc37-writer".into(), "svc3-reader".into()];
    let requests: [(&str, Method, bool); 4] = [
        ("/svc37/items/42", Method::GET, true),
        ("/svc37/Items//42/", Method::DELETE, true),
        ("/svc12/users/alice/orders", Method::GET, true),
        ("/svc49/admin/../admin/panel", Method::GET, false),
    ];
    let mut group = c.benchmark_group("authz_200_rules");
    group.throughput(Throughput::Elements(1));
    for (path, method, allowed) in &requests {
        group.bench_function(format!("{method} {path}"), |b| {
            b.iter(|| {
                let normal = normalize(black_box(path), &paths).unwrap();
                let key = paths.match_key(&normal);
                let Match::Found((pattern, requirement)) = table.find(None, &key, method) else { panic!("no rule") };
                let decision = authorize(&caller, requirement, &roles, |name| pattern.param(&normal, name));
                assert_eq!(decision.is_ok(), *allowed);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
