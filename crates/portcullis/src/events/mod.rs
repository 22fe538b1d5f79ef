//! Security event sinks: JSON lines to stdout, stderr or a rotated file
//! (`file.rs`), batched POSTs to a webhook (`webhook.rs`), RFC 5424 syslog
//! (`syslog.rs`); in the Portcullis schema or Elastic Common Schema
//! (`ecs.rs`).
//!
//! The data path must never wait on a disk or a network: `emit` serializes
//! the event once and hands the line to each sink's queue. Line sinks
//! (stdout, stderr, files) share a writer thread behind a bounded queue; if
//! it is full (the disk cannot keep up) the new event is counted as dropped
//! for them and a warning is logged at most once a second. Network sinks
//! each have their own thread and bounded queue, which drops its oldest
//! event when full (`queue.rs`). No request is delayed either way.
//! A sink that fails to write (a full disk, a closed pipe, a dead collector)
//! loses those events: they are counted in `portcullis_events_dropped_total
//! {sink, cause}` and an error is logged at most every 10 s; the other sinks
//! and the requests carry on. Causes: `queue_full`, `write_error` (line and
//! syslog sinks), `retries_exhausted` and `rejected` (webhook).
//! `portcullis_event_queue_depth{sink}` shows each sink's backlog.
//!
//! Allowed requests are sampled by the reject layer (`[events]
//! sample_allowed`, passed to it with the stack's configuration, so every
//! sink and wrapper sees the same sampled events); denials, bans and notes
//! are never sampled.

mod ecs;
mod file;
mod queue;
mod syslog;
mod webhook;

use std::io::Write;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use portcullis_layers::EventSink;
use portcullis_policy::SecurityEvent;

pub use self::ecs::ECS_VERSION;
pub use self::file::RotatingFile;
use crate::config::{Events, Schema, Sink};

/// Counter: events lost by a sink, by cause.
pub const EVENTS_DROPPED: &str = crate::metrics::EVENTS_DROPPED;
/// Gauge: events waiting in a sink's queue.
pub const QUEUE_DEPTH: &str = "portcullis_event_queue_depth";

/// Lines waiting for the line writer before events are dropped.
const QUEUE: usize = 16 * 1024;

/// Most lines written as one batch (one write and flush per sink).
const BATCH: usize = 1024;

/// Describes this module's metrics (the recorder must be installed).
pub fn describe() {
    metrics::describe_gauge!(
        QUEUE_DEPTH,
        "Security events waiting in a sink's queue (line sinks share one writer queue)."
    );
    metrics::describe_counter!(
        EVENTS_DROPPED,
        "Security events a sink lost, by cause (queue_full, write_error, retries_exhausted, rejected)."
    );
}

/// The event as one line (without the newline) in `schema`.
#[must_use]
pub fn render(schema: Schema, event: &SecurityEvent) -> String {
    match schema {
        Schema::Portcullis => event.to_json_line(),
        Schema::Ecs => ecs::to_json_line(event),
    }
}

/// Writes events to the configured sinks from background threads.
#[derive(Debug)]
pub struct JsonLines {
    schema: Schema,
    lines: Option<Lines>,
    webhooks: Vec<webhook::Webhook>,
    syslogs: Vec<syslog::Syslog>,
}

/// The line sinks' writer queue.
#[derive(Debug)]
struct Lines {
    tx: SyncSender<String>,
    depth: Arc<Depth>,
    dropped: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
    /// Sink names, the `sink` label of the drop counter.
    names: Vec<String>,
}

/// The line writer's queue depth, mirrored on each line sink's gauge.
#[derive(Debug)]
struct Depth {
    count: AtomicIsize,
    gauges: Vec<metrics::Gauge>,
}

impl Depth {
    /// Counts `n` more (or fewer) queued lines. The writer may take a line
    /// before its sender counted it, so the count can dip below zero for a
    /// moment: shown as zero.
    fn add(&self, n: isize) {
        let now = (self.count.fetch_add(n, Ordering::Relaxed) + n).max(0);
        for g in &self.gauges {
            #[allow(clippy::cast_precision_loss)]
            g.set(now as f64);
        }
    }
}

/// One line sink: its name in metrics and logs, and where it writes.
struct Writer {
    name: String,
    out: Out,
}

enum Out {
    Stdout,
    Stderr,
    File(RotatingFile),
}

impl Out {
    fn write_lines(&mut self, lines: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(lines).and_then(|()| out.flush())
            }
            Self::Stderr => {
                let mut out = std::io::stderr().lock();
                out.write_all(lines).and_then(|()| out.flush())
            }
            Self::File(file) => file.write_lines(lines),
        }
    }
}

