//! `batches`: planning, and the per-status counts shown on a job.

use std::{collections::HashMap, sync::LazyLock};

use entity::{BatchId, JobId, TenantId, batch::BatchStatus, job};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QuerySelect, Statement,
    sea_query::Expr,
};
use serde::Serialize;

use super::windows;
use crate::error::Result;

/// Cuts a job's records into batches of `batch_size` consecutive records, in one
/// statement. Records numbered `1 ..= total` without gaps (every inline job, and an
/// upload whose calls neither overlapped nor failed) are cut by arithmetic; otherwise
/// the records themselves are counted off in `seq` order, so a batch covers a range of
/// numbers with gaps in it but still holds `batch_size` records.
/// Guard: runs once per job, inside the transaction that creates, starts or cancels it,
/// with the job locked (no upload in flight).
pub async fn plan(db: &impl ConnectionTrait, job: &job::Model) -> Result<u64> {
    let mut values: Vec<sea_orm::Value> = vec![
        job.id.into(),
        job.tenant_id.into(),
        (job.batch_size as i64).into(),
    ];
    let sql = if job.last_reserved_seq == job.total_records {
        values.push(job.total_records.into());
        "INSERT INTO batches (id, job_id, tenant_id, seq, first_record_seq, last_record_seq, record_count, status)
         SELECT gen_random_uuid(), $1, $2, (g + 1)::int, g * $3 + 1, LEAST((g + 1) * $3, $4),
                (LEAST((g + 1) * $3, $4) - g * $3)::int, 'pending'
         FROM generate_series(0::bigint, ($4 - 1) / $3) AS g"
    } else {
        "INSERT INTO batches (id, job_id, tenant_id, seq, first_record_seq, last_record_seq, record_count, status)
         SELECT gen_random_uuid(), $1, $2, (g + 1)::int, min(seq), max(seq), count(*)::int, 'pending'
         FROM (SELECT seq, (row_number() OVER (ORDER BY seq) - 1) / $3 AS g
               FROM job_records WHERE job_id = $1) numbered
         GROUP BY g"
    };
    let res = db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await?;
    Ok(res.rows_affected())
}

/// How many of a job's batches are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchCounts {
    pub total: i64,
    pub pending: i64,
    pub queued: i64,
    pub running: i64,
    pub retry_scheduled: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl BatchCounts {
    fn add(&mut self, status: BatchStatus, n: i64) {
        self.total += n;
        *match status {
            BatchStatus::Pending => &mut self.pending,
            BatchStatus::Queued => &mut self.queued,
            BatchStatus::Running => &mut self.running,
            BatchStatus::RetryScheduled => &mut self.retry_scheduled,
            BatchStatus::Succeeded => &mut self.succeeded,
            BatchStatus::Failed => &mut self.failed,
            BatchStatus::Cancelled => &mut self.cancelled,
        } += n;
    }
}

/// Batch counts for several jobs in one grouped, index-only query.
pub async fn counts(
    db: &impl ConnectionTrait,
    job_ids: &[JobId],
) -> Result<HashMap<JobId, BatchCounts>> {
    let mut out: HashMap<JobId, BatchCounts> = HashMap::new();
    if job_ids.is_empty() {
        return Ok(out);
    }
    use entity::batch::Column as B;
    let rows: Vec<(JobId, BatchStatus, i64)> = entity::batch::Entity::find()
        .select_only()
        .columns([B::JobId, B::Status])
        .expr(Expr::cust("count(*)::bigint"))
        .filter(B::JobId.is_in(job_ids.iter().copied()))
        .group_by(B::JobId)
        .group_by(B::Status)
        .into_tuple()
        .all(db)
        .await?;
    for (job_id, status, n) in rows {
        out.entry(job_id).or_default().add(status, n);
    }
    Ok(out)
}

/// A batch this worker has claimed, with what delivery needs from its job.
#[derive(Debug, Clone, sea_orm::FromQueryResult)]
pub struct ClaimedBatch {
    pub id: BatchId,
    pub job_id: JobId,
    pub tenant_id: TenantId,
    pub seq: i32,
    pub first_record_seq: i64,
    pub last_record_seq: i64,
    /// This delivery's number for the batch (1 for the first).
    pub attempts: i32,
    pub next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    pub destination: serde_json::Value,
    pub retry_policy: serde_json::Value,
}

