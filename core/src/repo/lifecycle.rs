//! A job's lifecycle after intake: finalisation, cancellation and re-running dead letters.

use entity::job::{self, JobStatus};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use uuid::Uuid;

use super::{
    audit::{self, Actor},
    batches, jobs, windows,
};
use crate::error::{Error, Result};

/// The Postgres channel a cancel is announced on; the payload is the job id.
pub const CANCEL_CHANNEL: &str = "freight_cancel";

/// Finalises a job once none of its batches is unfinished: `cancelled` if it was
/// cancelling, else `completed` if every record succeeded, else `completed_with_errors`.
/// Guard: only a running or cancelling job with no pending, queued, running or
/// retry-scheduled batch matches, so exactly one caller wins.
pub async fn finalize(db: &impl ConnectionTrait, job_id: Uuid) -> Result<Option<Finalized>> {
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
    pub tenant_id: Uuid,
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

/// What a cancel did: the job as it now stands, and batches to dispatch because a slot
/// freed up for the tenant's queued jobs.
pub struct Cancelled {
    pub job: job::Model,
    pub to_dispatch: Vec<Uuid>,
    /// False when the job was already cancelling (a repeated request).
    pub changed: bool,
}

/// Cancels a job: every batch not running is cancelled with its pending records (each
/// gets a `cancelled` log row); the job is `cancelled` at once if no batch is running,
/// else `cancelling` until the running ones stop. Workers hear of it on
/// [`CANCEL_CHANNEL`] at commit. A finished job is a conflict. The `job.cancelled` audit
/// event is written in the same transaction (a repeated cancel writes none).
pub async fn cancel(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    job_id: Uuid,
    actor: &Actor,
) -> Result<Cancelled> {
    let txn = db.begin().await?;
    let job = jobs::lock(&txn, tenant_id, job_id).await?;
    match job.status {
        s if s.is_terminal() => {
            return Err(Error::Conflict(format!(
                "job is already {}",
                sea_orm::ActiveEnum::to_value(&s)
            )));
        }
        JobStatus::Cancelling => {
            return Ok(Cancelled {
                job,
                to_dispatch: Vec::new(),
                changed: false,
            });
        }
        JobStatus::AwaitingUpload if job.total_records > 0 => {
            batches::plan(&txn, &job).await?;
        }
        _ => {}
    }
    let (cancelled, was_retrying) = cancel_batches(&txn, job_id, tenant_id, Unstarted).await?;
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
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [CANCEL_CHANNEL.into(), job_id.to_string().into()],
    ))
    .await?;
    let job = jobs::lock(&txn, tenant_id, job_id).await?;
    audit::record(
        &txn,
        audit::NewEvent {
            tenant_id: Some(tenant_id),
            actor: actor.clone(),
            action: audit::JOB_CANCELLED,
            target_type: "job",
            target_id: Some(job_id),
            details: serde_json::json!({
                "status": sea_orm::ActiveEnum::to_value(&job.status),
                "cancelled_records": cancelled,
            }),
        },
    )
    .await?;
    let to_dispatch = if job.status == JobStatus::Cancelled {
        windows::admit(&txn, tenant_id).await?
    } else {
        Vec::new()
    };
    txn.commit().await?;
    Ok(Cancelled {
        job,
        to_dispatch,
        changed: true,
    })
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
    job_id: Uuid,
    tenant_id: Uuid,
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
        .ok_or_else(|| Error::Internal("cancel returned no row".into()))?;
    Ok((
        row.try_get("", "cancelled")?,
        row.try_get("", "was_retrying")?,
    ))
}

/// Cancels the abandoned batches of a cancelling job (their worker died mid-batch) and
/// finalises it: without this, the job would stay `cancelling` for ever. Returns batches
/// to dispatch for the tenant's next jobs, or `None` if the job was busy or not cancelling.
pub async fn cancel_abandoned(
    db: &DatabaseConnection,
    job_id: Uuid,
    stale_after_secs: f64,
) -> Result<Option<(Finalized, Vec<Uuid>)>> {
    let txn = db.begin().await?;
    let locked = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT tenant_id FROM jobs WHERE id = $1 AND status = 'cancelling' FOR UPDATE SKIP LOCKED",
            [job_id.into()],
        ))
        .await?;
    let Some(row) = locked else { return Ok(None) };
    let tenant_id: Uuid = row.try_get("", "tenant_id")?;
    let (cancelled, was_retrying) =
        cancel_batches(&txn, job_id, tenant_id, Abandoned { stale_after_secs }).await?;
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE jobs SET cancelled_records = cancelled_records + $2, retrying_records = retrying_records - $3,
                updated_at = now()
         WHERE id = $1",
        [job_id.into(), cancelled.into(), was_retrying.into()],
    ))
    .await?;
    let Some(done) = finalize(&txn, job_id).await? else {
        txn.commit().await?;
        return Ok(None);
    };
    let dispatch = windows::admit(&txn, tenant_id).await?;
    txn.commit().await?;
    Ok(Some((done, dispatch)))
}

/// Which dead letters to re-run.
pub enum RequeueScope {
    Job(Uuid),
    Batch(Uuid),
    Ids(Vec<Uuid>),
}

