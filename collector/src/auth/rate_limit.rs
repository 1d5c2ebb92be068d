//! `RateLimit`: a per-token request rate as a token bucket — `per_second`
//! on average, up to `burst` at once — parsed from text like `50/s`,
//! `600/min` or `10000/h:200`. A [`Bucket`] refills continuously and, when
//! empty, says how long until the next request is allowed; it never
//! refuses a request it has a whole token for.

use std::str::FromStr;
use std::time::{Duration, Instant};

/// A token-bucket rate: `rate` requests per second on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "expected a rate like 50/s, 600/min or 10000/h (optionally :BURST, e.g. 50/s:200), got {0:?}"
)]
pub struct RateLimitParseError(String);

impl FromStr for RateLimit {
    type Err = RateLimitParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RateLimitParseError(s.to_owned());
        let (rate, burst) = match s.split_once(':') {
            Some((rate, burst)) => (rate, Some(burst.trim().parse::<f64>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let (n, unit) = rate.split_once('/').ok_or_else(bad)?;
        let n: f64 = n.trim().parse().map_err(|_| bad())?;
        let seconds = match unit.trim() {
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        let per_second = n / seconds;
        let burst = burst.unwrap_or(n.max(1.0));
        if !(per_second > 0.0 && per_second.is_finite() && burst >= 1.0 && burst.is_finite()) {
            return Err(bad());
        }
        Ok(Self { per_second, burst })
    }
}

/// One token's bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(limit: RateLimit, now: Instant) -> Self {
        Self {
            tokens: limit.burst,
            at: now,
        }
    }

    /// Take one request's worth; the wait until one is available if empty.
    pub fn take(&mut self, limit: RateLimit, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / limit.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_and_without_burst() {
        assert_eq!(
            "50/s".parse::<RateLimit>().unwrap(),
            RateLimit {
                per_second: 50.0,
                burst: 50.0
            }
        );
        assert_eq!(
            "600/min:20".parse::<RateLimit>().unwrap(),
            RateLimit {
                per_second: 10.0,
                burst: 20.0
            }
        );
        assert!("fast".parse::<RateLimit>().is_err());
        assert!("0/s".parse::<RateLimit>().is_err());
    }

    #[test]
    fn a_bucket_refuses_past_its_burst_and_says_how_long_to_wait() {
        let limit = RateLimit {
            per_second: 2.0,
            burst: 2.0,
        };
        let t0 = Instant::now();
        let mut bucket = Bucket {
            tokens: 2.0,
            at: t0,
        };
        assert!(bucket.take(limit, t0).is_ok());
        assert!(bucket.take(limit, t0).is_ok());
        let wait = bucket.take(limit, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(bucket.take(limit, t0 + Duration::from_millis(500)).is_ok());
    }
}
