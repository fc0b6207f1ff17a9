//! Tenants as operators shape them: the create and update requests, their rules, and the
//! tenant's default retry policy.

use entity::tenant::{self, TenantStatus};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::retry_policy::RetryPolicy;
use crate::error::{Problems, Result};

/// Largest rate limit and burst the schema allows.
pub const MAX_RATE: i32 = 1_000_000;
/// Largest `max_concurrent_jobs`.
pub const MAX_CONCURRENT_JOBS: i64 = 10_000;

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTenantRequest {
    /// Unique, 1–200 characters.
    pub name: Option<String>,
    /// Jobs running at once (1–10000, default 10); more wait in `queued`.
    pub max_concurrent_jobs: Option<i64>,
    /// Requests per second (1–1000000, default 100; burst twice that).
    pub rate_limit_per_second: Option<i64>,
    /// Most records the tenant may have pending across its unfinished jobs (at least 1).
    /// Absent: the deployment's `TENANT_MAX_PENDING_RECORDS` (by default 10,000,000);
    /// `null`: no limit.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>, minimum = 1))]
    pub max_pending_records: Option<Option<i64>>,
}

/// A validated new tenant.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub name: String,
    pub max_concurrent_jobs: i32,
    pub rate_limit_per_second: i32,
    /// `None`: no limit.
    pub max_pending_records: Option<i64>,
}

impl CreateTenantRequest {
    /// `default_pending` is the deployment's `TENANT_MAX_PENDING_RECORDS`, for a request
    /// that does not say.
    pub fn validate(self, default_pending: Option<i64>) -> Result<NewTenant> {
        let mut problems = Problems::default();
        let name = self.name.map(|n| n.trim().to_owned()).unwrap_or_default();
        if name.is_empty() || name.chars().count() > 200 || name.contains('\0') {
            problems.push("name", "is required, 1 to 200 characters");
        }
        let mut bounded = |field: &str, v: Option<i64>, default: i64, hi: i64| {
            in_range(&mut problems, field, Some(v.unwrap_or(default)), hi).unwrap_or(1)
        };
        let max_concurrent_jobs = bounded(
            "max_concurrent_jobs",
            self.max_concurrent_jobs,
            10,
            MAX_CONCURRENT_JOBS,
        );
        let rate_limit_per_second = bounded(
            "rate_limit_per_second",
            self.rate_limit_per_second,
            100,
            MAX_RATE.into(),
        );
        let max_pending_records = match self.max_pending_records {
            None => default_pending,
            Some(v) => at_least_one(&mut problems, "max_pending_records", v),
        };
        problems.into_result(|| NewTenant {
            name,
            max_concurrent_jobs,
            rate_limit_per_second,
            max_pending_records,
        })
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateTenantRequest {
    /// `active` or `suspended`: a suspended tenant's keys get 403, its open streams end,
    /// and workers start none of its batches (its jobs wait, and resume on `active`).
    pub status: Option<String>,
    pub max_concurrent_jobs: Option<i64>,
    pub rate_limit_per_second: Option<i64>,
    pub rate_limit_burst: Option<i64>,
    /// Largest job, in records; `null` removes the limit.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>, minimum = 1))]
    pub max_records_per_job: Option<Option<i64>>,
    /// Most records pending across the tenant's unfinished jobs; `null` removes the limit.
    /// Lowering it below what is pending refuses new records until jobs finish; nothing
    /// already accepted is dropped.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>, minimum = 1))]
    pub max_pending_records: Option<Option<i64>>,
}

/// An operator's change to a tenant: only the fields given change.
#[derive(Debug, Default, Clone)]
pub struct TenantPatch {
    pub status: Option<TenantStatus>,
    pub max_concurrent_jobs: Option<i32>,
    pub rate_limit_per_second: Option<i32>,
    pub rate_limit_burst: Option<i32>,
    /// `Some(None)` removes the limit.
    pub max_records_per_job: Option<Option<i64>>,
    /// `Some(None)` removes the limit.
    pub max_pending_records: Option<Option<i64>>,
}

impl UpdateTenantRequest {
    pub fn validate(self) -> Result<TenantPatch> {
        let mut problems = Problems::default();
        let mut bounded =
            |field: &str, v: Option<i64>, hi: i64| in_range(&mut problems, field, v, hi);
        let mut patch = TenantPatch {
            max_concurrent_jobs: bounded(
                "max_concurrent_jobs",
                self.max_concurrent_jobs,
                MAX_CONCURRENT_JOBS,
            ),
            rate_limit_per_second: bounded(
                "rate_limit_per_second",
                self.rate_limit_per_second,
                MAX_RATE.into(),
            ),
            rate_limit_burst: bounded("rate_limit_burst", self.rate_limit_burst, MAX_RATE.into()),
            ..Default::default()
        };
        patch.max_records_per_job = self
            .max_records_per_job
            .map(|v| at_least_one(&mut problems, "max_records_per_job", v));
        patch.max_pending_records = self
            .max_pending_records
            .map(|v| at_least_one(&mut problems, "max_pending_records", v));
        patch.status = match self.status.as_deref() {
            None => None,
            Some("active") => Some(TenantStatus::Active),
            Some("suspended") => Some(TenantStatus::Suspended),
            Some(_) => {
                problems.push("status", "must be `active` or `suspended`");
                None
            }
        };
        problems.into_result(|| patch)
    }
}

impl TenantPatch {
    /// The fields the patch sets, as its audit event's details (limits and status only).
    pub fn audit_details(&self) -> Value {
        let mut d = Map::new();
        if let Some(s) = self.status {
            d.insert("status".into(), json!(s));
        }
        let numbers = [
            ("max_concurrent_jobs", self.max_concurrent_jobs),
            ("rate_limit_per_second", self.rate_limit_per_second),
            ("rate_limit_burst", self.rate_limit_burst),
        ];
        for (k, v) in numbers {
            if let Some(v) = v {
                d.insert(k.into(), json!(v));
            }
        }
        for (k, v) in [
            ("max_records_per_job", self.max_records_per_job),
            ("max_pending_records", self.max_pending_records),
        ] {
            if let Some(v) = v {
                d.insert(k.into(), json!(v));
            }
        }
        Value::Object(d)
    }
}

/// The tenant's default retry policy (`PUT /api/v1/retry-policies`), else the contract's.
pub fn default_retry(tenant: &tenant::Model) -> RetryPolicy {
    tenant
        .retry_policy
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<i64>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// A nullable limit: `Some(n)` must be at least 1 (else a field error); `None` is "no limit".
fn at_least_one(problems: &mut Problems, field: &str, v: Option<i64>) -> Option<i64> {
    match v {
        Some(n) if n < 1 => {
            problems.push(field, "must be at least 1, or null for no limit");
            None
        }
        other => other,
    }
}

/// `Some(v)` if `v` is within 1..=`hi`; otherwise records a field error. `None` in, `None` out.
fn in_range(problems: &mut Problems, field: &str, v: Option<i64>, hi: i64) -> Option<i32> {
    let v = v?;
    if (1..=hi).contains(&v) {
        Some(v as i32)
    } else {
        problems.push(field, format!("must be between 1 and {hi}"));
        None
    }
}
