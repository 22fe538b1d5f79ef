//! Where security events go: the one interface between the layers, which
//! decide what happened, and the binary's sinks (JSON lines, metrics).
//!
//! Rule: `emit` is called inline on the data path, so an implementation must
//! not block (buffer, or drop and count).

use portcullis_policy::SecurityEvent;

/// Where security events go. Implementations must not block: the data path
/// calls `emit` inline.
pub trait EventSink: Send + Sync + std::fmt::Debug {
    /// Records one event.
    fn emit(&self, event: SecurityEvent);
}
