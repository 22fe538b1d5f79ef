//! The OWASP CRS regression corpus (go-ftw YAML, `../shared/crs/regression`)
//! as requests to replay, shared by the CI threshold test
//! (`tests/waf_corpus.rs`) and the bench tool (`examples/waf_corpus.rs`,
//! driven by `bench/waf-corpus`).
//!
//! What it does, and how it follows go-ftw:
//! - Each stage's request is built into the bytes go-ftw puts on the wire:
//!   the request line, headers sorted by name, and with
//!   `autocomplete_headers` (the default) `Connection: close`, a
//!   `Content-Length`, and for a body without one a
//!   `Content-Type: application/x-www-form-urlencoded` whose unescaped
//!   `key=value` pairs get URL-encoded; multipart bodies get CRLF line ends;
//!   `encoded_request` is sent as decoded, byte for byte.
//! - A test is an ATTACK test if a stage expects rule ids (`expect_ids`), a
//!   BENIGN test if stages only list ids that must not fire
//!   (`no_expect_ids`). Its paranoia level is the highest of the expected
//!   rules' `paranoia-level/N` tags in the CRS rule files (untagged: 1).
//! - Tests of response rules (`RESPONSE-95x`) are kept apart
//!   ([`Corpus::responses`]): their requests ask go-ftw's backend (albedo)
//!   to answer with a given body, which [`reflected`] builds in process.
//!   They are judged as go-ftw judges them, by the rule ids reported
//!   ([`inspect_response`]).
//! - Skipped, and counted: `RESPONSE-980` (phase 5 reporting, which the
//!   gateway's events replace), and tests that check only a status or log
//!   text (no rule ids to classify them by).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use portcullis_policy::waf::{WafRequest, WafResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yaml_rust2::{Yaml, YamlLoader};

/// Whether a test is an attack (rules must fire) or benign (rules must not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Attack,
    Benign,
}

/// One go-ftw test: its stages' requests, as bytes on the wire.
#[derive(Debug, Clone)]
pub struct Test {
    /// `942100-3`: the file's rule id and the test id.
    pub name: String,
    pub class: Class,
    /// The paranoia level of the rules an attack test expects (1 for benign tests).
    pub paranoia: u8,
    /// The rule ids expected (attack) or expected not to fire (benign).
    pub ids: Vec<u32>,
    pub stages: Vec<Vec<u8>>,
}

/// The corpus: tests to replay, and what was skipped and why.
#[derive(Debug, Default)]
pub struct Corpus {
    pub tests: Vec<Test>,
    /// Tests of the response rules.
    pub responses: Vec<Test>,
    /// Reason → number of tests.
    pub skipped: Vec<(String, usize)>,
}

impl Corpus {
    /// Loads every `REQUEST-*/*.yaml` and `RESPONSE-*/*.yaml` under `regression`,
    /// with paranoia levels read from the CRS rule files in `rules`.
    ///
    /// # Panics
    /// A file that cannot be read or parsed (the corpus is part of the test fixture).
    pub fn load(regression: &Path, rules: &Path) -> Self {
        let levels = paranoia_levels(rules);
        let mut corpus = Self::default();
        let mut files: Vec<PathBuf> = Vec::new();
        for dir in std::fs::read_dir(regression).unwrap_or_else(|e| panic!("{}: {e}", regression.display())) {
            let dir = dir.unwrap().path();
            if !dir.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&dir).unwrap() {
                let file = file.unwrap().path();
                if file.extension().is_some_and(|e| e == "yaml") {
                    files.push(file);
                }
            }
        }
        files.sort();
        for file in &files {
            let response =
                file.parent().and_then(|d| d.file_name()).is_some_and(|n| n.to_string_lossy().starts_with("RESPONSE-"));
            let text = std::fs::read_to_string(file).unwrap();
            let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let Some(doc) = docs.first() else { continue };
            let rule = doc["rule_id"].as_i64().unwrap_or_default();
            let Some(tests) = doc["tests"].as_vec() else { continue };
            for test in tests {
                let name = format!("{rule}-{}", scalar(&test["test_id"]).unwrap_or_default());
                corpus.add(name, test, response, &levels);
            }
        }
        corpus
    }

    fn add(&mut self, name: String, test: &Yaml, response: bool, levels: &HashMap<u32, u8>) {
        let stages = test["stages"].as_vec().cloned().unwrap_or_default();
        let ids = |key: &str| -> Vec<u32> {
            stages
                .iter()
                .flat_map(|s| s["output"]["log"][key].as_vec().cloned().unwrap_or_default())
                .filter_map(|id| id.as_i64().and_then(|id| u32::try_from(id).ok()))
                .collect()
        };
        let (expect, no_expect) = (ids("expect_ids"), ids("no_expect_ids"));
        if response && expect.iter().chain(&no_expect).any(|id| *id >= 980_000) {
            self.skip("phase 5 reporting (RESPONSE-980): the gateway's events replace it");
            return;
        }
        let (class, ids) = if !expect.is_empty() {
            (Class::Attack, expect)
        } else if !no_expect.is_empty() {
            (Class::Benign, no_expect)
        } else {
            self.skip("no rule ids to classify by (the test checks only a status or log text)");
            return;
        };
        let paranoia = match class {
            Class::Attack => ids.iter().map(|id| levels.get(id).copied().unwrap_or(1)).max().unwrap_or(1),
            Class::Benign => 1,
        };
        let stages = stages.iter().map(|s| wire(&s["input"])).collect();
        let test = Test { name, class, paranoia, ids, stages };
        if response { self.responses.push(test) } else { self.tests.push(test) }
    }

    fn skip(&mut self, reason: &str) {
        match self.skipped.iter_mut().find(|(r, _)| r == reason) {
            Some(entry) => entry.1 += 1,
            None => self.skipped.push((reason.to_owned(), 1)),
        }
    }
}

