//! Wall-clock time, one way for the whole gateway.
//!
//! Rules:
//! - Decisions that depend on the date (token expiry, API-key expiry, ban
//!   ends, rate-limit theoretical arrival times) take the time as an
//!   argument; the code that calls them reads it from a [`Clock`], so a test
//!   can hand in a fake one and the decision stays pure.
//! - Unix timestamps are whole seconds, milliseconds or nanoseconds since the
//!   epoch, saturating: a time before 1970 is 0, a time past `u64` is
//!   `u64::MAX`. Never a panic on a skewed clock.
//! - Timeouts, deadlines and durations measured on this machine use the
//!   monotonic clock (`Instant`, tokio's timers) instead: they must not jump
//!   when the wall clock is set.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the time comes from: [`SystemClock`], or a fake in tests.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// The current time in Unix milliseconds.
    fn unix_millis(&self) -> u64 {
        unix_millis(self.now())
    }

    /// The current time in Unix nanoseconds.
    fn unix_nanos(&self) -> u64 {
        unix_nanos(self.now())
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock stopped at one time (tests, replays).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub SystemTime);

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

/// `time` in whole Unix seconds (0 before the epoch).
#[must_use]
pub fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `time` in Unix milliseconds (0 before the epoch, saturating).
#[must_use]
pub fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `time` in Unix nanoseconds (0 before the epoch, saturating).
#[must_use]
pub fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Debug)]
    struct At(SystemTime);

    impl Clock for At {
        fn now(&self) -> SystemTime {
            self.0
        }
    }

    #[test]
    fn timestamps_saturate_instead_of_failing() {
        let at = At(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789));
        assert_eq!(unix_secs(at.now()), 1_700_000_000);
        assert_eq!(at.unix_millis(), 1_700_000_000_123);
        assert_eq!(at.unix_nanos(), 1_700_000_000_123_456_789);
        let before = At(UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!((unix_secs(before.now()), before.unix_millis(), before.unix_nanos()), (0, 0, 0));
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 1_000);
        assert_eq!(unix_nanos(far), u64::MAX);
        assert!(SystemClock.unix_nanos() > 1_700_000_000 * 1_000_000_000);
    }
}
