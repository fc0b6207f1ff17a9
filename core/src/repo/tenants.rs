//! `tenants`.

use chrono::Utc;
use entity::tenant::{self, TenantStatus};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use uuid::Uuid;

use super::page::{Page, PageRequest};
use crate::{
    domain::retry_policy::RetryPolicy,
    error::{Error, Result},
};

/// Largest rate limit and burst the schema allows.
pub const MAX_RATE: i32 = 1_000_000;

pub struct NewTenant {
    pub name: String,
    pub max_concurrent_jobs: i32,
    pub rate_limit_per_second: i32,
}

/// Inserts a tenant; a taken name is a conflict.
pub async fn create(db: &impl ConnectionTrait, new: NewTenant) -> Result<tenant::Model> {
    let now = Utc::now();
    let model = tenant::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(new.name.clone()),
        status: Set(TenantStatus::Active),
        max_concurrent_jobs: Set(new.max_concurrent_jobs),
        rate_limit_per_second: Set(new.rate_limit_per_second),
        rate_limit_burst: Set(new.rate_limit_per_second.saturating_mul(2).min(MAX_RATE)),
        max_records_per_job: Set(None),
        retry_policy: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    };
    model.insert(db).await.map_err(|e| {
        if super::is_unique_violation(&e, "tenants_name_key") {
            Error::Conflict(format!("a tenant named `{}` already exists", new.name))
        } else {
            e.into()
        }
    })
}

pub async fn get(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<tenant::Model>> {
    Ok(tenant::Entity::find_by_id(id).one(db).await?)
}

/// Newest first.
pub async fn list(db: &impl ConnectionTrait, page: PageRequest) -> Result<Page<tenant::Model>> {
    let mut q = tenant::Entity::find()
        .order_by_desc(tenant::Column::Id)
        .limit(page.limit + 1);
    if let Some(before) = page.after {
        q = q.filter(tenant::Column::Id.lt(before));
    }
    Ok(page.finish(q.all(db).await?, |t| t.id))
}

/// The tenant's default retry policy (`PUT /api/v1/retry-policies`), else the contract's.
pub fn default_retry(tenant: &tenant::Model) -> RetryPolicy {
    tenant
        .retry_policy
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// An operator's change to a tenant: only the fields given change.
#[derive(Debug, Default)]
pub struct TenantPatch {
    pub status: Option<entity::tenant::TenantStatus>,
    pub max_concurrent_jobs: Option<i32>,
    pub rate_limit_per_second: Option<i32>,
    pub rate_limit_burst: Option<i32>,
    /// `Some(None)` removes the limit.
    pub max_records_per_job: Option<Option<i64>>,
}

/// Applies a patch and bumps `updated_at`, which makes every api replica drop the
/// tenant's keys from its auth cache within a poll (so a suspension or a new rate limit
/// applies everywhere within seconds).
pub async fn update(
    db: &impl ConnectionTrait,
    id: Uuid,
    patch: TenantPatch,
) -> Result<Option<tenant::Model>> {
    let Some(current) = get(db, id).await? else {
        return Ok(None);
    };
    let mut m: tenant::ActiveModel = current.into();
    if let Some(v) = patch.status {
        m.status = Set(v);
    }
    if let Some(v) = patch.max_concurrent_jobs {
        m.max_concurrent_jobs = Set(v);
    }
    if let Some(v) = patch.rate_limit_per_second {
        m.rate_limit_per_second = Set(v);
    }
    if let Some(v) = patch.rate_limit_burst {
        m.rate_limit_burst = Set(v);
    }
    if let Some(v) = patch.max_records_per_job {
        m.max_records_per_job = Set(v);
    }
    m.updated_at = Set(Utc::now());
    Ok(Some(m.update(db).await?))
}
