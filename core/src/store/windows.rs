//! Admission and dispatch windows: which jobs run, and which of their batches are in
//! flight. Callers push the returned batch ids to the queue *after* their transaction
//! commits; a push lost in between is redone by the reconciler.

use std::sync::LazyLock;

use entity::{BatchId, JobId, TenantId};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::error::Result;

/// The class (first key) of the advisory locks that serialise a tenant's admissions.
pub const ADMISSION_LOCK_CLASS: i32 = 0x4652_4144; // "FRAD"

/// Batch states that count against a job's window.
pub const IN_FLIGHT: &str = "('queued', 'running', 'retry_scheduled')";

/// How many times the fleet's delivery slots a tenant alone may keep in flight: enough
/// queued behind each running batch that a worker never idles while a finished batch's
/// ledger commits and its successor is pushed.
const PREFETCH: i64 = 2;

/// A running job's effective window, as SQL over the job's row `j`: its `parallelism`,
/// but at most its fair share of the fleet. The live workers' slots (their summed
/// `concurrency`) are shared equally among the tenants that have a running job, and a
/// tenant's share equally among its running jobs, never below one batch. So a
/// million-record job cannot fill the one FIFO Redis list with batches that every other
/// tenant's first batch must then wait behind, nor hold every slot against a destination
/// that never answers: a newcomer gets its share within a heartbeat or two (running
/// batches over their job's window yield: `batches::heartbeat`). A tenant alone shares
/// nothing and may queue [`PREFETCH`] times the slots, so no slot idles while a finished
/// batch's successor is pushed. With no live worker (nothing delivers anyway) the
/// window is the job's `parallelism`.
pub fn effective_window() -> String {
    format!(
        "(SELECT CASE WHEN f.slots = 0 THEN j.parallelism
        ELSE LEAST(j.parallelism, GREATEST(1, CEIL(f.slots::numeric
            * (CASE WHEN f.tenants > 1 THEN 1 ELSE {PREFETCH} END)
            / GREATEST(f.tenants, 1) / GREATEST(f.tenant_jobs, 1))))::int END
    FROM (SELECT
        (SELECT COALESCE(sum(concurrency), 0) FROM workers
          WHERE stopped_at IS NULL AND last_heartbeat_at > now() - interval '10 seconds') AS slots,
        (SELECT count(DISTINCT tenant_id) FROM jobs WHERE status = 'running') AS tenants,
        (SELECT count(*) FROM jobs WHERE status = 'running' AND tenant_id = j.tenant_id) AS tenant_jobs) AS f)"
    )
}

/// Queues the next pending batches of a running job until its effective window
/// ([`effective_window`]) is in flight; none while its tenant is suspended.
/// Guard: the caller holds the job's row lock (`FOR UPDATE`), so two finishing batches
/// cannot both fill the same free slot.
pub async fn fill_window(db: &impl ConnectionTrait, job_id: JobId) -> Result<Vec<BatchId>> {
    // Built once: every batch's ledger runs it.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH job AS (SELECT {} AS cap FROM jobs j WHERE id = $1 AND status = 'running'
                          AND EXISTS (SELECT 1 FROM tenants t WHERE t.id = j.tenant_id AND t.status = 'active')),
             inflight AS (SELECT count(*) AS n FROM batches WHERE job_id = $1 AND status IN {IN_FLIGHT}),
             next AS (
                 SELECT id FROM batches WHERE job_id = $1 AND status = 'pending' ORDER BY seq
                 LIMIT GREATEST(COALESCE((SELECT cap FROM job), 0) - (SELECT n FROM inflight), 0))
             UPDATE batches SET status = 'queued', next_attempt_at = now(), dispatched_at = now(), updated_at = now()
             WHERE id IN (SELECT id FROM next) RETURNING id",
            effective_window()
        )
    });
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            SQL.as_str(),
            [job_id.into()],
        ))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get::<BatchId>("", "id").ok())
        .collect())
}

/// Promotes the tenant's oldest queued jobs to `running` while it has fewer than
/// `max_concurrent_jobs` running (or cancelling), and fills their windows; none while
/// the tenant is suspended.
/// Guard: takes the tenant's admission lock first, so concurrent admissions for one
/// tenant take turns. It is a transaction-scoped advisory lock, not the tenant row's
/// lock: a transaction that already holds the row's `KEY SHARE` (any insert that
/// references the tenant) and then asked for `FOR UPDATE` on it would deadlock with
/// another doing the same, as the load test found.
pub async fn admit(db: &impl ConnectionTrait, tenant_id: TenantId) -> Result<Vec<BatchId>> {
    // The lock is its own statement: a statement that waited for it would count the
    // tenant's running jobs in a snapshot taken before the wait, and over-admit.
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1, hashtext($2::text))",
        [ADMISSION_LOCK_CLASS.into(), tenant_id.to_string().into()],
    ))
    .await?;
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "WITH active AS (SELECT count(*) AS n FROM jobs WHERE tenant_id = $1 AND status IN ('running', 'cancelling')),
             next AS (
                 SELECT id FROM jobs WHERE tenant_id = $1 AND status = 'queued' ORDER BY id
                 LIMIT GREATEST(COALESCE((SELECT max_concurrent_jobs FROM tenants WHERE id = $1 AND status = 'active'), 0)
                                - (SELECT n FROM active), 0)
                 FOR UPDATE SKIP LOCKED)
             UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, now()), updated_at = now()
             WHERE id IN (SELECT id FROM next) RETURNING id",
            [tenant_id.into()],
        ))
        .await?;
    let mut batches = Vec::new();
    for row in rows {
        let job_id: JobId = row.try_get("", "id")?;
        batches.extend(fill_window(db, job_id).await?);
    }
    Ok(batches)
}
