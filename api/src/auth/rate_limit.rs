//! Per-tenant request rate limits: a token bucket per tenant, refilled at the tenant's
//! `rate_limit_per_second` up to `rate_limit_burst`. Each api replica limits on its own,
//! so N replicas behind a balancer admit up to N times the rate; the limit protects each
//! replica and the database, not an exact global quota.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use uuid::Uuid;

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<Uuid, Bucket>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A refused request: when to come back, and the limit it broke.
#[derive(Debug, Clone, Copy)]
pub struct Limited {
    pub retry_after: Duration,
    pub limit: u32,
}

impl RateLimiter {
    /// Takes one token from the tenant's bucket, or says how long until there is one.
    pub fn check(&self, tenant: Uuid, (rate, burst): (u32, u32)) -> Result<(), Limited> {
        self.check_at(tenant, rate, burst, Instant::now())
    }

    fn check_at(&self, tenant: Uuid, rate: u32, burst: u32, now: Instant) -> Result<(), Limited> {
        let (rate, burst) = (rate.max(1) as f64, burst.max(1) as f64);
        let mut buckets = self.buckets.lock().expect("not poisoned");
        let bucket = buckets.entry(tenant).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / rate;
            Err(Limited {
                retry_after: Duration::from_secs_f64(wait),
                limit: rate as u32,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let limiter = RateLimiter::default();
        let (tenant, other) = (Uuid::new_v4(), Uuid::new_v4());
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(limiter.check_at(tenant, 2, 4, t0).is_ok());
        }
        let refused = limiter.check_at(tenant, 2, 4, t0).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        assert!(
            limiter.check_at(other, 2, 4, t0).is_ok(),
            "tenants are limited apart"
        );
        assert!(
            limiter
                .check_at(tenant, 2, 4, t0 + Duration::from_millis(500))
                .is_ok()
        );
        assert!(
            limiter
                .check_at(tenant, 2, 4, t0 + Duration::from_millis(500))
                .is_err()
        );
    }
}
