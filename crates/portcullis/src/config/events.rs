//! `[events]`: where security events go, in which field names, and which
//! allowed requests are sampled.
//!
//! Decision rules:
//! - `sinks` (strings: `"stdout"`, `"stderr"`, `"file:PATH"`) and
//!   `[[events.sink]]` tables (a `type` of `file`, `webhook` or `syslog`
//!   and that type's options) add up; neither given means `["stdout"]`.
//!   Security events are evidence: an empty `sinks` with no table is refused.
//! - An option of another sink type is an error, not ignored (`keep` on a
//!   webhook is a typo or a misunderstanding).
//! - A webhook URL is `https://`, or `http://` to a loopback host only
//!   (the outbound client's rule); it may be a secret (`${ENV}`, `file:`),
//!   since some receivers carry their token in the path. Its auth header
//!   value is a secret; neither is ever printed.
//! - Sink names (the `sink` label of metrics) are unique.
//! - `sample_allowed` is a fraction between 0 and 1, kept in millionths.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;
use toml::Spanned;

use super::error::Collector;
use super::raw::Size;
use super::secret::{Secret, SecretSource, resolve};
use super::sources::Sources;
use super::values::{choice, duration, size, to_usize};

/// `[events]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvents {
    /// `"stdout"`, `"stderr"`, `"file:PATH"`.
    pub sinks: Option<Spanned<Vec<Spanned<String>>>>,
    /// `[[events.sink]]` tables.
    #[serde(default)]
    pub sink: Vec<Spanned<RawSink>>,
    /// `portcullis` (default) or `ecs`.
    pub schema: Option<Spanned<String>>,
    /// Fraction of allowed requests recorded (0 to 1).
    pub sample_allowed: Option<Spanned<f64>>,
}

/// One `[[events.sink]]` table as written: every option of every type, so
/// each keeps its span and a misplaced one is reported where it is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    pub name: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub max_size: Option<Spanned<Size>>,
    pub keep: Option<Spanned<i64>>,
    pub url: Option<Spanned<String>>,
    pub auth_header: Option<Spanned<String>>,
    pub auth: Option<Spanned<String>>,
    pub batch_size: Option<Spanned<i64>>,
    pub flush_interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub backoff_min: Option<Spanned<String>>,
    pub backoff_max: Option<Spanned<String>>,
    pub max_attempts: Option<Spanned<i64>>,
    pub queue: Option<Spanned<i64>>,
    pub address: Option<Spanned<String>>,
    pub facility: Option<Spanned<String>>,
    pub app_name: Option<Spanned<String>>,
}

/// `[events]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Events {
    /// One or more sinks.
    pub sinks: Vec<Sink>,
    /// The events' field names.
    pub schema: Schema,
    /// Allowed requests recorded, in millionths (0: none).
    pub sample_allowed_ppm: u32,
}

impl Default for Events {
    fn default() -> Self {
        Self { sinks: vec![Sink::Stdout], schema: Schema::Portcullis, sample_allowed_ppm: 0 }
    }
}

/// `[events] schema`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schema {
    /// The documented Portcullis event (docs/events.md).
    #[default]
    Portcullis,
    /// Elastic Common Schema field names.
    Ecs,
}

/// Where security events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A file, appended to, rotated by size if asked.
    File(FileSink),
    /// Batches POSTed as JSON arrays.
    Webhook(WebhookSink),
    /// RFC 5424 syslog messages.
    Syslog(SyslogSink),
}

impl Sink {
    /// The sink's name: the `sink` label of its metrics and logs.
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            Self::Stdout => "stdout".to_owned(),
            Self::Stderr => "stderr".to_owned(),
            Self::File(f) => f.name.clone(),
            Self::Webhook(w) => w.name.clone(),
            Self::Syslog(s) => s.name.clone(),
        }
    }
}

/// A file sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSink {
    /// Metric label (`file:PATH` unless named).
    pub name: String,
    /// The file (resolved against the configuration's directory).
    pub path: PathBuf,
    /// Rotate before the file would grow past this many bytes.
    pub max_size: Option<u64>,
    /// Rotated files kept (`path.1` … `path.N`).
    pub keep: usize,
}

impl FileSink {
    /// A file sink without rotation (the `"file:PATH"` form).
    #[must_use]
    pub fn plain(path: PathBuf) -> Self {
        Self { name: format!("file:{}", path.display()), path, max_size: None, keep: DEFAULT_KEEP }
    }
}

