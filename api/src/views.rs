//! Response shapes. Secrets never reach these: destinations are redacted on the way in.

use chrono::{DateTime, Utc};
use entity::{
    api_key,
    job::{self, JobStatus},
    tenant::{self, TenantStatus},
};
use freight_core::{
    domain::{destination::Destination, retry_policy::RetryPolicy},
    store::batches::BatchCounts,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// `limit` and `cursor` of a list endpoint.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct PageQuery {
    /// 1–1000, default 100.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of results: pass `next_cursor` back as `cursor` for the next page.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T: ToSchema> From<freight_core::store::page::Page<T>> for Page<T> {
    fn from(p: freight_core::store::page::Page<T>) -> Self {
        Self {
            data: p.data,
            next_cursor: p.next_cursor,
        }
    }
}

/// `pending + succeeded + dead_lettered + cancelled = total`; `retrying` is the part of
/// `pending` waiting for a retry.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Progress {
    pub total: i64,
    pub pending: i64,
    pub succeeded: i64,
    pub dead_lettered: i64,
    pub cancelled: i64,
    pub retrying: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub name: Option<String>,
    pub status: JobStatus,
    pub batch_size: i32,
    pub parallelism: i32,
    pub retry: RetryPolicy,
    /// `{"type": "inline"}` or `{"type": "upload"}`.
    #[schema(value_type = Object)]
    pub source: Value,
    /// The destination with header values and URL passwords redacted.
    #[schema(value_type = Object)]
    pub destination: Value,
    pub record_key: Option<String>,
    pub progress: Progress,
    pub batches: BatchCounts,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

impl JobView {
    pub fn new(job: job::Model, batches: BatchCounts) -> Self {
        let destination = serde_json::from_value::<Destination>(job.destination.clone())
            .map(|d| d.redacted())
            .unwrap_or_else(|_| serde_json::json!({"type": job.destination.get("type")}));
        let retry = serde_json::from_value(job.retry_policy.clone()).unwrap_or_default();
        let done = job.succeeded_records + job.dead_lettered_records + job.cancelled_records;
        Self {
            id: job.id.into(),
            name: job.name,
            status: job.status,
            batch_size: job.batch_size,
            parallelism: job.parallelism,
            retry,
            source: job.source,
            destination,
            record_key: job.record_key,
            progress: Progress {
                total: job.total_records,
                pending: job.total_records - done,
                succeeded: job.succeeded_records,
                dead_lettered: job.dead_lettered_records,
                cancelled: job.cancelled_records,
                retrying: job.retrying_records,
            },
            batches,
            created_at: job.created_at,
            updated_at: job.updated_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            cancel_requested_at: job.cancel_requested_at,
            error: job.error,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantView {
    pub id: Uuid,
    pub name: String,
    pub status: TenantStatus,
    pub max_concurrent_jobs: i32,
    pub rate_limit_per_second: i32,
    pub rate_limit_burst: i32,
    /// Largest job, in records; `null`: no limit.
    pub max_records_per_job: Option<i64>,
    /// Most records the tenant may have pending (not yet succeeded, dead-lettered or
    /// cancelled) across its unfinished jobs; `null`: no limit.
    pub max_pending_records: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<tenant::Model> for TenantView {
    fn from(t: tenant::Model) -> Self {
        Self {
            id: t.id.into(),
            name: t.name,
            status: t.status,
            max_concurrent_jobs: t.max_concurrent_jobs,
            rate_limit_per_second: t.rate_limit_per_second,
            rate_limit_burst: t.rate_limit_burst,
            max_records_per_job: t.max_records_per_job,
            max_pending_records: t.max_pending_records,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// An API key as listed: never its secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: Option<String>,
    /// `frk_<public id>`: the non-secret start of the key.
    pub prefix: String,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Written back every few seconds, not on every request.
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// What the key may do: `jobs:read`, `jobs:write`, `keys:manage`.
    pub scopes: Vec<String>,
}

impl From<api_key::Model> for ApiKeyView {
    fn from(k: api_key::Model) -> Self {
        let status = if k.revoked_at.is_some() {
            "revoked"
        } else if k.expires_at.is_some_and(|at| at <= Utc::now()) {
            "expired"
        } else {
            "active"
        };
        Self {
            id: k.id,
            tenant_id: k.tenant_id.into(),
            name: k.name,
            prefix: format!(
                "{}{}",
                freight_core::domain::api_key::KEY_PREFIX,
                k.public_id
            ),
            status,
            created_at: k.created_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
            scopes: k.scopes,
        }
    }
}

/// A newly created key: the only response that ever holds `key` in plaintext.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedApiKey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The full key. Store it now: it cannot be shown again.
    pub key: String,
    pub name: Option<String>,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// What the key may do.
    pub scopes: Vec<String>,
}
