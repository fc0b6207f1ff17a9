//! The reconciler's statements: find work whose Redis message is lost or late, and state
//! that no event will move on its own. A suspended tenant's work is left alone: it waits
//! for reinstatement (`lifecycle::resume_tenant`). Each scan is bounded by `limit` and stamps
//! `dispatched_at`, so one batch is not re-dispatched again before `after_secs` pass.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use uuid::Uuid;

use super::{lifecycle, windows};
use crate::error::Result;

fn ids(rows: Vec<sea_orm::QueryResult>, col: &str) -> Vec<Uuid> {
    rows.iter()
        .filter_map(|r| r.try_get::<Uuid>("", col).ok())
        .collect()
}

/// Running batches whose worker stopped heartbeating: re-dispatch them (a worker's claim
/// takes over a running batch with an expired heartbeat).
pub async fn stale_running(
    db: &impl ConnectionTrait,
    after_secs: f64,
    limit: i64,
) -> Result<Vec<Uuid>> {
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
pub async fn overdue(db: &impl ConnectionTrait, after_secs: f64, limit: i64) -> Result<Vec<Uuid>> {
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

/// Refills the windows of running jobs that have pending batches and free slots, and
/// finalises running or cancelling jobs left with no unfinished batch.
pub async fn windows_and_stragglers(
    db: &DatabaseConnection,
    limit: i64,
) -> Result<(Vec<Uuid>, usize)> {
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
    let mut dispatch = Vec::new();
    for job_id in ids(rows, "id") {
        let txn = db.begin().await?;
        let locked = txn
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT id FROM jobs WHERE id = $1 FOR UPDATE SKIP LOCKED",
                [job_id.into()],
            ))
            .await?;
        if locked.is_some() {
            dispatch.extend(windows::fill_window(&txn, job_id).await?);
        }
        txn.commit().await?;
    }
    let stragglers = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT j.id, j.tenant_id FROM jobs j WHERE j.status IN ('running', 'cancelling')
               AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.job_id = j.id
                               AND b.status IN ('pending', 'queued', 'running', 'retry_scheduled'))
             LIMIT $1",
            [limit.into()],
        ))
        .await?;
    let mut finalized = 0;
    for row in stragglers {
        let job_id: Uuid = row.try_get("", "id")?;
        let tenant_id: Uuid = row.try_get("", "tenant_id")?;
        let txn = db.begin().await?;
        let done = lifecycle::finalize(&txn, job_id).await?;
        if done.is_some() {
            finalized += 1;
            dispatch.extend(windows::admit(&txn, tenant_id).await?);
        }
        txn.commit().await?;
        if let Some(done) = done {
            done.record_metrics();
        }
    }
    Ok((dispatch, finalized))
}

/// Tenants with queued jobs: candidates for admission.
pub async fn tenants_with_queued_jobs(db: &impl ConnectionTrait, limit: i64) -> Result<Vec<Uuid>> {
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
/// will never be claimed again, so [`lifecycle::cancel_abandoned`] must end them.
pub async fn cancelling_with_abandoned_batches(
    db: &impl ConnectionTrait,
    after_secs: f64,
    limit: i64,
) -> Result<Vec<Uuid>> {
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