/// A webhook sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSink {
    /// Metric label (`webhook:scheme://host:port` unless named: the path
    /// may hold a token).
    pub name: String,
    /// The URL (a secret: it may carry a token).
    pub url: Secret,
    /// The auth header and its value, if any.
    pub auth: Option<(HeaderName, Secret)>,
    /// Most events in one POST.
    pub batch_size: usize,
    /// Longest an event waits for its batch to fill.
    pub flush_interval: Duration,
    /// Events held while the receiver is slow or down; the oldest go first.
    pub queue: usize,
    /// Deadline of one POST.
    pub timeout: Duration,
    /// First retry delay; doubled per attempt up to `backoff_max`, jittered.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Attempts per batch before it is dropped.
    pub max_attempts: u32,
}

/// A syslog sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSink {
    /// Metric label (`syslog:ADDRESS` unless named).
    pub name: String,
    /// Where messages go.
    pub transport: SyslogTransport,
    /// The facility code (RFC 5424 §6.2.1).
    pub facility: u8,
    /// APP-NAME.
    pub app_name: String,
    /// Messages held while the receiver is slow or down; the oldest go first.
    pub queue: usize,
}

/// `address` of a syslog sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTransport {
    /// `udp://host:port`: one datagram per message.
    Udp(String),
    /// `tcp://host:port`: RFC 6587 octet-counting framing.
    Tcp(String),
    /// `unix:PATH` (`/dev/log`): one datagram per message.
    Unix(PathBuf),
}

pub(super) const DEFAULT_KEEP: usize = 5;
const SINK_TYPES: &str = "\"file\", \"webhook\" or \"syslog\"";
const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("ntp", 12),
    ("audit", 13),
    ("alert", 14),
    ("clock", 15),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

pub(super) fn build_events(c: &mut Collector<'_>, raw: &RawEvents, base: &Path, env: &Sources<'_>) -> Events {
    let schema = choice(
        c,
        raw.schema.as_ref(),
        Schema::Portcullis,
        "events.schema",
        &[("portcullis", Schema::Portcullis), ("ecs", Schema::Ecs)],
    );
    let sample_allowed_ppm = raw.sample_allowed.as_ref().map_or(0, |v| sample(c, v));
    let mut sinks = Vec::new();
    match &raw.sinks {
        None if raw.sink.is_empty() => sinks.push(Sink::Stdout),
        None => {}
        Some(list) => {
            if list.get_ref().is_empty() && raw.sink.is_empty() {
                c.error(list.span(), "events.sinks is empty")
                    .help("security events are evidence; send them at least to \"stdout\"");
            }
            for sink in list.get_ref() {
                match sink.get_ref().as_str() {
                    "stdout" => sinks.push(Sink::Stdout),
                    "stderr" => sinks.push(Sink::Stderr),
                    other => match other.strip_prefix("file:") {
                        Some(path) if !path.is_empty() => sinks.push(Sink::File(FileSink::plain(base.join(path)))),
                        _ => {
                            c.error(sink.span(), format!("unknown event sink {other:?}"))
                                .expected("\"stdout\", \"stderr\" or \"file:PATH\"")
                                .help("webhook and syslog sinks are [[events.sink]] tables with a type");
                        }
                    },
                }
            }
        }
    }
    let mut names: Vec<String> = sinks.iter().map(Sink::name).collect();
    for table in &raw.sink {
        let Some(sink) = build_sink(c, table.get_ref(), base, env) else { continue };
        let name = sink.name();
        if names.contains(&name) {
            c.error(table.span(), format!("two event sinks are named {name:?}"))
                .help("give one of them a distinct name = \"…\" (the sink label of its metrics)");
        }
        names.push(name);
        sinks.push(sink);
    }
    Events { sinks, schema, sample_allowed_ppm }
}

fn sample(c: &mut Collector<'_>, value: &Spanned<f64>) -> u32 {
    let fraction = *value.get_ref();
    if !(0.0..=1.0).contains(&fraction) {
        c.error(value.span(), format!("events.sample_allowed {fraction} is out of range"))
            .expected("a fraction between 0 (no allowed request recorded) and 1 (every one)");
        return 0;
    }
    // In range, so the product is in 0..=1e6.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ppm = (fraction * 1_000_000.0).round() as u32;
    if fraction > 0.0 && ppm == 0 {
        c.error(value.span(), format!("events.sample_allowed {fraction} is below one in a million"))
            .expected("0, or a fraction of at least 0.000001");
    }
    ppm
}