/// Re-opens dead-lettered records as new attempts (their attempt count starts again):
/// the dead letter keeps its row with `requeued_at` set, the record becomes pending, its
/// batch pending, and a finished job is queued again. Only dead letters of the tenant, in
/// failed batches of jobs that are not cancelled, are requeued. Returns how many were,
/// and batches to dispatch.
///
/// `event` is the audit event of the request (`job.retried`, `batch.retried`,
/// `dead_letters.requeued`); it is written in the same transaction, with the count and
/// the jobs concerned as details, if anything was requeued. Refused as
/// [`Error::OverQuota`] when the records it re-opens would take the tenant past its
/// `max_pending_records`.
/// What [`requeue`] did.
#[derive(Debug, Default)]
pub struct Requeued {
    /// Dead letters re-opened.
    pub requeued: i64,
    /// Batches to push.
    pub to_dispatch: Vec<Uuid>,
    /// The jobs they belong to (whose cached views are stale now).
    pub jobs: Vec<Uuid>,
}

pub async fn requeue(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    scope: RequeueScope,
    event: audit::NewEvent,
) -> Result<Requeued> {
    let (filter, arg, field): (&str, sea_orm::Value, &str) = match scope {
        RequeueScope::Job(id) => ("d.job_id = $2", id.into(), "job_id"),
        RequeueScope::Batch(id) => ("d.batch_id = $2", id.into(), "batch_id"),
        RequeueScope::Ids(ids) => ("d.id = ANY($2)", ids.into(), "ids"),
    };
    let txn = db.begin().await?;
    // Lock the jobs first, in id order and in a statement of their own: a concurrent
    // cancel, ledger or requeue of the same job then runs wholly before or after this
    // one, and the statements below see its committed result.
    let locked = txn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "SELECT id FROM jobs WHERE tenant_id = $1
                   AND status IN ('running', 'completed_with_errors', 'failed')
                   AND id IN (SELECT d.job_id FROM dead_letters d
                              WHERE d.tenant_id = $1 AND d.requeued_at IS NULL AND {filter})
                 ORDER BY id FOR UPDATE"
            ),
            [tenant_id.into(), arg.clone()],
        ))
        .await?;
    let job_ids: Vec<Uuid> = locked
        .iter()
        .filter_map(|r| r.try_get::<Uuid>("", "id").ok())
        .collect();
    if job_ids.is_empty() {
        return Ok(Requeued::default());
    }
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
            [tenant_id.into(), arg, job_ids.into()],
        ))
        .await?;
    let mut total = 0;
    let mut to_dispatch = Vec::new();
    let mut requeued_jobs = Vec::new();
    for row in rows {
        let job_id: Uuid = row.try_get("", "job_id")?;
        let n: i64 = row.try_get("", "n")?;
        total += n;
        requeued_jobs.push(job_id);
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE jobs SET dead_lettered_records = dead_lettered_records - $2, updated_at = now(),
                    status = CASE WHEN status = 'running' THEN 'running' ELSE 'queued' END,
                    finished_at = NULL
             WHERE id = $1",
            [job_id.into(), n.into()],
        ))
        .await?;
        to_dispatch.extend(windows::fill_window(&txn, job_id).await?);
    }
    if total > 0 {
        // Records requeued are pending again: they count against the tenant's limit
        // like new ones (the transaction rolls back if they would take it over).
        super::tenants::enforce_pending_limit(&txn, tenant_id, field, 0).await?;
        to_dispatch.extend(windows::admit(&txn, tenant_id).await?);
        let mut details = match event.details {
            serde_json::Value::Object(map) => map,
            _ => Default::default(),
        };
        details.insert("requeued".into(), total.into());
        details.insert("jobs".into(), serde_json::json!(requeued_jobs));
        audit::record(
            &txn,
            audit::NewEvent {
                details: details.into(),
                ..event
            },
        )
        .await?;
    }
    txn.commit().await?;
    Ok(Requeued {
        requeued: total,
        to_dispatch,
        jobs: requeued_jobs,
    })
}

/// What a reinstated tenant's work needs to move again at once rather than at the
/// reconciler's next pass: its queued and due batches (whose messages workers dropped
/// while it was suspended), its running jobs' windows refilled, its queued jobs admitted.
/// Returns the batches to push.
pub async fn resume_tenant(db: &DatabaseConnection, tenant_id: Uuid) -> Result<Vec<Uuid>> {
    let txn = db.begin().await?;
    let waiting = txn
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
    let mut batches: Vec<Uuid> = waiting
        .iter()
        .filter_map(|r| r.try_get::<Uuid>("", "id").ok())
        .collect();
    let running = txn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT id FROM jobs WHERE tenant_id = $1 AND status = 'running' ORDER BY id FOR UPDATE",
            [tenant_id.into()],
        ))
        .await?;
    for row in running {
        batches.extend(windows::fill_window(&txn, row.try_get("", "id")?).await?);
    }
    batches.extend(windows::admit(&txn, tenant_id).await?);
    txn.commit().await?;
    Ok(batches)
}

/// The tenant's jobs that have not finished (awaiting upload, queued, running): what an
/// operator's "cancel everything" cancels.
pub async fn unfinished_jobs(db: &impl ConnectionTrait, tenant_id: Uuid) -> Result<Vec<Uuid>> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT id FROM jobs WHERE tenant_id = $1
               AND status IN ('awaiting_upload', 'queued', 'running') ORDER BY id",
            [tenant_id.into()],
        ))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get::<Uuid>("", "id").ok())
        .collect())
}

/// Admits the tenant's queued jobs in a transaction of its own; returns batches to push.
pub async fn admit_tenant(db: &DatabaseConnection, tenant_id: Uuid) -> Result<Vec<Uuid>> {
    let txn = db.begin().await?;
    let ids = windows::admit(&txn, tenant_id).await?;
    txn.commit().await?;
    Ok(ids)
}