impl JsonLines {
    /// Opens the sinks and starts their threads.
    ///
    /// # Errors
    /// A file sink that cannot be opened, a webhook's TLS roots that cannot
    /// be loaded, a thread that cannot be started.
    pub fn start(config: &Events) -> std::io::Result<Arc<Self>> {
        // The metrics below go to the process's recorder, which the server
        // would otherwise install only after the sinks are open.
        crate::metrics::install();
        describe();
        let mut writers: Vec<Writer> = Vec::new();
        let mut webhooks = Vec::new();
        let mut syslogs = Vec::new();
        for sink in &config.sinks {
            let out = match sink {
                Sink::Stdout => Out::Stdout,
                Sink::Stderr => Out::Stderr,
                Sink::File(f) => Out::File(RotatingFile::open(&f.path, f.max_size, f.keep)?),
                Sink::Webhook(w) => {
                    webhooks.push(webhook::Webhook::start(w)?);
                    continue;
                }
                Sink::Syslog(s) => {
                    syslogs.push(syslog::Syslog::start(s)?);
                    continue;
                }
            };
            writers.push(Writer { name: sink.name(), out });
        }
        for name in config.sinks.iter().map(Sink::name) {
            // Exported at zero from the start: "none lost" is a reading too.
            metrics::counter!(EVENTS_DROPPED, "sink" => name.clone(), "cause" => "queue_full").increment(0);
            if !matches!(config.sinks.iter().find(|s| s.name() == name), Some(Sink::Webhook(_))) {
                metrics::counter!(EVENTS_DROPPED, "sink" => name, "cause" => "write_error").increment(0);
            }
        }
        let lines = if writers.is_empty() {
            None
        } else {
            let names: Vec<String> = writers.iter().map(|w| w.name.clone()).collect();
            let depth = Arc::new(Depth {
                count: AtomicIsize::new(0),
                gauges: names.iter().map(|n| metrics::gauge!(QUEUE_DEPTH, "sink" => n.clone())).collect(),
            });
            depth.add(0);
            let (tx, rx) = sync_channel(QUEUE);
            let thread_depth = depth.clone();
            std::thread::Builder::new()
                .name("portcullis-events".into())
                .spawn(move || write_loop(&rx, writers, &thread_depth))?;
            Some(Lines { tx, depth, dropped: AtomicU64::new(0), last_warning: Mutex::new(None), names })
        };
        Ok(Arc::new(Self { schema: config.schema, lines, webhooks, syslogs }))
    }

    /// Events dropped because the line writer fell behind.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.lines.as_ref().map_or(0, |l| l.dropped.load(Ordering::Relaxed))
    }
}

/// Writes what the queue holds as one batch per sink: one write and one
/// flush each (a rotating file may split it at line ends), so a failing
/// sink loses whole lines, and exactly the lines it is charged with.
fn write_loop(rx: &Receiver<String>, mut writers: Vec<Writer>, depth: &Depth) {
    let mut last_warning: Option<Instant> = None;
    let mut batch = Vec::new();
    while let Ok(line) = rx.recv() {
        batch.clear();
        let mut lines = 0u64;
        let mut next = Some(line);
        while let Some(line) = next.take() {
            batch.extend_from_slice(line.as_bytes());
            batch.push(b'\n');
            lines += 1;
            if lines < BATCH as u64 {
                match rx.try_recv() {
                    Ok(more) => next = Some(more),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
                }
            }
        }
        depth.add(-isize::try_from(lines).unwrap_or(isize::MAX));
        for w in &mut writers {
            if let Err(e) = w.out.write_lines(&batch) {
                metrics::counter!(EVENTS_DROPPED, "sink" => w.name.clone(), "cause" => "write_error").increment(lines);
                // A full disk must not go unnoticed, nor flood the log.
                if last_warning.is_none_or(|t| t.elapsed().as_secs() >= 10) {
                    last_warning = Some(Instant::now());
                    tracing::error!(sink = %w.name, error = %e, lost = lines, "cannot write security events; they are dropped");
                }
            }
        }
    }
}

/// Writes one event to every sink now, without a writer thread: for
/// commands that exit right after (`portcullis user …`). A `stdout` sink
/// writes to stderr instead, so a command's own output (an invite code, a
/// listing) is alone on stdout. Files are rotated as by the server; a
/// syslog sink gets the message at once; webhook sinks are skipped (a
/// command does not wait for a collector: its events are in the other
/// sinks).
///
/// # Errors
/// A sink that cannot be opened or written; the other sinks are still written.
pub fn write_now(config: &Events, event: &SecurityEvent) -> std::io::Result<()> {
    let json = render(config.schema, event);
    let mut line = json.clone();
    line.push('\n');
    let mut failure = None;
    for sink in &config.sinks {
        let written = match sink {
            Sink::Stdout | Sink::Stderr => std::io::stderr().write_all(line.as_bytes()),
            Sink::File(f) => {
                RotatingFile::open(&f.path, f.max_size, f.keep).and_then(|mut file| file.write_lines(line.as_bytes()))
            }
            Sink::Syslog(s) => syslog::send_now(s, event, json.clone()),
            Sink::Webhook(_) => Ok(()),
        };
        if let Err(e) = written {
            failure = Some(e);
        }
    }
    failure.map_or(Ok(()), Err)
}

impl Lines {
    fn send(&self, line: String) {
        match self.tx.try_send(line) {
            Ok(()) => self.depth.add(1),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                for name in &self.names {
                    metrics::counter!(EVENTS_DROPPED, "sink" => name.clone(), "cause" => "queue_full").increment(1);
                }
                if let Ok(mut last) = self.last_warning.lock()
                    && last.is_none_or(|t| t.elapsed().as_secs() >= 1)
                {
                    *last = Some(Instant::now());
                    tracing::warn!(dropped_total = total, "security event queue full; events dropped");
                }
            }
        }
    }
}

impl EventSink for JsonLines {
    fn emit(&self, event: SecurityEvent) {
        let line = render(self.schema, &event);
        for sink in &self.syslogs {
            sink.push(syslog::Message::new(&event, line.clone()));
        }
        for sink in &self.webhooks {
            sink.push(line.clone());
        }
        if let Some(lines) = &self.lines {
            lines.send(line);
        }
    }
}
