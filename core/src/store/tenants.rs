//! `tenants`.

use chrono::Utc;
use entity::{
    TenantId,
    tenant::{self, TenantStatus},
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, Statement,
};

use super::page::{Page, PageRequest};
use crate::{
    domain::{
        retry_policy::RetryPolicy,
        tenant::{MAX_RATE, NewTenant, TenantPatch},
    },
    error::{Error, Result},
};

/// Inserts a tenant; a taken name is a conflict.
pub async fn create(db: &impl ConnectionTrait, new: &NewTenant) -> Result<tenant::Model> {
    let now = Utc::now();
    let model = tenant::ActiveModel {
        id: Set(TenantId::new()),
        name: Set(new.name.clone()),
        status: Set(TenantStatus::Active),
        max_concurrent_jobs: Set(new.max_concurrent_jobs),
        rate_limit_per_second: Set(new.rate_limit_per_second),
        rate_limit_burst: Set(new.rate_limit_per_second.saturating_mul(2).min(MAX_RATE)),
        max_records_per_job: Set(None),
        max_pending_records: Set(new.max_pending_records),
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

pub async fn get(db: &impl ConnectionTrait, id: TenantId) -> Result<Option<tenant::Model>> {
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
    Ok(page.finish(q.all(db).await?, |t| t.id.into()))
}

/// Applies a patch and bumps `updated_at`, which makes every api replica drop the
/// tenant's keys from its auth cache within a poll (so a suspension or a new rate limit
/// applies everywhere within seconds).
pub async fn update(
    db: &impl ConnectionTrait,
    id: TenantId,
    patch: &TenantPatch,
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
    if let Some(v) = patch.max_pending_records {
        m.max_pending_records = Set(v);
    }
    m.updated_at = Set(Utc::now());
    Ok(Some(m.update(db).await?))
}

/// Job states whose records may still be pending (not yet succeeded, dead-lettered or
/// cancelled): what counts against `max_pending_records`.
const UNFINISHED: &str = "('awaiting_upload', 'queued', 'running', 'cancelling')";

/// The tenant's records not yet terminal, across its unfinished jobs (uploads still open
/// included). Reads committed data only; see [`enforce_pending_limit`] for the guarded form.
pub async fn pending_records(db: &impl ConnectionTrait, tenant_id: TenantId) -> Result<i64> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "SELECT COALESCE(sum(total_records - succeeded_records - dead_lettered_records - cancelled_records), 0)::bigint AS n
                 FROM jobs WHERE tenant_id = $1 AND status IN {UNFINISHED}"
            ),
            [tenant_id.into()],
        ))
        .await?
        .ok_or_else(|| Error::internal("sum returned no row"))?;
    Ok(row.try_get("", "n")?)
}

/// Refuses (rolling back the caller's transaction) if the tenant now has more records
/// pending than its `max_pending_records`. Call it last in a transaction that has just
/// added records (a new inline job, an upload): the count includes them. `job_records`
/// is the total of the job the request adds to: if that alone is over the limit the
/// request can never succeed, a validation error (422); otherwise it is
/// [`Error::OverQuota`] (429), which frees up as the tenant's jobs finish.
///
/// Guard: with a limit set, the tenant row is locked first (`FOR NO KEY UPDATE`, in a
/// statement of its own, as `windows::admit` does), so two requests adding records for
/// one tenant take turns and the second counts the first's committed records. `NO KEY
/// UPDATE` rather than `UPDATE` because the caller's job insert already holds the row's
/// `KEY SHARE` (the foreign key), which `NO KEY UPDATE` does not conflict with: two
/// concurrent creates queue up instead of deadlocking.
pub async fn enforce_pending_limit(
    db: &impl ConnectionTrait,
    tenant_id: TenantId,
    field: &str,
    job_records: i64,
) -> Result<()> {
    let limit = |row: Option<sea_orm::QueryResult>| -> Result<Option<i64>> {
        Ok(match row {
            Some(r) => r.try_get("", "max_pending_records")?,
            None => None,
        })
    };
    let unlocked = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT max_pending_records FROM tenants WHERE id = $1",
            [tenant_id.into()],
        ))
        .await?;
    if limit(unlocked)?.is_none() {
        return Ok(());
    }
    let locked = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT max_pending_records FROM tenants WHERE id = $1 FOR NO KEY UPDATE",
            [tenant_id.into()],
        ))
        .await?;
    let Some(max) = limit(locked)? else {
        return Ok(());
    };
    if job_records > max {
        return Err(Error::field(
            field,
            format!(
                "this job would hold {job_records} records, more than this tenant's limit of {max} pending records; split it into smaller jobs"
            ),
        ));
    }
    let pending = pending_records(db, tenant_id).await?;
    if pending > max {
        return Err(Error::OverQuota(crate::FieldError::new(
            field,
            format!(
                "this tenant may have at most {max} records pending across its unfinished jobs; \
                 this request would make {pending}. Retry once running jobs have finished, or cancel some"
            ),
        )));
    }
    Ok(())
}

/// Stores the tenant's default retry policy (`PUT /api/v1/retry-policies`), which jobs
/// created without `retry` then use. The policy must already be validated.
pub async fn set_default_retry(
    db: &impl ConnectionTrait,
    tenant_id: TenantId,
    policy: &RetryPolicy,
) -> Result<RetryPolicy> {
    let json =
        serde_json::to_value(policy).map_err(|e| Error::internal_from("a retry policy", e))?;
    let res = db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE tenants SET retry_policy = $2, updated_at = now() WHERE id = $1",
            [tenant_id.into(), json.into()],
        ))
        .await?;
    if res.rows_affected() == 0 {
        return Err(Error::NotFound("tenant"));
    }
    Ok(*policy)
}