/// Claims a batch for `worker_id` in one guarded UPDATE. Matches only a batch that is
/// queued or retry-scheduled (and due, give or take the queue's one-second resolution),
/// or running with a heartbeat older than `stale_after_secs` (its worker died), of a job
/// that is still running, of a tenant that is not suspended, while the job runs fewer
/// batches than its window ([`windows::effective_window`]). `None` means a duplicate or
/// stale message, a suspended tenant's batch (it waits, queued, for reinstatement) or one
/// over its job's share of the fleet (it waits, queued, for the reconciler to send it
/// again): drop it.
///
/// Guard: the job's row is share-locked first (`FOR KEY SHARE`, which ledgers' counter
/// updates do not block), so no batch starts running while a cancel holds the job's row
/// (`FOR UPDATE`): a cancel never waits on a batch that a ledger, itself waiting for the
/// job's row, has locked — the two would deadlock.
pub async fn claim(
    db: &impl ConnectionTrait,
    batch_id: BatchId,
    worker_id: &str,
    stale_after_secs: f64,
) -> Result<Option<ClaimedBatch>> {
    use sea_orm::FromQueryResult;
    // Built once: every batch's claim runs it.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH j AS (
                 SELECT j.id, j.destination, j.retry_policy FROM jobs j
                 WHERE j.id = (SELECT job_id FROM batches WHERE id = $1) AND j.status = 'running'
                   AND EXISTS (SELECT 1 FROM tenants t WHERE t.id = j.tenant_id AND t.status = 'active')
                   AND (SELECT count(*) FROM batches o
                        WHERE o.job_id = j.id AND o.status = 'running' AND o.id <> $1) < {}
                 FOR KEY SHARE OF j)
             UPDATE batches b
             SET status = 'running', attempts = b.attempts + 1, worker_id = $2, heartbeat_at = now(), updated_at = now()
             FROM j
             WHERE b.id = $1 AND j.id = b.job_id
               AND ((b.status IN ('queued', 'retry_scheduled')
                     AND (b.next_attempt_at IS NULL OR b.next_attempt_at <= now() + interval '2 seconds'))
                    OR (b.status = 'running' AND b.heartbeat_at < now() - make_interval(secs => $3)))
             RETURNING b.id, b.job_id, b.tenant_id, b.seq, b.first_record_seq, b.last_record_seq, b.attempts,
                       b.next_attempt_at, j.destination, j.retry_policy",
            windows::effective_window()
        )
    });
    Ok(
        ClaimedBatch::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Postgres,
            SQL.as_str(),
            [batch_id.into(), worker_id.into(), stale_after_secs.into()],
        ))
        .one(db)
        .await?,
    )
}

/// A record still to deliver, with the attempts it has had.
#[derive(Debug, Clone, sea_orm::FromQueryResult)]
pub struct PendingRecord {
    pub seq: i64,
    /// The record's JSON text (read as text: connectors parse only what they need).
    pub payload: String,
    pub attempts: i32,
}

/// The batch's records that have no terminal outcome yet, in order.
pub async fn pending_records(
    db: &impl ConnectionTrait,
    batch: &ClaimedBatch,
) -> Result<Vec<PendingRecord>> {
    use sea_orm::FromQueryResult;
    Ok(
        PendingRecord::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT seq, payload::text AS payload, attempts FROM job_records
         WHERE job_id = $1 AND seq BETWEEN $2 AND $3 AND status = 'pending' ORDER BY seq",
            [
                batch.job_id.into(),
                batch.first_record_seq.into(),
                batch.last_record_seq.into(),
            ],
        ))
        .all(db)
        .await?,
    )
}

/// What a heartbeat says of this worker's running batches.
#[derive(Debug, Default)]
pub struct Beat {
    /// Go on.
    pub keep: Vec<BatchId>,
    /// Go on with the records in flight but start no more, and give up on those in flight
    /// if they do not finish soon: the job runs more batches than its window allows now
    /// (another tenant started work and the fleet is shared again), or its tenant was
    /// suspended. The oldest claims keep their slots.
    pub yield_: Vec<BatchId>,
}

/// Refreshes the heartbeat of this worker's running batches in one statement. A batch
/// in neither list was taken over by another worker or belongs to a job that is no longer
/// running, and must stop.
pub async fn heartbeat(
    db: &impl ConnectionTrait,
    worker_id: &str,
    batch_ids: &[BatchId],
) -> Result<Beat> {
    if batch_ids.is_empty() {
        return Ok(Beat::default());
    }
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH beat AS (
                 UPDATE batches SET heartbeat_at = now()
                 WHERE id = ANY($1) AND status = 'running' AND worker_id = $2 RETURNING id, job_id),
             ranked AS (
                 SELECT b.id, row_number() OVER (PARTITION BY b.job_id ORDER BY b.updated_at, b.id) AS rank
                 FROM batches b WHERE b.job_id IN (SELECT job_id FROM beat) AND b.status = 'running')
             SELECT beat.id,
                    (r.rank <= {} AND EXISTS (SELECT 1 FROM tenants t
                                              WHERE t.id = j.tenant_id AND t.status = 'active')) AS within_share
             FROM beat JOIN jobs j ON j.id = beat.job_id JOIN ranked r ON r.id = beat.id
             WHERE j.status = 'running'",
            windows::effective_window()
        )
    });
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            SQL.as_str(),
            [batch_ids.to_vec().into(), worker_id.into()],
        ))
        .await?;
    let mut beat = Beat::default();
    for row in rows {
        let id: BatchId = row.try_get("", "id")?;
        if row.try_get("", "within_share")? {
            beat.keep.push(id);
        } else {
            beat.yield_.push(id);
        }
    }
    Ok(beat)
}

/// One of the tenant's batches; another tenant's batch is not found.
pub async fn get(
    db: &impl ConnectionTrait,
    tenant_id: TenantId,
    batch_id: BatchId,
) -> Result<entity::batch::Model> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    entity::batch::Entity::find_by_id(batch_id)
        .filter(entity::batch::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or(crate::Error::NotFound("batch"))
}
