//! A per-client request rate limit (a token bucket per client address), so one runaway
//! client cannot starve the others of a node's registry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

pub struct RateLimit {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimit {
    /// `per_second` requests sustained, bursts of twice that.
    pub fn new(per_second: u32) -> Self {
        RateLimit {
            per_second: per_second as f64,
            burst: (per_second as f64 * 2.0).max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `client`; `false` when it has none left.
    pub fn allow(&self, client: IpAddr) -> bool {
        self.allow_at(client, Instant::now())
    }

    fn allow_at(&self, client: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 65_536 {
            // Forget full buckets rather than grow without bound under address churn.
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(client).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_client_gets_its_burst_then_its_rate_and_others_are_unaffected() {
        let limit = RateLimit::new(10);
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        assert_eq!((0..25).filter(|_| limit.allow_at(a, t0)).count(), 20);
        assert!(limit.allow_at(b, t0));
        let later = t0 + Duration::from_millis(500);
        assert_eq!((0..25).filter(|_| limit.allow_at(a, later)).count(), 5);
    }
}
