//! The bounded queue in front of a network sink (webhook, syslog): the data
//! path pushes, the sink's own thread takes batches.
//!
//! Decision rules:
//! - `push` never waits on the network: it takes a lock held only while
//!   items are moved in or out (never across a send), appends, and wakes
//!   the sender.
//! - Full, it drops the OLDEST item (`portcullis_events_dropped_total{sink,
//!   cause = "queue_full"}`, a warning at most once a second): while a
//!   receiver is down the queue holds the most recent events, which are the
//!   ones an operator looks at when it comes back.
//! - Its depth is exported as `portcullis_event_queue_depth{sink}`.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{EVENTS_DROPPED, QUEUE_DEPTH};

/// See the module docs.
#[derive(Debug)]
pub struct Queue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    capacity: usize,
    name: String,
    depth: metrics::Gauge,
    dropped: metrics::Counter,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    closed: bool,
    last_warning: Option<Instant>,
    dropped_since_warning: u64,
}

impl<T> Queue<T> {
    /// A queue holding at most `capacity` items for the sink `name`.
    pub fn new(capacity: usize, name: &str) -> Self {
        let depth = metrics::gauge!(QUEUE_DEPTH, "sink" => name.to_owned());
        depth.set(0.0);
        Self {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity.min(1024)),
                closed: false,
                last_warning: None,
                dropped_since_warning: 0,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            name: name.to_owned(),
            depth,
            dropped: metrics::counter!(EVENTS_DROPPED, "sink" => name.to_owned(), "cause" => "queue_full"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `item`, dropping the oldest if full. Never waits for the sender.
    pub fn push(&self, item: T) {
        let mut state = self.lock();
        if state.items.len() >= self.capacity {
            state.items.pop_front();
            self.dropped.increment(1);
            state.dropped_since_warning += 1;
            if state.last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                let dropped = std::mem::take(&mut state.dropped_since_warning);
                state.last_warning = Some(Instant::now());
                tracing::warn!(sink = %self.name, dropped, "event sink queue full; oldest events dropped");
            }
        }
        state.items.push_back(item);
        #[allow(clippy::cast_precision_loss)]
        self.depth.set(state.items.len() as f64);
        drop(state);
        self.ready.notify_one();
    }

    /// Waits for items and takes up to `max` of them: as soon as `max` are
    /// queued, or `linger` after the first one is seen, or at once when the
    /// queue is closed. Empty only when closed and drained.
    pub fn take(&self, max: usize, linger: Duration) -> Vec<T> {
        let mut state = self.lock();
        while state.items.is_empty() && !state.closed {
            state = self.ready.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        let deadline = Instant::now() + linger;
        while state.items.len() < max && !state.closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self.ready.wait_timeout(state, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        let n = state.items.len().min(max);
        let batch: Vec<T> = state.items.drain(..n).collect();
        #[allow(clippy::cast_precision_loss)]
        self.depth.set(state.items.len() as f64);
        batch
    }

    /// Whether [`Queue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Wakes the sender for the last time: it drains what is left and stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_the_oldest() {
        let q = Queue::new(3, "test");
        for i in 0..5 {
            q.push(i);
        }
        assert_eq!(q.take(10, Duration::ZERO), vec![2, 3, 4]);
    }

    #[test]
    fn take_returns_a_full_batch_at_once_and_a_partial_one_after_linger() {
        let q = Queue::new(100, "test");
        for i in 0..5 {
            q.push(i);
        }
        let start = Instant::now();
        assert_eq!(q.take(3, Duration::from_secs(60)), vec![0, 1, 2]);
        assert!(start.elapsed() < Duration::from_secs(30));
        let start = Instant::now();
        assert_eq!(q.take(3, Duration::from_millis(50)), vec![3, 4]);
        assert!(start.elapsed() >= Duration::from_millis(50));
        q.close();
        assert!(q.take(3, Duration::from_secs(60)).is_empty());
    }
}
