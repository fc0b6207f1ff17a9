//! A job's retry policy and the delay before each retry.
//!
//! The delay before attempt n+1 is `min(initial × multiplier^(n−1), max)` times a random
//! factor in `[1 − jitter, 1 + jitter]` (api contract, "Retry semantics"). The `backoff`
//! crate computes the un-jittered table; it is used nowhere else, so replacing it (it is
//! unmaintained, RUSTSEC-2025-0012) touches only this module.

use std::time::Duration;

use backoff::backoff::Backoff;
use serde::{Deserialize, Serialize};

use crate::error::Problems;

/// A validated retry policy, as stored on a job and echoed in responses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryPolicy {
    /// Attempts in all, the first try included (1–100).
    pub max_attempts: u32,
    pub initial_interval_ms: u64,
    pub multiplier: f64,
    pub max_interval_ms: u64,
    /// Relative jitter, 0.0–1.0.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_interval_ms: 500,
            multiplier: 2.0,
            max_interval_ms: 60_000,
            jitter: 0.2,
        }
    }
}

/// The request shape: every field optional, falling back to a base policy (the tenant's
/// default, else [`RetryPolicy::default`]). Integers arrive as `i64` so that a negative or
/// oversized value is a 422 naming the field rather than a type error.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryPolicyInput {
    pub max_attempts: Option<i64>,
    pub initial_interval_ms: Option<i64>,
    pub multiplier: Option<f64>,
    pub max_interval_ms: Option<i64>,
    pub jitter: Option<f64>,
}

const MAX_INTERVAL_MS: i64 = 7 * 24 * 3600 * 1000;

impl RetryPolicyInput {
    /// Validates against `base` (what an absent field takes), recording problems under
    /// `prefix` (`retry`).
    pub fn validate(
        &self,
        base: RetryPolicy,
        prefix: &str,
        problems: &mut Problems,
    ) -> Option<RetryPolicy> {
        let mut fields = Fields { prefix, problems };
        let max_attempts = self.max_attempts.unwrap_or(base.max_attempts.into());
        let max_attempts = fields.within("max_attempts", max_attempts, 1, 100);
        let initial = self
            .initial_interval_ms
            .unwrap_or(base.initial_interval_ms as i64);
        let initial = fields.within("initial_interval_ms", initial, 1, MAX_INTERVAL_MS);
        let max = self.max_interval_ms.unwrap_or(base.max_interval_ms as i64);
        let max = fields.within("max_interval_ms", max, 1, MAX_INTERVAL_MS);
        let multiplier = self.multiplier.unwrap_or(base.multiplier);
        let multiplier = fields.within("multiplier", multiplier, 1.0, 10.0);
        let jitter = fields.within("jitter", self.jitter.unwrap_or(base.jitter), 0.0, 1.0);
        if let (Some(i), Some(m)) = (initial, max)
            && m < i
        {
            let field = fields.path("max_interval_ms");
            fields
                .problems
                .push(field, "must not be less than initial_interval_ms");
            return None;
        }
        Some(RetryPolicy {
            max_attempts: max_attempts? as u32,
            initial_interval_ms: initial? as u64,
            multiplier: multiplier?,
            max_interval_ms: max? as u64,
            jitter: jitter?,
        })
    }
}

/// A policy's fields as they are checked: each problem is named under the prefix.
struct Fields<'a> {
    prefix: &'a str,
    problems: &'a mut Problems,
}

impl Fields<'_> {
    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// `value` if within `lo..=hi`; otherwise a problem naming the range (`{:?}`, so
    /// `1.0` reads as a float).
    fn within<T: PartialOrd + std::fmt::Debug>(
        &mut self,
        name: &str,
        value: T,
        lo: T,
        hi: T,
    ) -> Option<T> {
        let check = if lo <= value && value <= hi {
            Ok(value)
        } else {
            Err(format!("must be between {lo:?} and {hi:?}"))
        };
        let field = self.path(name);
        self.problems.check(&field, check)
    }
}

impl RetryPolicy {
    /// The delay before attempt `failed_attempt + 1`, without jitter:
    /// `min(initial × multiplier^(failed_attempt−1), max)`.
    pub fn base_delay(&self, failed_attempt: u32) -> Duration {
        let mut schedule = backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(Duration::from_millis(self.initial_interval_ms))
            .with_multiplier(self.multiplier)
            .with_max_interval(Duration::from_millis(self.max_interval_ms))
            .with_randomization_factor(0.0)
            .with_max_elapsed_time(None)
            .build();
        let mut delay = Duration::from_millis(self.initial_interval_ms);
        for _ in 0..failed_attempt.max(1) {
            delay = schedule
                .next_backoff()
                .unwrap_or(Duration::from_millis(self.max_interval_ms));
        }
        delay
    }

    /// The delay before attempt `failed_attempt + 1` with jitter: `unit` is a number in
    /// `[0, 1)` (random in production, fixed in tests) mapped onto `[1 − jitter, 1 + jitter]`.
    pub fn delay_for(&self, failed_attempt: u32, unit: f64) -> Duration {
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        self.base_delay(failed_attempt).mul_f64(factor.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_table_follows_the_contract_formula() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let table: Vec<u64> = (1..=9)
            .map(|n| p.base_delay(n).as_millis() as u64)
            .collect();
        assert_eq!(
            table,
            [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]
        );
    }

    #[test]
    fn jitter_stays_inside_its_band() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_for(1, 0.0).as_millis(), 400);
        assert_eq!(p.delay_for(1, 1.0).as_millis(), 600);
        assert_eq!(p.delay_for(1, 0.5).as_millis(), 500);
    }

    #[test]
    fn validation_names_each_bad_field() {
        let input = RetryPolicyInput {
            max_attempts: Some(0),
            multiplier: Some(0.5),
            jitter: Some(2.0),
            initial_interval_ms: Some(-1),
            max_interval_ms: None,
        };
        let mut problems = Problems::default();
        assert!(
            input
                .validate(RetryPolicy::default(), "retry", &mut problems)
                .is_none()
        );
        let err = problems.into_result(|| ()).unwrap_err();
        let crate::Error::Validation(fields) = err else {
            panic!()
        };
        let names: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            names,
            [
                "retry.max_attempts",
                "retry.initial_interval_ms",
                "retry.multiplier",
                "retry.jitter"
            ]
        );
    }
}