/// A YAML scalar as text (header values and ids can be numbers or booleans).
fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The bytes go-ftw sends for one stage's `input`.
pub fn wire(input: &Yaml) -> Vec<u8> {
    if let Some(encoded) = input["encoded_request"].as_str() {
        let compact: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
        return base64::engine::general_purpose::STANDARD.decode(compact).unwrap_or_default();
    }
    let method = scalar(&input["method"]).unwrap_or_else(|| "GET".into());
    let uri = scalar(&input["uri"]).unwrap_or_else(|| "/".into());
    let version = scalar(&input["version"]).unwrap_or_else(|| "HTTP/1.1".into());
    let autocomplete = input["autocomplete_headers"].as_bool().unwrap_or(true);
    // go-ftw keeps one value per exact name, and writes them sorted by name.
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(map) = input["headers"].as_hash() {
        for (name, value) in map {
            let (Some(name), Some(value)) = (scalar(name), scalar(value)) else { continue };
            headers.retain(|(n, _)| *n != name);
            headers.push((name, value));
        }
    }
    let add = |headers: &mut Vec<(String, String)>, name: &str, value: String| {
        if !headers.iter().any(|(n, v)| n == name && !v.is_empty()) {
            headers.retain(|(n, _)| n != name);
            headers.push((name.to_owned(), value));
        }
    };
    let mut data: Vec<u8> = scalar(&input["data"]).unwrap_or_default().into_bytes();
    if !data.is_empty() && autocomplete {
        add(&mut headers, "Content-Type", "application/x-www-form-urlencoded".into());
        if headers.iter().any(|(n, v)| n == "Content-Type" && v == "application/x-www-form-urlencoded") {
            data = encode_form(&data);
        }
    }
    if headers.iter().any(|(n, v)| n == "Content-Type" && v.starts_with("multipart/form-data;")) {
        let mut crlf = Vec::with_capacity(data.len());
        for &b in &data {
            if b == b'\n' {
                crlf.push(b'\r');
            }
            crlf.push(b);
        }
        data = crlf;
    }
    if autocomplete {
        add(&mut headers, "Connection", "close".into());
        // go-ftw's `^POST|PUT|PATCH|DELETE$`, quirks included.
        let body_method = method.starts_with("POST")
            || method.contains("PUT")
            || method.contains("PATCH")
            || method.ends_with("DELETE");
        if !data.is_empty() || body_method {
            add(&mut headers, "Content-Length", data.len().to_string());
        }
    }
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let mut head = format!("{method} {uri} {version}\r\n");
    for (name, value) in &headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&data);
    bytes
}

