//! Security event sinks: JSON lines to stdout, stderr or a file.
//!
//! The data path must never wait on a disk: `emit` serializes the event and
//! hands the line to a writer thread through a bounded queue. If the queue is
//! full (the disk cannot keep up), the event is counted as dropped and a
//! warning is logged at most once a second; the request is not delayed.
//! A sink that fails to write (a full disk, a closed pipe) loses the lines of
//! that batch: they are counted in `portcullis_events_dropped_total{sink,
//! cause = "write_error"}` and an error is logged at most every 10 s; the
//! other sinks and the requests carry on.
//! Files are opened for append, created with mode 0600 (events name clients);
//! a path that is not a regular file (`/dev/full`, a FIFO) keeps its mode.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use portcullis_layers::EventSink;
use portcullis_policy::SecurityEvent;

use crate::config::{Events, Sink};
use crate::metrics::EVENTS_DROPPED;

/// Lines waiting for the writer before events are dropped.
const QUEUE: usize = 16 * 1024;

/// Most lines written as one batch (one write and flush per sink).
const BATCH: usize = 1024;

/// Writes events to the configured sinks from a background thread.
#[derive(Debug)]
pub struct JsonLines {
    tx: SyncSender<String>,
    dropped: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
    /// Sink names, the `sink` label of the drop counter.
    names: Vec<String>,
}

/// One sink: its name in metrics and logs, and where it writes.
struct Writer {
    name: String,
    out: Box<dyn Write + Send>,
}

fn sink_name(sink: &Sink) -> String {
    match sink {
        Sink::Stdout => "stdout".to_owned(),
        Sink::Stderr => "stderr".to_owned(),
        Sink::File(path) => format!("file:{}", path.display()),
    }
}

impl JsonLines {
    /// Opens the sinks and starts the writer thread.
    ///
    /// # Errors
    /// A file sink that cannot be opened.
    pub fn start(config: &Events) -> std::io::Result<Arc<Self>> {
        let mut writers: Vec<Writer> = Vec::new();
        for sink in &config.sinks {
            let out: Box<dyn Write + Send> = match sink {
                Sink::Stdout => Box::new(std::io::stdout()),
                Sink::Stderr => Box::new(std::io::stderr()),
                Sink::File(path) => {
                    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                        std::fs::create_dir_all(parent)?;
                    }
                    let mut options = OpenOptions::new();
                    options.create(true).append(true);
                    #[cfg(unix)]
                    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                    let file = options.open(path)?;
                    // An existing file keeps its mode on open; tighten it.
                    // Only a regular file: chmod on a device (`/dev/full`)
                    // or a FIFO would change it for every user of it.
                    #[cfg(unix)]
                    if file.metadata()?.file_type().is_file() {
                        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
                    }
                    Box::new(file)
                }
            };
            writers.push(Writer { name: sink_name(sink), out });
        }
        // The counters below go to the process's recorder, which the server
        // would otherwise install only after the sinks are open.
        crate::metrics::install();
        for w in &writers {
            // Exported at zero from the start: "none lost" is a reading too.
            for cause in ["queue_full", "write_error"] {
                metrics::counter!(EVENTS_DROPPED, "sink" => w.name.clone(), "cause" => cause).increment(0);
            }
        }
        let names = writers.iter().map(|w| w.name.clone()).collect();
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new().name("portcullis-events".into()).spawn(move || write_loop(&rx, writers))?;
        Ok(Arc::new(Self { tx, dropped: AtomicU64::new(0), last_warning: Mutex::new(None), names }))
    }

    /// Events dropped because the writer fell behind.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Writes what the queue holds as one batch per sink: one `write_all` and
/// one flush each, so a failing sink loses whole lines, and exactly the
/// lines it is charged with.
fn write_loop(rx: &Receiver<String>, mut writers: Vec<Writer>) {
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
        for w in &mut writers {
            if let Err(e) = w.out.write_all(&batch).and_then(|()| w.out.flush()) {
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
/// listing) is alone on stdout.
///
/// # Errors
/// A sink that cannot be opened or written; the other sinks are still written.
pub fn write_now(config: &Events, event: &SecurityEvent) -> std::io::Result<()> {
    let mut line = event.to_json_line();
    line.push('\n');
    let mut failure = None;
    for sink in &config.sinks {
        let written = match sink {
            Sink::Stdout | Sink::Stderr => std::io::stderr().write_all(line.as_bytes()),
            Sink::File(path) => {
                let mut options = OpenOptions::new();
                options.create(true).append(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                options.open(path).and_then(|mut file| file.write_all(line.as_bytes()))
            }
        };
        if let Err(e) = written {
            failure = Some(e);
        }
    }
    failure.map_or(Ok(()), Err)
}

impl EventSink for JsonLines {
    fn emit(&self, event: SecurityEvent) {
        match self.tx.try_send(event.to_json_line()) {
            Ok(()) => {}
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