/// Which options each sink type takes (`type` and `name` go with all).
const OPTIONS: &[(&str, &[&str])] = &[
    ("file", &["path", "max_size", "keep"]),
    (
        "webhook",
        &[
            "url",
            "auth_header",
            "auth",
            "batch_size",
            "flush_interval",
            "timeout",
            "backoff_min",
            "backoff_max",
            "max_attempts",
            "queue",
        ],
    ),
    ("syslog", &["address", "facility", "app_name", "queue"]),
];

fn build_sink(c: &mut Collector<'_>, raw: &RawSink, base: &Path, env: &Sources<'_>) -> Option<Sink> {
    let kind = raw.kind.get_ref().as_str();
    let Some((_, allowed)) = OPTIONS.iter().find(|(k, _)| *k == kind) else {
        c.error(raw.kind.span(), format!("unknown event sink type {kind:?}")).expected(SINK_TYPES);
        return None;
    };
    let present: [(&str, Option<std::ops::Range<usize>>); 17] = [
        ("path", raw.path.as_ref().map(Spanned::span)),
        ("max_size", raw.max_size.as_ref().map(Spanned::span)),
        ("keep", raw.keep.as_ref().map(Spanned::span)),
        ("url", raw.url.as_ref().map(Spanned::span)),
        ("auth_header", raw.auth_header.as_ref().map(Spanned::span)),
        ("auth", raw.auth.as_ref().map(Spanned::span)),
        ("batch_size", raw.batch_size.as_ref().map(Spanned::span)),
        ("flush_interval", raw.flush_interval.as_ref().map(Spanned::span)),
        ("timeout", raw.timeout.as_ref().map(Spanned::span)),
        ("backoff_min", raw.backoff_min.as_ref().map(Spanned::span)),
        ("backoff_max", raw.backoff_max.as_ref().map(Spanned::span)),
        ("max_attempts", raw.max_attempts.as_ref().map(Spanned::span)),
        ("queue", raw.queue.as_ref().map(Spanned::span)),
        ("address", raw.address.as_ref().map(Spanned::span)),
        ("facility", raw.facility.as_ref().map(Spanned::span)),
        ("app_name", raw.app_name.as_ref().map(Spanned::span)),
        ("name", None),
    ];
    let mut misplaced = false;
    for (option, span) in present {
        if let Some(span) = span
            && !allowed.contains(&option)
        {
            let owners: Vec<&str> = OPTIONS.iter().filter(|(_, o)| o.contains(&option)).map(|(k, _)| *k).collect();
            c.error(span, format!("{option} is not an option of a {kind} sink"))
                .expected(format!("one of type, name, {}", allowed.join(", ")))
                .help(format!("{option} belongs to a sink of type {}", owners.join(" or ")));
            misplaced = true;
        }
    }
    let name = raw.name.as_ref().map(|n| {
        let text = n.get_ref().trim();
        if text.is_empty() || text.len() > 64 || !text.chars().all(|ch| ch.is_ascii_graphic()) {
            c.error(n.span(), format!("invalid sink name {text:?}"))
                .expected("1 to 64 visible ASCII characters, such as \"siem\"");
        }
        text.to_owned()
    });
    let sink = match kind {
        "file" => build_file(c, raw, base, name),
        "webhook" => build_webhook(c, raw, base, env, name),
        _ => build_syslog(c, raw, base, name),
    };
    if misplaced { None } else { sink }
}

fn missing(c: &mut Collector<'_>, raw: &RawSink, option: &str, example: &str) {
    c.error(raw.kind.span(), format!("a {} sink needs {option}", raw.kind.get_ref())).expected(example.to_owned());
}

fn count(c: &mut Collector<'_>, value: Option<&Spanned<i64>>, default: u64, max: u64, what: &str) -> u64 {
    let Some(value) = value else { return default };
    match u64::try_from(*value.get_ref()) {
        Ok(n) if (1..=max).contains(&n) => n,
        _ => {
            c.error(value.span(), format!("{what} {} is out of range", value.get_ref()))
                .expected(format!("between 1 and {max}"));
            default
        }
    }
}

