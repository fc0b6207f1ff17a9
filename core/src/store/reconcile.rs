//! The reconciler's statements: find work whose Redis message is lost or late, and state
//! that no event will move on its own. A suspended tenant's work is left alone: it waits
//! for reinstatement (`service::tenants`). Each scan is bounded by `limit` and stamps
//! `dispatched_at`, so one batch is not re-dispatched again before `after_secs` pass.

use entity::{BatchId, JobId, TenantId};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use super::windows;
use crate::error::Result;

fn ids<T: sea_orm::TryGetable>(rows: Vec<sea_orm::QueryResult>, col: &str) -> Vec<T> {
    rows.iter()
        .filter_map(|r| r.try_get("", col).ok())
        .collect()
}

/// Running batches whose worker stopped heartbeating: re-dispatch them (a worker's claim
/// takes over a running batch with an expired heartbeat).
pub async fn stale_running(
    db: &impl ConnectionTrait,
    after_secs: f64,
    limit: i64,
) -> Result<Vec<BatchId>> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE batches SET dispatched_at = now() WHERE id IN (
                 SELECT id FROM batches
                 WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => $1)
                   AND tenant_id NOT IN (SELECT id FROM tenants WHERE status <> 'active')
                   AND (dispatched_at IS NULL OR dispatched_at < now() - make_interval(secs => $1))
                 ORDER BY heartbeat_at LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING id",
            [after_secs.into(), limit.into()],
        ))
        .await?;
    Ok(ids(rows, "id"))
}

/// Queued or retry-scheduled batches due more than `after_secs` ago and still not
/// claimed: their message was lost (Redis restarted or flushed) or is stuck.
pub async fn overdue(
    db: &impl ConnectionTrait,
    after_secs: f64,
    limit: i64,
) -> Result<Vec<BatchId>> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE batches SET dispatched_at = now() WHERE id IN (
                 SELECT id FROM batches
                 WHERE status IN ('queued', 'retry_scheduled')
                   AND COALESCE(next_attempt_at, created_at) < now() - make_interval(secs => $1)
                   AND tenant_id NOT IN (SELECT id FROM tenants WHERE status <> 'active')
                   AND (dispatched_at IS NULL OR dispatched_at < now() - make_interval(secs => $1))
                 ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING id",
            [after_secs.into(), limit.into()],
        ))
        .await?;
    Ok(ids(rows, "id"))
}

/// Running jobs with pending batches and free room in their window.
pub async fn jobs_with_room(db: &impl ConnectionTrait, limit: i64) -> Result<Vec<JobId>> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "SELECT j.id FROM jobs j WHERE j.status = 'running'
                   AND j.tenant_id NOT IN (SELECT id FROM tenants WHERE status <> 'active')
                   AND EXISTS (SELECT 1 FROM batches b WHERE b.job_id = j.id AND b.status = 'pending')
                   AND (SELECT count(*) FROM batches b WHERE b.job_id = j.id AND b.status IN {}) < {}
                 LIMIT $1",
                windows::IN_FLIGHT,
                windows::effective_window()
            ),
            [limit.into()],
        ))
        .await?;
    Ok(ids(rows, "id"))
}

/// Locks a job unless another transaction holds it (a ledger or a cancel, which refill
/// or end its window themselves); true if this transaction now holds it.
pub async fn try_lock_job(txn: &impl ConnectionTrait, job_id: JobId) -> Result<bool> {
    let locked = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT id FROM jobs WHERE id = $1 FOR UPDATE SKIP LOCKED",
            [job_id.into()],
        ))
        .await?;
    Ok(locked.is_some())
}

/// Running or cancelling jobs left with no unfinished batch: `(job, tenant)` pairs to
/// finalise.
pub async fn stragglers(db: &impl ConnectionTrait, limit: i64) -> Result<Vec<(JobId, TenantId)>> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT j.id, j.tenant_id FROM jobs j WHERE j.status IN ('running', 'cancelling')
               AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.job_id = j.id
                               AND b.status IN ('pending', 'queued', 'running', 'retry_scheduled'))
             LIMIT $1",
            [limit.into()],
        ))
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("", "id")?, row.try_get("", "tenant_id")?)))
        .collect()
}

/// Tenants with queued jobs: candidates for admission.
pub async fn tenants_with_queued_jobs(
    db: &impl ConnectionTrait,
    limit: i64,
) -> Result<Vec<TenantId>> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT DISTINCT tenant_id FROM jobs WHERE status = 'queued' LIMIT $1",
            [limit.into()],
        ))
        .await?;
    Ok(ids(rows, "tenant_id"))
}

/// Cancelling jobs with a running batch whose worker stopped heartbeating: their batches
/// will never be claimed again, so the reconciler must end them (`service::reconcile`).
pub async fn cancelling_with_abandoned_batches(
    db: &impl ConnectionTrait,
    after_secs: f64,
    limit: i64,
) -> Result<Vec<JobId>> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT DISTINCT b.job_id FROM batches b JOIN jobs j ON j.id = b.job_id
             WHERE b.status = 'running' AND b.heartbeat_at < now() - make_interval(secs => $1)
               AND j.status = 'cancelling'
             LIMIT $2",
            [after_secs.into(), limit.into()],
        ))
        .await?;
    Ok(ids(rows, "job_id"))
}