/// go-ftw's form encoding: only if the body is not already escaped (unescaping
/// changes nothing and succeeds), each key and value is query-escaped.
fn encode_form(data: &[u8]) -> Vec<u8> {
    if query_unescape(data).as_deref() != Some(data) {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(data.len() * 2);
    for (i, token) in data.split(|&b| b == b'&').enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        match token.iter().position(|&b| b == b'=') {
            Some(eq) => {
                query_escape(&token[..eq], &mut out);
                out.push(b'=');
                query_escape(&token[eq + 1..], &mut out);
            }
            None => query_escape(token, &mut out),
        }
    }
    out
}

/// Go's `url.QueryEscape`.
fn query_escape(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b),
            b' ' => out.push(b'+'),
            _ => out.extend_from_slice(format!("%{b:02X}").as_bytes()),
        }
    }
}

/// Go's `url.QueryUnescape`; `None` for a malformed escape.
fn query_unescape(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let text = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Every rule id in the CRS rule files with its `paranoia-level/N` tag.
pub fn paranoia_levels(rules: &Path) -> HashMap<u32, u8> {
    let mut levels = HashMap::new();
    let Ok(entries) = std::fs::read_dir(rules) else { return levels };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "conf") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // One statement per directive: lines joined across trailing backslashes.
        let mut statement = String::new();
        for line in text.lines() {
            let trimmed = line.trim_end();
            if let Some(continued) = trimmed.strip_suffix('\\') {
                statement.push_str(continued);
                continue;
            }
            statement.push_str(trimmed);
            if let Some(id) = directive_id(&statement) {
                let level = statement
                    .split("paranoia-level/")
                    .nth(1)
                    .and_then(|rest| rest.chars().next())
                    .and_then(|c| c.to_digit(10))
                    .and_then(|d| u8::try_from(d).ok())
                    .unwrap_or(1);
                levels.insert(id, level);
            }
            statement.clear();
        }
    }
    levels
}

fn directive_id(statement: &str) -> Option<u32> {
    let trimmed = statement.trim_start();
    if trimmed.starts_with('#') {
        return None;
    }
    // `id:` as an action (after a quote, comma or space), not inside a pattern.
    let at = statement
        .match_indices("id:")
        .map(|(at, _)| at)
        .find(|&at| at > 0 && matches!(statement.as_bytes()[at - 1], b'"' | b',' | b' ' | b'\''))?
        + 3;
    let digits: String = statement[at..].chars().skip_while(|c| *c == '\'').take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A request as the gateway's HTTP/1 parser (httparse, as in hyper) would
/// hand it to the WAF, or why it would refuse it before the WAF runs.
///
/// # Errors
/// The request is not valid HTTP/1 (the gateway answers 400).
pub fn to_waf_request(raw: &[u8]) -> Result<WafRequest, String> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("incomplete request head".into()),
        Err(e) => return Err(format!("malformed request: {e}")),
    };
    let method = request.method.unwrap_or("GET").to_owned();
    let uri = request.path.unwrap_or("/").to_owned();
    let version = if request.version == Some(0) { "HTTP/1.0" } else { "HTTP/1.1" };
    let mut list = Vec::with_capacity(request.headers.len());
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    for header in request.headers.iter() {
        let Ok(value) = std::str::from_utf8(header.value) else {
            return Err(format!("header {} is not UTF-8", header.name));
        };
        if header.name.eq_ignore_ascii_case("content-length") {
            let parsed = value.trim().parse::<usize>().map_err(|_| format!("bad Content-Length {value:?}"))?;
            if content_length.is_some_and(|n| n != parsed) {
                return Err("conflicting Content-Length headers".into());
            }
            content_length = Some(parsed);
        }
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
        list.push((header.name.to_owned(), value.to_owned()));
    }
    let rest = &raw[head_len..];
    let body = if chunked {
        dechunk(rest).ok_or("malformed chunked body")?
    } else {
        let n = content_length.unwrap_or(0);
        if rest.len() < n {
            return Err(format!("body shorter than its Content-Length ({} < {n})", rest.len()));
        }
        rest[..n].to_vec()
    };
    Ok(WafRequest {
        method,
        uri,
        version,
        headers: list,
        body: Bytes::from(body),
        body_complete: true,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        client_port: 40_000,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// What happened to one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The WAF (or the gateway in front of it) refused a stage.
    Blocked,
    /// Refused before the WAF: not valid HTTP (400 from the HTTP parser).
    Malformed,
    Passed,
    /// No answer (timeout, connection closed) or a 5xx: not counted as blocked.
    Error,
}

impl Outcome {
    pub fn blocked(self) -> bool {
        matches!(self, Self::Blocked | Self::Malformed)
    }
}

/// Tallies of one replay.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub attacks: usize,
    pub attacks_blocked: usize,
    pub pl1_attacks: usize,
    pub pl1_blocked: usize,
    pub benign: usize,
    pub benign_blocked: usize,
    /// Tests refused before the WAF (counted as blocked above).
    pub malformed: usize,
    pub errors: usize,
    pub requests: usize,
    /// PL1 attack tests that passed, and benign tests that were blocked.
    pub missed: Vec<String>,
    pub false_positives: Vec<String>,
}

