//! A job's lifecycle after intake, statement by statement: finalisation, cancellation,
//! re-opening dead letters, and moving a reinstated tenant's work again. The use cases
//! that combine them are in `service`.

use entity::{BatchId, JobId, TenantId, job::JobStatus};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement,
};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Finalises a job once none of its batches is unfinished: `cancelled` if it was
/// cancelling, else `completed` if every record succeeded, else `completed_with_errors`.
/// Guard: only a running or cancelling job with no pending, queued, running or
/// retry-scheduled batch matches, so exactly one caller wins.
pub async fn finalize(db: &impl ConnectionTrait, job_id: JobId) -> Result<Option<Finalized>> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE jobs SET status = CASE WHEN status = 'cancelling' THEN 'cancelled'
                                           WHEN succeeded_records = total_records THEN 'completed'
                                           ELSE 'completed_with_errors' END,
                    finished_at = now(), updated_at = now()
             WHERE id = $1 AND status IN ('running', 'cancelling')
               AND NOT EXISTS (SELECT 1 FROM batches WHERE job_id = $1
                               AND status IN ('pending', 'queued', 'running', 'retry_scheduled'))
             RETURNING status, tenant_id,
                       EXTRACT(EPOCH FROM (now() - cancel_requested_at))::float8 AS cancel_latency",
            [job_id.into()],
        ))
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(Finalized {
        status: row.try_get("", "status")?,
        tenant_id: row.try_get("", "tenant_id")?,
        cancel_latency_secs: row.try_get("", "cancel_latency")?,
    }))
}

/// A job that just reached its terminal state.
#[derive(Debug, Clone, Copy)]
pub struct Finalized {
    pub status: JobStatus,
    pub tenant_id: TenantId,
    /// For a cancelled job: seconds from the cancel request to now.
    pub cancel_latency_secs: Option<f64>,
}

impl Finalized {
    /// Counts the finished job (and its cancel latency) in the metrics. Call after commit.
    pub fn record_metrics(&self) {
        crate::metrics::job_finished(self.tenant_id, &sea_orm::ActiveEnum::to_value(&self.status));
        if let Some(secs) = self.cancel_latency_secs {
            metrics::histogram!(crate::metrics::CANCEL_LATENCY).record(secs.max(0.0));
        }
    }
}

/// Counts a cancel's records on the job and sets it `cancelled`, or `cancelling` while a
/// batch of it still runs (its worker stops between records). Guard: the caller holds
/// the job's row lock and has just cancelled its unstarted batches ([`cancel_batches`]).
pub async fn mark_cancelled(
    txn: &impl ConnectionTrait,
    job_id: JobId,
    cancelled: i64,
    was_retrying: i64,
) -> Result<()> {
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE jobs SET cancelled_records = cancelled_records + $2, retrying_records = retrying_records - $3,
                cancel_requested_at = now(), updated_at = now(),
                status = CASE WHEN EXISTS (SELECT 1 FROM batches WHERE job_id = $1 AND status = 'running')
                              THEN 'cancelling' ELSE 'cancelled' END,
                finished_at = CASE WHEN EXISTS (SELECT 1 FROM batches WHERE job_id = $1 AND status = 'running')
                                   THEN NULL ELSE now() END
         WHERE id = $1",
        [job_id.into(), cancelled.into(), was_retrying.into()],
    ))
    .await?;
    Ok(())
}

/// Which of a cancelled job's batches to cancel.
pub enum CancelScope {
    /// Batches not running: pending, queued, retry-scheduled.
    Unstarted,
    /// Running batches whose worker stopped heartbeating this many seconds ago: nobody
    /// will ever record their outcome, because a cancelling job's batches are not claimed.
    Abandoned { stale_after_secs: f64 },
}
use CancelScope::*;

