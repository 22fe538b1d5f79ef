//! Security event sinks: JSON lines to stdout, stderr or a file.
//!
//! The data path must never wait on a disk: `emit` serializes the event and
//! hands the line to a writer thread through a bounded queue. If the queue is
//! full (the disk cannot keep up), the event is counted as dropped and a
//! warning is logged at most once a second; the request is not delayed.
//! Files are opened for append, created with mode 0600 (events name clients).

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use portcullis_layers::EventSink;
use portcullis_policy::SecurityEvent;

use crate::config::{Events, Sink};

/// Lines waiting for the writer before events are dropped.
const QUEUE: usize = 16 * 1024;

/// Writes events to the configured sinks from a background thread.
#[derive(Debug)]
pub struct JsonLines {
    tx: SyncSender<String>,
    dropped: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl JsonLines {
    /// Opens the sinks and starts the writer thread.
    ///
    /// # Errors
    /// A file sink that cannot be opened.
    pub fn start(config: &Events) -> std::io::Result<Arc<Self>> {
        let mut writers: Vec<Box<dyn Write + Send>> = Vec::new();
        for sink in &config.sinks {
            writers.push(match sink {
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
                    #[cfg(unix)]
                    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
                    Box::new(BufWriter::new(file))
                }
            });
        }
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new().name("portcullis-events".into()).spawn(move || write_loop(&rx, writers))?;
        Ok(Arc::new(Self { tx, dropped: AtomicU64::new(0), last_warning: Mutex::new(None) }))
    }

    /// Events dropped because the writer fell behind.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn write_loop(rx: &Receiver<String>, mut writers: Vec<Box<dyn Write + Send>>) {
    let mut last_warning: Option<Instant> = None;
    while let Ok(line) = rx.recv() {
        let mut failure: Option<std::io::Error> = None;
        let mut next = Some(line);
        while let Some(line) = next.take() {
            for w in &mut writers {
                if let Err(e) = w.write_all(line.as_bytes()).and_then(|()| w.write_all(b"\n")) {
                    failure = Some(e);
                }
            }
            match rx.try_recv() {
                Ok(more) => next = Some(more),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
            }
        }
        // Queue drained: make the batch visible.
        for w in &mut writers {
            if let Err(e) = w.flush() {
                failure = Some(e);
            }
        }
        // A full disk must not go unnoticed, nor flood the log.
        if let Some(e) = failure
            && last_warning.is_none_or(|t| t.elapsed().as_secs() >= 10)
        {
            last_warning = Some(Instant::now());
            tracing::error!(error = %e, "cannot write security events");
        }
    }
}

impl EventSink for JsonLines {
    fn emit(&self, event: SecurityEvent) {
        match self.tx.try_send(event.to_json_line()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
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