fn build_file(c: &mut Collector<'_>, raw: &RawSink, base: &Path, name: Option<String>) -> Option<Sink> {
    let Some(path) = raw.path.as_ref().filter(|p| !p.get_ref().trim().is_empty()) else {
        missing(c, raw, "path", "path = \"/var/log/portcullis/events.jsonl\"");
        return None;
    };
    let max_size = raw.max_size.as_ref().map(|m| size(c, Some(m), 0, 1024, 1 << 40, "max_size"));
    if let (Some(keep), None) = (&raw.keep, &raw.max_size) {
        c.error(keep.span(), "keep without max_size: the file is never rotated")
            .help("add max_size = \"100MiB\" to rotate by size, or remove keep");
    }
    let keep = to_usize(count(c, raw.keep.as_ref(), DEFAULT_KEEP as u64, 1000, "keep"));
    let path = base.join(path.get_ref().trim());
    let name = name.unwrap_or_else(|| format!("file:{}", path.display()));
    Some(Sink::File(FileSink { name, path, max_size, keep }))
}

const URL_EXPECTED: &str =
    "\"https://siem.example.com/ingest\", \"http://127.0.0.1:8088/events\" or \"${WEBHOOK_URL}\"";

fn build_webhook(
    c: &mut Collector<'_>,
    raw: &RawSink,
    base: &Path,
    env: &Sources<'_>,
    name: Option<String>,
) -> Option<Sink> {
    let Some(url_value) = &raw.url else {
        missing(c, raw, "url", URL_EXPECTED);
        return None;
    };
    let url = match resolve(url_value.get_ref().trim(), base, env) {
        Ok(url) => url,
        Err(e) => {
            c.error(url_value.span(), format!("webhook url: {e}")).expected(URL_EXPECTED);
            return None;
        }
    };
    // A URL from the environment or a file is named by its reference.
    let shown = match url.source() {
        SecretSource::Literal => url.expose().split('?').next().unwrap_or_default().to_owned(),
        SecretSource::Env(var) => format!("${{{var}}}"),
        SecretSource::File(path) => format!("file:{path}"),
    };
    let origin = match webhook_origin(url.expose().trim()) {
        Ok(origin) => origin,
        Err(reason) => {
            c.error(url_value.span(), format!("invalid webhook url {shown:?}: {reason}"))
                .expected(URL_EXPECTED)
                .help("events leave the host: they go over https, or plain http to a collector on this host");
            return None;
        }
    };
    let auth = match (&raw.auth_header, &raw.auth) {
        (_, None) => {
            if let Some(header) = &raw.auth_header {
                c.error(header.span(), "auth_header without auth").help("add auth = \"${WEBHOOK_TOKEN}\"");
            }
            None
        }
        (header, Some(value)) => {
            let header_name = header.as_ref().map_or(Some(http::header::AUTHORIZATION), |h| {
                let parsed = HeaderName::from_bytes(h.get_ref().trim().as_bytes()).ok();
                if parsed.is_none() {
                    c.error(h.span(), format!("invalid header name {:?}", h.get_ref()))
                        .expected("a header name such as \"Authorization\" or \"X-Api-Key\"");
                }
                parsed
            });
            let secret = match resolve(value.get_ref().trim(), base, env) {
                Ok(secret) => {
                    if http::HeaderValue::from_str(secret.expose()).is_err() {
                        c.error(value.span(), "the webhook auth value is not a valid header value")
                            .help("it must be visible ASCII (the value itself is not shown)");
                    }
                    if *secret.source() == SecretSource::Literal {
                        c.error(value.span(), "the webhook auth value is written in the file")
                            .expected("\"${WEBHOOK_AUTH}\" or \"file:/etc/portcullis/webhook-auth\"")
                            .help("a credential in the configuration ends up in backups and diffs; put the whole header value (\"Bearer …\") in a variable or a file");
                    }
                    Some(secret)
                }
                Err(e) => {
                    c.error(value.span(), format!("webhook auth: {e}"))
                        .expected("\"${WEBHOOK_AUTH}\" or \"file:/etc/portcullis/webhook-auth\"");
                    None
                }
            };
            header_name.zip(secret)
        }
    };
    let batch_size = to_usize(count(c, raw.batch_size.as_ref(), 100, 10_000, "batch_size"));
    let flush_interval = duration(c, raw.flush_interval.as_ref(), Duration::from_secs(1), "flush_interval");
    let queue = to_usize(count(c, raw.queue.as_ref(), 10_000, 1_000_000, "queue"));
    let timeout = duration(c, raw.timeout.as_ref(), Duration::from_secs(10), "timeout");
    let backoff_min = duration(c, raw.backoff_min.as_ref(), Duration::from_secs(1), "backoff_min");
    let backoff_max = duration(c, raw.backoff_max.as_ref(), Duration::from_secs(60), "backoff_max");
    if backoff_max < backoff_min
        && let Some(value) = raw.backoff_max.as_ref().or(raw.backoff_min.as_ref())
    {
        c.error(value.span(), "backoff_max is shorter than backoff_min")
            .help("retries wait backoff_min, then twice as long each time, up to backoff_max");
    }
    let max_attempts = u32::try_from(count(c, raw.max_attempts.as_ref(), 8, 100, "max_attempts")).unwrap_or(8);
    if queue < batch_size
        && let Some(q) = &raw.queue
    {
        c.error(q.span(), format!("queue {queue} is smaller than batch_size {batch_size}"))
            .help("the queue holds the events of at least one batch");
    }
    let name = name.unwrap_or_else(|| format!("webhook:{origin}"));
    Some(Sink::Webhook(WebhookSink {
        name,
        url,
        auth,
        batch_size,
        flush_interval,
        queue,
        timeout,
        backoff_min,
        backoff_max,
        max_attempts,
    }))
}

