//! When a receiver stops reconnecting, sans-IO: the caller supplies the
//! time and says how each attempt went.
//!
//! Two rules, as `fetch` has always applied them: keep trying to connect
//! for [`RetryPolicy::retry_for`] since the last progress; and give up
//! after [`RetryPolicy::max_stalls`] connections in a row that ended
//! without a new unit (a fault that cuts every connection before a whole
//! unit arrives would otherwise loop for ever).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use proto_session::retry::{Retry, RetryPolicy, Verdict};
//!
//! let t0 = Instant::now();
//! let mut r = Retry::new(RetryPolicy { retry_for: Duration::from_secs(30), max_stalls: 2 }, t0);
//! assert_eq!(r.ended(true, t0), Verdict::Again); // progress: the count starts over
//! assert_eq!(r.ended(false, t0), Verdict::Again);
//! assert_eq!(r.ended(false, t0), Verdict::GiveUp); // two stalls in a row
//! let mut r = Retry::new(RetryPolicy::default(), t0);
//! assert_eq!(r.connect_failed(t0 + Duration::from_secs(29)), Verdict::Again);
//! assert_eq!(r.connect_failed(t0 + Duration::from_secs(30)), Verdict::GiveUp);
//! ```

use std::time::{Duration, Instant};

/// How long and how often a receiver reconnects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Keep trying to connect for this long after the last progress.
    pub retry_for: Duration,
    /// Give up after this many connections in a row without a new unit.
    pub max_stalls: u32,
}

impl Default for RetryPolicy {
    /// 30 s, 50 stalls.
    fn default() -> Self {
        RetryPolicy {
            retry_for: Duration::from_secs(30),
            max_stalls: 50,
        }
    }
}

/// Whether to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Connect again.
    Again,
    /// Stop: the policy's limit is reached.
    GiveUp,
}

/// The state of a [`RetryPolicy`] over a transfer's connections.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    policy: RetryPolicy,
    since: Instant,
    stalls: u32,
}

impl Retry {
    /// A transfer starting at `now`.
    pub fn new(policy: RetryPolicy, now: Instant) -> Self {
        Retry {
            policy,
            since: now,
            stalls: 0,
        }
    }

    /// A connection could not be made at `now`.
    pub fn connect_failed(&mut self, now: Instant) -> Verdict {
        if now.saturating_duration_since(self.since) >= self.policy.retry_for {
            Verdict::GiveUp
        } else {
            Verdict::Again
        }
    }

    /// A connection ended in a way that may be retried; `progressed`: a
    /// new unit arrived on it (or the transfer finished).
    pub fn ended(&mut self, progressed: bool, now: Instant) -> Verdict {
        if progressed {
            self.stalls = 0;
            self.since = now;
            return Verdict::Again;
        }
        self.stalls += 1;
        if self.stalls >= self.policy.max_stalls {
            Verdict::GiveUp
        } else {
            Verdict::Again
        }
    }

    /// Connections in a row that ended without a new unit.
    pub fn stalls(&self) -> u32 {
        self.stalls
    }

    /// How long the last progress (or the start) is ago at `now`.
    pub fn waited(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.since)
    }
}
