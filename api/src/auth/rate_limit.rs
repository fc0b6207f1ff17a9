//! Token buckets. Per tenant: requests, refilled at the tenant's `rate_limit_per_second`
//! up to `rate_limit_burst`. Per client address: failed authentications
//! ([`FailureLimiter`]). Each api replica limits on its own, so N replicas behind a
//! balancer admit up to N times the rate; the limits protect each replica and the
//! database, not an exact global quota.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use entity::TenantId;

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<TenantId, Bucket>>,
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
    pub fn check(&self, tenant: TenantId, (rate, burst): (u32, u32)) -> Result<(), Limited> {
        self.check_at(tenant, rate, burst, Instant::now())
    }

    fn check_at(
        &self,
        tenant: TenantId,
        rate: u32,
        burst: u32,
        now: Instant,
    ) -> Result<(), Limited> {
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

/// Failed authentications per client address: a bucket of `per_minute` tokens, refilled
/// at `per_minute` a minute. [`check`](Self::check) only looks (the request may yet
/// succeed); [`fail`](Self::fail) takes a token. IPv6 clients are counted per /64, the
/// block one subscriber holds. Buckets idle for an hour are forgotten, and at most
/// 100,000 are kept.
pub struct FailureLimiter {
    rate: f64,
    burst: f64,
    buckets: moka::sync::Cache<IpAddr, Arc<Mutex<Bucket>>>,
}

impl FailureLimiter {
    pub fn per_minute(n: u32) -> Self {
        Self {
            rate: f64::from(n.max(1)) / 60.0,
            burst: f64::from(n.max(1)),
            buckets: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        }
    }

    fn bucket(&self, client: IpAddr) -> Arc<Mutex<Bucket>> {
        let now = Instant::now();
        self.buckets.get_with(network(client), || {
            Arc::new(Mutex::new(Bucket {
                tokens: self.burst,
                last: now,
            }))
        })
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
    }

    /// Whether `client` may still fail: `Err` with when to come back when it may not.
    pub fn check(&self, client: IpAddr) -> Result<(), Limited> {
        let bucket = self.bucket(client);
        let mut b = bucket.lock().expect("not poisoned");
        self.refill(&mut b, Instant::now());
        if b.tokens >= 1.0 {
            Ok(())
        } else {
            Err(Limited {
                retry_after: Duration::from_secs_f64((1.0 - b.tokens) / self.rate),
                limit: (self.rate * 60.0).round() as u32,
            })
        }
    }

    /// Counts one failure of `client`.
    pub fn fail(&self, client: IpAddr) {
        let bucket = self.bucket(client);
        let mut b = bucket.lock().expect("not poisoned");
        self.refill(&mut b, Instant::now());
        b.tokens = (b.tokens - 1.0).max(0.0);
    }
}

/// The address a client is counted under: itself, or its /64 for IPv6.
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_per_client_network() {
        let limiter = FailureLimiter::per_minute(3);
        let a: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::5".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
            limiter.fail(a);
        }
        let limited = limiter.check(same_64).unwrap_err();
        assert!(
            limited.retry_after <= Duration::from_secs(20),
            "{limited:?}"
        );
        assert!(
            limiter.check(other).is_ok(),
            "another /64 is another client"
        );
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let limiter = RateLimiter::default();
        let (tenant, other) = (TenantId::new(), TenantId::new());
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