/// Cancels the chosen batches of a job and their pending records, each with a
/// `cancelled` log row. Returns (records cancelled, records that were waiting for a
/// retry) for the job's counters, which the caller updates. Guard: the caller holds the
/// job's row lock; `FOR UPDATE` re-checks each batch's state after any wait.
pub async fn cancel_batches(
    txn: &impl ConnectionTrait,
    job_id: JobId,
    tenant_id: TenantId,
    scope: CancelScope,
) -> Result<(i64, i64)> {
    let mut values: Vec<sea_orm::Value> = vec![job_id.into(), tenant_id.into()];
    // No join with `job_records` anywhere: statistics taken before this job's records
    // arrived estimate one row for `job_id = $1`, and a planner that believes it drives a
    // nested loop from `job_records`, rescanning every cancelled batch for each of the
    // job's records (40 s for 100,000 records after a million-record job). So the
    // records to log are read batch by batch (a LATERAL index range scan each; `OFFSET 0`
    // keeps the planner from flattening it into a join it may reorder), and the same
    // records are updated by one range scan of the job's records, each tested against
    // the cancelled batches' ranges as one multirange (a binary search).
    // An abandoned batch that is locked is not abandoned: its worker is recording it
    // (and waits for the job's row, which the caller holds), so it is skipped.
    let condition = match scope {
        Unstarted => "status IN ('pending', 'queued', 'retry_scheduled') FOR UPDATE",
        Abandoned { stale_after_secs } => {
            values.push(stale_after_secs.into());
            "status = 'running' AND heartbeat_at < now() - make_interval(secs => $3) FOR UPDATE SKIP LOCKED"
        }
    };
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "WITH target AS (
                     SELECT id, retrying_records FROM batches WHERE job_id = $1 AND {condition}),
                 upd AS (
                     UPDATE batches b SET status = 'cancelled', finished_at = now(), updated_at = now(),
                            retrying_records = 0, heartbeat_at = NULL
                     FROM target t WHERE b.id = t.id
                     RETURNING b.id, b.first_record_seq, b.last_record_seq, t.retrying_records AS was_retrying),
                 recs AS (
                     SELECT upd.id AS batch_id, r.seq, r.attempts FROM upd CROSS JOIN LATERAL (
                         SELECT seq, attempts FROM job_records
                         WHERE job_id = $1 AND seq BETWEEN upd.first_record_seq AND upd.last_record_seq
                           AND status = 'pending'
                         OFFSET 0) r),
                 marked AS (
                     UPDATE job_records SET status = 'cancelled'
                     WHERE job_id = $1 AND status = 'pending'
                       AND seq BETWEEN (SELECT min(first_record_seq) FROM upd) AND (SELECT max(last_record_seq) FROM upd)
                       AND seq <@ (SELECT range_agg(int8range(first_record_seq, last_record_seq, '[]')) FROM upd)),
                 logs AS (
                     INSERT INTO record_logs (job_id, tenant_id, batch_id, record_seq, attempt, status, error)
                     SELECT $1, $2, batch_id, seq, attempts, 'cancelled', 'job cancelled before this record was delivered'
                     FROM recs)
                 SELECT (SELECT count(*) FROM recs)::bigint AS cancelled,
                        (SELECT COALESCE(sum(was_retrying), 0) FROM upd)::bigint AS was_retrying"
            ),
            values,
        ))
        .await?
        .ok_or_else(|| Error::internal("cancel returned no row"))?;
    Ok((
        row.try_get("", "cancelled")?,
        row.try_get("", "was_retrying")?,
    ))
}

/// Locks a cancelling job unless another transaction holds it; returns its tenant.
pub async fn lock_cancelling(
    txn: &impl ConnectionTrait,
    job_id: JobId,
) -> Result<Option<TenantId>> {
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT tenant_id FROM jobs WHERE id = $1 AND status = 'cancelling' FOR UPDATE SKIP LOCKED",
            [job_id.into()],
        ))
        .await?;
    Ok(row.map(|r| r.try_get("", "tenant_id")).transpose()?)
}

/// Counts records cancelled with a cancelling job's abandoned batches.
pub async fn add_cancelled(
    txn: &impl ConnectionTrait,
    job_id: JobId,
    cancelled: i64,
    was_retrying: i64,
) -> Result<()> {
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE jobs SET cancelled_records = cancelled_records + $2, retrying_records = retrying_records - $3,
                updated_at = now()
         WHERE id = $1",
        [job_id.into(), cancelled.into(), was_retrying.into()],
    ))
    .await?;
    Ok(())
}

/// Which dead letters to re-run.
pub enum RequeueScope {
    Job(JobId),
    Batch(BatchId),
    Ids(Vec<Uuid>),
}

impl RequeueScope {
    /// The scope's condition on `dead_letters d`, with its value bound as `$2`.
    fn filter(&self) -> (&'static str, sea_orm::Value) {
        match self {
            RequeueScope::Job(id) => ("d.job_id = $2", (*id).into()),
            RequeueScope::Batch(id) => ("d.batch_id = $2", (*id).into()),
            RequeueScope::Ids(ids) => ("d.id = ANY($2)", ids.clone().into()),
        }
    }
}

