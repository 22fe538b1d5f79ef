//! A signing key and one token for the `auth = "jwt"` scenarios of `bench/run`
//! and `bench/pipeline`.
//!
//! ```text
//! bench_token PUBLIC_PEM_PATH ISSUER AUDIENCE EXP [ES256|EdDSA [ROLES]]
//! ```
//!
//! Generates a fresh key pair (ES256 by default), writes its public half as a
//! PEM file to `PUBLIC_PEM_PATH` (for `[auth.jwt] keys = [{ pem_file = … }]`)
//! and prints one token signed with it: `iss`, `aud`, `sub = "bench"`, `iat`
//! now and `exp`, either Unix seconds or `+SECONDS` from now, and with ROLES
//! (comma-separated) a `roles` array for a route's `require = { roles }`.
//! The private key is never written anywhere.
//!
//! Deployment caveat: benchmark tooling built on the test-only token forge
//! (`portcullis_policy` feature `testing`); never a way to mint real tokens.

use std::error::Error;
use std::process::ExitCode;
use std::time::SystemTime;

use jsonwebtoken::Algorithm;
use portcullis_policy::jwt::forge::TestKey;

const USAGE: &str =
    "usage: bench_token PUBLIC_PEM_PATH ISSUER AUDIENCE EXP(unix seconds or +SECONDS) [ES256|EdDSA [ROLES,...]]";

fn main() -> ExitCode {
    match run() {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_token: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<String, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [pem_path, issuer, audience, exp, rest @ ..] = args.as_slice() else {
        return Err(USAGE.into());
    };
    let (alg, roles) = match rest {
        [] => ("ES256", None),
        [alg] => (alg.as_str(), None),
        [alg, roles] => (alg.as_str(), Some(roles)),
        _ => return Err(USAGE.into()),
    };
    let alg = match alg {
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        _ => return Err(USAGE.into()),
    };
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_secs();
    let exp: u64 = match exp.strip_prefix('+') {
        Some(ttl) => now + ttl.parse::<u64>().map_err(|e| format!("invalid EXP {exp:?}: {e}"))?,
        None => exp.parse().map_err(|e| format!("invalid EXP {exp:?}: {e}"))?,
    };
    if exp <= now {
        return Err(format!("EXP {exp} is not in the future").into());
    }
    let key = TestKey::generate(alg, "bench");
    let pem = key.public_pem.as_deref().ok_or("the key has no public PEM")?;
    std::fs::write(pem_path, pem).map_err(|e| format!("cannot write {pem_path}: {e}"))?;
    let mut claims = serde_json::json!({"iss": issuer, "aud": audience, "sub": "bench", "iat": now, "exp": exp});
    if let Some(roles) = roles {
        let roles: Vec<&str> = roles.split(',').filter(|r| !r.is_empty()).collect();
        claims["roles"] = serde_json::json!(roles);
    }
    Ok(key.token(&claims))
}
