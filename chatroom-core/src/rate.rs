//! Token buckets: the rate limits of connections and rooms.

use std::time::Duration;

use tokio::time::Instant;

use crate::limits::Limits;

/// A token bucket: `burst` tokens, refilled at `rate` per second.
pub(crate) struct Bucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new(limits: &Limits, now: Instant) -> Bucket {
        Bucket::with_rate(limits.rate_burst, limits.rate_per_sec, now)
    }

    /// A full bucket of `burst` tokens refilled at `rate` per second.
    pub(crate) fn with_rate(burst: u32, rate: u32, now: Instant) -> Bucket {
        let burst = f64::from(burst);
        Bucket {
            tokens: burst,
            burst,
            rate: f64::from(rate),
            last: now,
        }
    }

    /// Takes a token if there is one.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        self.take_many(1.0, now)
    }

    /// Takes `n` tokens if there are that many.
    pub(crate) fn take_many(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Spends `n` tokens whether or not there are that many: what was spent beyond the
    /// bucket is owed (at most a full bucket's worth), and repaid by the refill.
    pub(crate) fn charge(&mut self, n: f64, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens - n).max(-self.burst);
    }

    /// Whether nothing is owed (see [`Bucket::charge`]).
    pub(crate) fn in_credit(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 0.0
    }

    /// How long until the bucket holds `n` tokens (zero if it does now; a long time if
    /// it never refills).
    pub(crate) fn time_until(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        let missing = n - self.tokens;
        if missing <= 0.0 {
            Duration::ZERO
        } else if self.rate > 0.0 {
            Duration::try_from_secs_f64(missing / self.rate).unwrap_or(Duration::MAX)
        } else {
            Duration::from_secs(3600)
        }
    }

    /// Whether the bucket is full: nothing was spent for as long as it takes to fill.
    pub(crate) fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}