/// Locks the tenant's jobs that have open dead letters in scope and may be retried
/// (running, or finished with errors), in id order and in a statement of its own: a
/// concurrent cancel, ledger or requeue of the same job then runs wholly before or
/// after the caller's transaction, and its later statements see the committed result.
pub async fn lock_for_requeue(
    txn: &impl ConnectionTrait,
    tenant_id: TenantId,
    scope: &RequeueScope,
) -> Result<Vec<JobId>> {
    let (filter, arg) = scope.filter();
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "SELECT id FROM jobs WHERE tenant_id = $1
                   AND status IN ('running', 'completed_with_errors', 'failed')
                   AND id IN (SELECT d.job_id FROM dead_letters d
                              WHERE d.tenant_id = $1 AND d.requeued_at IS NULL AND {filter})
                 ORDER BY id FOR UPDATE"
            ),
            [tenant_id.into(), arg],
        ))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get("", "id").ok())
        .collect())
}

/// Re-opens the open dead letters in scope of the locked `job_ids`, in failed batches:
/// each dead letter keeps its row with `requeued_at` set, its record becomes pending
/// with its attempts reset, its batch pending. Returns `(job id, records re-opened)`.
pub async fn reopen_dead_letters(
    txn: &impl ConnectionTrait,
    tenant_id: TenantId,
    scope: &RequeueScope,
    job_ids: &[JobId],
) -> Result<Vec<(JobId, i64)>> {
    let (filter, arg) = scope.filter();
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "WITH dl AS (
                     UPDATE dead_letters d SET requeued_at = now(), requeue_count = requeue_count + 1
                     WHERE d.tenant_id = $1 AND d.requeued_at IS NULL AND {filter} AND d.job_id = ANY($3)
                       AND EXISTS (SELECT 1 FROM batches b WHERE b.id = d.batch_id AND b.status = 'failed')
                     RETURNING d.job_id, d.batch_id, d.record_seq),
                 recs AS (
                     UPDATE job_records r SET status = 'pending', attempts = 0, last_error = NULL
                     FROM dl WHERE r.job_id = dl.job_id AND r.seq = dl.record_seq AND r.status = 'dead_lettered'
                     RETURNING r.job_id, dl.batch_id),
                 bat AS (
                     UPDATE batches SET status = 'pending', finished_at = NULL, next_attempt_at = NULL, updated_at = now()
                     WHERE id IN (SELECT batch_id FROM recs) AND status = 'failed' RETURNING id)
                 SELECT job_id, count(*)::bigint AS n FROM recs GROUP BY job_id ORDER BY job_id"
            ),
            [tenant_id.into(), arg, job_ids.to_vec().into()],
        ))
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("", "job_id")?, row.try_get("", "n")?)))
        .collect()
}

/// Takes `n` re-opened records off the job's dead-letter count and queues a finished
/// job again (a running one keeps running).
pub async fn reopen_job(txn: &impl ConnectionTrait, job_id: JobId, n: i64) -> Result<()> {
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE jobs SET dead_lettered_records = dead_lettered_records - $2, updated_at = now(),
                status = CASE WHEN status = 'running' THEN 'running' ELSE 'queued' END,
                finished_at = NULL
         WHERE id = $1",
        [job_id.into(), n.into()],
    ))
    .await?;
    Ok(())
}

/// Marks the tenant's queued and due batches dispatched again and returns them: workers
/// dropped their messages while the tenant was suspended.
pub async fn redispatch_waiting(
    txn: &impl ConnectionTrait,
    tenant_id: TenantId,
) -> Result<Vec<BatchId>> {
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE batches SET dispatched_at = now() WHERE id IN (
                 SELECT id FROM batches WHERE tenant_id = $1
                   AND status IN ('queued', 'retry_scheduled')
                   AND COALESCE(next_attempt_at, created_at) <= now())
             RETURNING id",
            [tenant_id.into()],
        ))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get("", "id").ok())
        .collect())
}

/// Locks the tenant's running jobs, in id order, and returns them.
pub async fn lock_running(txn: &impl ConnectionTrait, tenant_id: TenantId) -> Result<Vec<JobId>> {
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT id FROM jobs WHERE tenant_id = $1 AND status = 'running' ORDER BY id FOR UPDATE",
            [tenant_id.into()],
        ))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get("", "id").ok())
        .collect())
}

/// The tenant's jobs that have not finished (awaiting upload, queued, running): what an
/// operator's "cancel everything" cancels.
pub async fn unfinished_jobs(db: &impl ConnectionTrait, tenant_id: TenantId) -> Result<Vec<JobId>> {
    use entity::job::{self, Column as J};
    let unfinished = [
        JobStatus::AwaitingUpload,
        JobStatus::Queued,
        JobStatus::Running,
    ];
    Ok(job::Entity::find()
        .select_only()
        .column(J::Id)
        .filter(J::TenantId.eq(tenant_id))
        .filter(J::Status.is_in(unfinished))
        .order_by_asc(J::Id)
        .into_tuple()
        .all(db)
        .await?)
}