impl Tally {
    pub fn record(&mut self, test: &Test, outcome: Outcome) {
        self.requests += test.stages.len();
        let blocked = outcome.blocked();
        self.malformed += usize::from(outcome == Outcome::Malformed);
        self.errors += usize::from(outcome == Outcome::Error);
        match test.class {
            Class::Attack => {
                self.attacks += 1;
                self.attacks_blocked += usize::from(blocked);
                if test.paranoia == 1 {
                    self.pl1_attacks += 1;
                    self.pl1_blocked += usize::from(blocked);
                    if !blocked {
                        self.missed.push(test.name.clone());
                    }
                }
            }
            Class::Benign => {
                self.benign += 1;
                self.benign_blocked += usize::from(blocked);
                if blocked {
                    self.false_positives.push(test.name.clone());
                }
            }
        }
    }

    pub fn pct(part: usize, whole: usize) -> f64 {
        if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 }
    }

    pub fn attacks_pct(&self) -> f64 {
        Self::pct(self.attacks_blocked, self.attacks)
    }

    pub fn pl1_pct(&self) -> f64 {
        Self::pct(self.pl1_blocked, self.pl1_attacks)
    }

    pub fn benign_pct(&self) -> f64 {
        Self::pct(self.benign_blocked, self.benign)
    }

    pub fn summary(&self) -> String {
        format!(
            "attack tests blocked {:.1}% ({}/{}), PL1 attack tests blocked {:.1}% ({}/{}), benign tests blocked {:.1}% ({}/{}); refused as malformed HTTP {}, errors {}",
            self.attacks_pct(),
            self.attacks_blocked,
            self.attacks,
            self.pl1_pct(),
            self.pl1_blocked,
            self.pl1_attacks,
            self.benign_pct(),
            self.benign_blocked,
            self.benign,
            self.malformed,
            self.errors,
        )
    }
}

/// Runs a test's stages through an engine in process: blocked if a stage is
/// intervened, malformed if the HTTP parser refuses a stage first.
pub fn inspect(engine: &dyn portcullis_policy::waf::Engine, test: &Test) -> Outcome {
    let mut outcome = Outcome::Passed;
    for stage in &test.stages {
        match to_waf_request(stage) {
            Err(_) => return Outcome::Malformed,
            Ok(request) => match engine.inspect(&request) {
                Ok(verdict) if verdict.intervened => outcome = Outcome::Blocked,
                Ok(_) => {}
                Err(_) => return Outcome::Error,
            },
        }
    }
    outcome
}

/// The response go-ftw's backend (albedo) gives `request`: for
/// `/reflect`, the status, headers and body its JSON asks for (status 200
/// and a sniffed `Content-Type` by default, as Go's server does); for any
/// other path, a 200 echoing the request body as plain text.
pub fn reflected(request: &WafRequest) -> WafResponse {
    let mut status = 200;
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut body = request.body.to_vec();
    if request.uri.split('?').next() == Some("/reflect")
        && let Ok(serde_json::Value::Object(spec)) = serde_json::from_slice::<serde_json::Value>(&request.body)
    {
        status =
            spec.get("status").and_then(serde_json::Value::as_u64).and_then(|s| u16::try_from(s).ok()).unwrap_or(200);
        if let Some(serde_json::Value::Object(map)) = spec.get("headers") {
            headers =
                map.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect();
        }
        body = match (spec.get("body"), spec.get("encodedBody")) {
            (Some(serde_json::Value::String(text)), _) => text.clone().into_bytes(),
            (_, Some(serde_json::Value::String(encoded))) => {
                base64::engine::general_purpose::STANDARD.decode(encoded).unwrap_or_default()
            }
            _ => Vec::new(),
        };
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
        let start = String::from_utf8_lossy(&body[..body.len().min(512)]).trim_start().to_ascii_lowercase();
        let html = [
            "<!doctype html",
            "<html",
            "<head",
            "<script",
            "<iframe",
            "<h1",
            "<div",
            "<font",
            "<table",
            "<a",
            "<style",
            "<title",
            "<b",
            "<body",
            "<br",
            "<p",
            "<!--",
        ]
        .iter()
        .any(|tag| start.starts_with(tag) && start[tag.len()..].starts_with([' ', '>']));
        let kind = if html { "text/html; charset=utf-8" } else { "text/plain; charset=utf-8" };
        headers.push(("Content-Type".to_owned(), kind.to_owned()));
    }
    headers.push(("Content-Length".to_owned(), body.len().to_string()));
    WafResponse { status, version: "HTTP/1.1", headers, body: Some(Bytes::from(body)) }
}

