//! Rate limits: a token bucket ([`RateLimit`]) per connection or per user, and [`Budgets`], a
//! bucket per key (a user) shared by every request that key makes.
//!
//! One model everywhere: `per_s` a second on average, in bursts of up to twice that. Socket.IO
//! connections hold their own buckets (messages, document operations); HTTP and MCP requests
//! draw on the user's: team messages, and the events a member's requests append to the journal
//! (publishes, searches), so no member can push everyone's events out of retention.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::teams::TeamsError;

/// Allows `per_s` a second on average, in bursts of up to twice that.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_s: f64,
    tokens: f64,
    last: Instant,
    /// What is counted, for the refusal.
    what: &'static str,
}

impl RateLimit {
    pub fn new(per_s: u64) -> RateLimit {
        let per_s = per_s.max(1) as f64;
        RateLimit {
            per_s,
            tokens: per_s * 2.0,
            last: Instant::now(),
            what: "messages",
        }
    }

    /// The same budget, counting `what` (named in the refusal).
    pub fn named(mut self, what: &'static str) -> RateLimit {
        self.what = what;
        self
    }

    /// Takes one's worth, or says to slow down.
    pub fn take(&mut self) -> Result<(), TeamsError> {
        self.take_n(1)
    }

    /// Takes `n`'s worth at once, or nothing. More than a burst never fits, and says so.
    pub fn take_n(&mut self, n: u64) -> Result<(), TeamsError> {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_s;
        self.tokens = (self.tokens + refill).min(self.per_s * 2.0);
        self.last = now;
        let n = n as f64;
        if n > self.per_s * 2.0 {
            return Err(TeamsError::TooFast(format!(
                "{n} {} at once is more than a burst allows ({}); send fewer at a time",
                self.what,
                self.per_s * 2.0
            )));
        }
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err(TeamsError::TooFast(format!(
                "more than {} {} a second; slow down",
                self.per_s, self.what
            )))
        }
    }
}

/// A [`RateLimit`] per key, made on first use. Bounded: past 10,000 keys it forgets them all,
/// which only ever forgives.
#[derive(Debug, Default)]
pub struct Budgets {
    buckets: Mutex<HashMap<String, RateLimit>>,
}

impl Budgets {
    /// Spends `n` from `key`'s budget of `per_s` (counting `what`).
    pub fn take(
        &self,
        key: &str,
        per_s: u64,
        n: u64,
        what: &'static str,
    ) -> Result<(), TeamsError> {
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| TeamsError::Invalid("rate limit lock poisoned".into()))?;
        if buckets.len() > 10_000 {
            buckets.clear();
        }
        buckets
            .entry(key.to_string())
            .or_insert_with(|| RateLimit::new(per_s).named(what))
            .take_n(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_twice_the_rate_then_refusals_and_more_than_a_burst_never_fits() {
        let b = Budgets::default();
        for _ in 0..10 {
            b.take("ann", 5, 1, "events").unwrap();
        }
        assert!(matches!(
            b.take("ann", 5, 1, "events"),
            Err(TeamsError::TooFast(_))
        ));
        // another key has its own
        b.take("bob", 5, 4, "events").unwrap();
        let Err(TeamsError::TooFast(m)) = b.take("bob", 5, 11, "events") else {
            panic!("a batch above the burst fits never");
        };
        assert!(m.contains("at once"), "{m}");
    }
}