/// `scheme://authority` of an acceptable webhook URL, or why it is not.
fn webhook_origin(url: &str) -> Result<String, &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "not a valid URL")?;
    let host = uri.host().ok_or("no host")?;
    let authority = uri.authority().map_or(host, http::uri::Authority::as_str);
    // The authority's user information would be a credential in a label.
    if authority.contains('@') {
        return Err("credentials in the URL; use auth instead");
    }
    match uri.scheme_str() {
        Some("https") => Ok(format!("https://{authority}")),
        Some("http") if super::is_loopback_host(host) => Ok(format!("http://{authority}")),
        Some("http") => Err("plain http is allowed only to loopback hosts"),
        _ => Err("the scheme must be https"),
    }
}

const ADDRESS_EXPECTED: &str = "\"udp://siem.internal:514\", \"tcp://siem.internal:601\" or \"unix:/dev/log\"";

fn build_syslog(c: &mut Collector<'_>, raw: &RawSink, base: &Path, name: Option<String>) -> Option<Sink> {
    let Some(address) = &raw.address else {
        missing(c, raw, "address", ADDRESS_EXPECTED);
        return None;
    };
    let text = address.get_ref().trim();
    let host_port = |rest: &str| {
        let (host, port) = rest.rsplit_once(':')?;
        (!host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)).then(|| rest.to_owned())
    };
    let transport = if let Some(rest) = text.strip_prefix("udp://") {
        host_port(rest).map(SyslogTransport::Udp)
    } else if let Some(rest) = text.strip_prefix("tcp://") {
        host_port(rest).map(SyslogTransport::Tcp)
    } else {
        text.strip_prefix("unix:").filter(|p| !p.is_empty()).map(|p| SyslogTransport::Unix(base.join(p)))
    };
    let Some(transport) = transport else {
        c.error(address.span(), format!("invalid syslog address {text:?}")).expected(ADDRESS_EXPECTED);
        return None;
    };
    let facility = choice(c, raw.facility.as_ref(), 4, "syslog facility", FACILITIES);
    let app_name = raw.app_name.as_ref().map_or_else(
        || "portcullis".to_owned(),
        |a| {
            let text = a.get_ref().trim();
            // RFC 5424 §6.2.5: 1*48PRINTUSASCII.
            if text.is_empty() || text.len() > 48 || !text.chars().all(|ch| ch.is_ascii_graphic()) {
                c.error(a.span(), format!("invalid app_name {text:?}"))
                    .expected("1 to 48 visible ASCII characters (RFC 5424 APP-NAME)");
            }
            text.to_owned()
        },
    );
    let queue = to_usize(count(c, raw.queue.as_ref(), 10_000, 1_000_000, "queue"));
    let name = name.unwrap_or_else(|| format!("syslog:{text}"));
    Some(Sink::Syslog(SyslogSink { name, transport, facility, app_name, queue }))
}