/// Runs a response test's stages through an engine in process (request,
/// then the [`reflected`] response): the rule ids reported over all stages
/// (959100 when the outbound blocking rule intervened), or `None` when a
/// stage could not run.
pub fn inspect_response(engine: &dyn portcullis_policy::waf::Engine, test: &Test) -> Option<Vec<u32>> {
    let mut reported: Vec<u32> = Vec::new();
    for stage in &test.stages {
        let request = to_waf_request(stage).ok()?;
        let (_, transaction) = engine.begin(&request).ok()?;
        let verdict = engine.inspect_response(&request, transaction, &reflected(&request)).ok()?;
        reported.extend(verdict.matches.iter().map(|m| m.id));
        if verdict.intervened {
            // CRS's outbound blocking rule is what intervenes.
            reported.push(959_100);
        }
    }
    reported.sort_unstable();
    reported.dedup();
    Some(reported)
}

/// Whether `reported` is what the test expects: every expected rule id
/// (attack), none of the listed ones (benign).
pub fn as_expected(test: &Test, reported: &[u32]) -> bool {
    match test.class {
        Class::Attack => test.ids.iter().all(|id| reported.contains(id)),
        Class::Benign => !test.ids.iter().any(|id| reported.contains(id)),
    }
}

/// The bytes of a request on the wire (HTTP/1.1 framing as given).
pub fn raw_of(request: &WafRequest) -> Vec<u8> {
    let mut head = format!("{} {} {}\r\n", request.method, request.uri, request.version);
    for (name, value) in &request.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&request.body);
    bytes
}

/// Sends one raw request on a new connection; the answer's status code, or
/// `None` when there is none within 5 s.
pub async fn send(addr: &str, raw: &[u8]) -> Option<u16> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        // A target may answer (and close) before it has read the whole request.
        let _ = stream.write_all(raw).await;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
                let line = std::str::from_utf8(&buf[..end]).ok()?;
                return line.split(' ').nth(1)?.parse().ok();
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange).await.ok().flatten()
}

/// Replays `tests` against `addr` with `connections` concurrent workers, one
/// connection per request as go-ftw does. A stage answered 4xx is blocked
/// (the upstream behind the target answers 200 to everything); no answer
/// or a 5xx is an error. Returns each test's outcome, in order, and how
/// often each status (or `none`) was answered.
pub async fn replay_http(tests: &[Test], addr: &str, connections: usize) -> (Vec<Outcome>, BTreeMap<String, usize>) {
    let tests = Arc::new(tests.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..connections.max(1) {
        let (tests, next, addr) = (Arc::clone(&tests), Arc::clone(&next), addr.to_owned());
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(test) = tests.get(i) else { break };
                let mut outcome = Outcome::Passed;
                let mut codes = Vec::new();
                for stage in &test.stages {
                    let status = send(&addr, stage).await;
                    codes.push(status.map_or_else(|| "none".to_owned(), |s| s.to_string()));
                    match status {
                        Some(400..=499) => outcome = Outcome::Blocked,
                        Some(100..=399) => {}
                        _ => {
                            outcome = Outcome::Error;
                            break;
                        }
                    }
                }
                done.push((i, outcome, codes));
            }
            done
        }));
    }
    let mut results = Vec::new();
    for worker in workers {
        results.extend(worker.await.unwrap_or_default());
    }
    results.sort_by_key(|(i, _, _)| *i);
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let outcomes = results
        .into_iter()
        .map(|(_, outcome, codes)| {
            for code in codes {
                *statuses.entry(code).or_default() += 1;
            }
            outcome
        })
        .collect();
    (outcomes, statuses)
}
