//! GCRA rate limiting (the generic cell rate algorithm, as in ATM networks
//! and the `governor` crate): one timestamp per key, exact burst and steady
//! rate, no fixed windows to game at their edges.
//!
//! A quota of `rate` requests per `period` with `burst` has an emission
//! interval `T = period / rate` and admits up to `burst` requests at once.
//! Each key stores its theoretical arrival time (TAT). A request at `now`:
//! `tat = max(stored, now)`, `new = tat + T`; it is allowed when
//! `now ≥ new − burst·T` (then `new` is stored), else refused until then.
//! The same arithmetic runs in the memory store and in Redis's Lua script,
//! so both backends agree to the nanosecond given the same clock.

use std::time::Duration;

/// A compiled quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// `T`: nanoseconds between requests at the steady rate.
    pub emission_nanos: u64,
    /// Requests admitted at once.
    pub burst: u32,
}

/// Why a quota is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// Zero rate, period or burst.
    #[error("rate, period and burst must be positive")]
    Zero,
    /// More than one request per nanosecond.
    #[error("rate is too high for the period")]
    TooFast,
}

impl Gcra {
    /// `rate` requests per `period`, `burst` at once (`burst` defaults to
    /// `rate` in configuration).
    ///
    /// # Errors
    /// [`QuotaError`] for zero or absurd values.
    pub fn new(rate: u32, period: Duration, burst: u32) -> Result<Self, QuotaError> {
        if rate == 0 || burst == 0 || period.is_zero() {
            return Err(QuotaError::Zero);
        }
        let nanos = u64::try_from(period.as_nanos()).map_err(|_| QuotaError::TooFast)? / u64::from(rate);
        if nanos == 0 {
            return Err(QuotaError::TooFast);
        }
        Ok(Self { emission_nanos: nanos, burst })
    }

    /// `burst · T`: how far ahead of `now` the TAT may run.
    #[must_use]
    pub fn window_nanos(&self) -> u64 {
        self.emission_nanos.saturating_mul(u64::from(self.burst))
    }

    /// Applies one request at `now` to the stored TAT.
    #[must_use]
    pub fn apply(&self, stored_tat: Option<u64>, now: u64) -> Outcome {
        let tat = stored_tat.map_or(now, |t| t.max(now));
        let new_tat = tat.saturating_add(self.emission_nanos);
        let allow_at = new_tat.saturating_sub(self.window_nanos());
        if now < allow_at {
            let retry_after = allow_at - now;
            Outcome::Limited { retry_after_nanos: retry_after, reset_nanos: tat.saturating_sub(now), tat }
        } else {
            let remaining = (now.saturating_add(self.window_nanos()).saturating_sub(new_tat)) / self.emission_nanos;
            Outcome::Allowed {
                remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                reset_nanos: new_tat.saturating_sub(now),
                tat: new_tat,
            }
        }
    }
}

/// A request's fate under one quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted; store `tat`.
    Allowed {
        /// Requests that could still be made right now.
        remaining: u32,
        /// Nanoseconds until the quota is fully available again.
        reset_nanos: u64,
        /// The TAT to store.
        tat: u64,
    },
    /// Refused; nothing changes.
    Limited {
        /// Nanoseconds until one request would be admitted.
        retry_after_nanos: u64,
        /// Nanoseconds until the quota is fully available again.
        reset_nanos: u64,
        /// The TAT, unchanged.
        tat: u64,
    },
}

impl Outcome {
    /// Whether the request is admitted.
    #[must_use]
    pub const fn allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }
}

/// Seconds for `Retry-After` and `RateLimit` headers: rounded up, at least 1
/// when anything is left to wait.
#[must_use]
pub const fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// Runs `times` (seconds, fractional) through a quota, returning which
    /// were allowed.
    fn run(g: &Gcra, times: &[f64]) -> Vec<bool> {
        let mut tat = None;
        times
            .iter()
            .map(|t| {
                let now = (t * S as f64) as u64 + 1_000 * S;
                match g.apply(tat, now) {
                    Outcome::Allowed { tat: new, .. } => {
                        tat = Some(new);
                        true
                    }
                    Outcome::Limited { .. } => false,
                }
            })
            .collect()
    }

    #[test]
    fn burst_then_steady_rate_then_recovery() {
        // 2 per second, burst 4.
        let g = Gcra::new(2, Duration::from_secs(1), 4).unwrap();
        // Burst: 4 at once, the 5th refused.
        assert_eq!(run(&g, &[0.0, 0.0, 0.0, 0.0, 0.0]), [true, true, true, true, false]);
        // Steady: after the burst, one every 0.5 s.
        assert_eq!(
            run(&g, &[0.0, 0.0, 0.0, 0.0, 0.49, 0.5, 0.99, 1.0, 1.5]),
            [true, true, true, true, false, true, false, true, true]
        );
        // Recovery: after 2 s of silence the full burst is back.
        assert_eq!(
            run(&g, &[0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0, 2.0]),
            [true, true, true, true, true, true, true, true, false]
        );
    }

    #[test]
    fn remaining_retry_after_and_reset() {
        let g = Gcra::new(10, Duration::from_secs(60), 10).unwrap(); // one per 6 s
        let now = 1_000 * S;
        let Outcome::Allowed { remaining, reset_nanos, tat } = g.apply(None, now) else { panic!() };
        assert_eq!((remaining, reset_nanos), (9, 6 * S));
        let mut tat = tat;
        for expected in (0..9).rev() {
            let Outcome::Allowed { remaining, tat: t, .. } = g.apply(Some(tat), now) else { panic!() };
            assert_eq!(remaining, expected);
            tat = t;
        }
        let Outcome::Limited { retry_after_nanos, reset_nanos, .. } = g.apply(Some(tat), now) else { panic!() };
        assert_eq!((retry_after_nanos, reset_nanos), (6 * S, 60 * S));
        assert_eq!(ceil_secs(retry_after_nanos), 6);
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(0), 0);
    }

    #[test]
    fn quotas_are_validated() {
        assert_eq!(Gcra::new(0, Duration::from_secs(1), 1), Err(QuotaError::Zero));
        assert_eq!(Gcra::new(1, Duration::ZERO, 1), Err(QuotaError::Zero));
        assert_eq!(Gcra::new(2_000_000_000, Duration::from_secs(1), 1), Err(QuotaError::TooFast));
        assert_eq!(Gcra::new(5, Duration::from_secs(60), 5).unwrap().emission_nanos, 12 * S);
    }
}
