//! The ledger's statements: what one batch attempt writes, in the transaction
//! `service::deliveries` runs: every record's log row, the records' current status, dead
//! letters, the batch's new state and the job's counters.

use chrono::{DateTime, Utc};
use entity::{BatchId, JobId, batch::BatchStatus, job::JobStatus};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, SelectExt, Statement, Value,
    sea_query::ArrayType,
};

use super::{batches::ClaimedBatch, pg_txn::PgTxn};
use crate::{
    domain::attempt::{Counts, Rows},
    error::{Error, Result},
    pg_copy::BinaryRows,
};

/// The job's status; with `lock`, after taking its row lock.
pub async fn job_status(txn: &PgTxn, job_id: JobId, lock: bool) -> Result<JobStatus> {
    let sql = if lock {
        "SELECT status FROM jobs WHERE id = $1 FOR NO KEY UPDATE"
    } else {
        "SELECT status FROM jobs WHERE id = $1"
    };
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [job_id.into()],
        ))
        .await?
        .ok_or(Error::NotFound("job"))?;
    Ok(row.try_get("", "status")?)
}

/// Adds the attempt's outcomes to the job's counters, which locks the job's row until
/// commit. Returns the job's status as of that lock.
pub async fn add_to_job(
    txn: &PgTxn,
    job_id: JobId,
    out: &Counts,
    was_retrying: i32,
) -> Result<JobStatus> {
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE jobs SET succeeded_records = succeeded_records + $2, dead_lettered_records = dead_lettered_records + $3,
                    cancelled_records = cancelled_records + $4, retrying_records = retrying_records - $5 + $6,
                    updated_at = now()
             WHERE id = $1 RETURNING status",
            [
                job_id.into(),
                out.succeeded.into(),
                out.dead_lettered.into(),
                out.cancelled.into(),
                (was_retrying as i64).into(),
                out.retrying.into(),
            ],
        ))
        .await?
        .ok_or(Error::NotFound("job"))?;
    Ok(row.try_get("", "status")?)
}

/// Locks the batch if this worker still owns this attempt; returns its `retrying_records`.
pub async fn lock_owned_batch(
    txn: &PgTxn,
    batch: &ClaimedBatch,
    worker_id: &str,
) -> Result<Option<i32>> {
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT retrying_records FROM batches
             WHERE id = $1 AND status = 'running' AND worker_id = $2 AND attempts = $3 FOR UPDATE",
            [batch.id.into(), worker_id.into(), batch.attempts.into()],
        ))
        .await?;
    Ok(row
        .map(|r| r.try_get::<i32>("", "retrying_records"))
        .transpose()?)
}

/// A `text[]` parameter for values that may be absent. The driver cannot bind NULL
/// elements, so absence travels as an empty string and the statement turns it back into
/// NULL with `NULLIF(x, '')` (no error message is ever empty).
pub(crate) fn text_array(values: &[Option<String>]) -> Value {
    let items = values
        .iter()
        .map(|v| Value::String(Some(v.clone().unwrap_or_default())))
        .collect();
    Value::Array(ArrayType::String, Some(Box::new(items)))
}

/// The attempt's log rows, with one binary `COPY`: Postgres then stores them a page at
/// a time rather than a row at a time as an `INSERT … SELECT FROM unnest(…)` does, which
/// made the log the costliest write of a delivered record.
async fn copy_log_rows(txn: &PgTxn, batch: &ClaimedBatch, rows: &Rows) -> Result<()> {
    let mut data = BinaryRows::with_capacity(rows.seq.len() * 120);
    for i in 0..rows.seq.len() {
        data.row(8)
            .uuid(batch.job_id)
            .uuid(batch.tenant_id)
            .uuid(batch.id)
            .int8(rows.seq[i])
            .int4(rows.attempt[i])
            .text(rows.log_status[i].as_str())
            .opt_text(rows.error[i].as_deref())
            .int4(rows.duration[i]);
    }
    txn.copy_in_binary_all(
        "COPY record_logs (job_id, tenant_id, batch_id, record_seq, attempt, status, error, duration_ms)
         FROM STDIN (FORMAT binary)",
        data,
    )
    .await?;
    Ok(())
}

/// Writes the attempt's rows: the log, the records' statuses (unless the batch succeeded
/// as a whole: its records' success follows from the batch's), the dead letters.
pub async fn write_rows(
    txn: &PgTxn,
    batch: &ClaimedBatch,
    rows: &Rows,
    with_record_statuses: bool,
) -> Result<()> {
    if !rows.seq.is_empty() {
        copy_log_rows(txn, batch, rows).await?;
    }
    if with_record_statuses && !rows.rec_seq.is_empty() {
        // `r.seq = ANY ($2)` bounds the `job_records` side to this batch's records: with
        // statistics from before the job existed, the planner takes `job_id = $1` for one
        // row and may drive the join from it, which would otherwise scan every record of
        // the job once per element of `u`.
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE job_records r SET status = u.status, attempts = u.attempts, last_error = NULLIF(u.error, '')
             FROM unnest($2::bigint[], $3::text[], $4::int[], $5::text[]) AS u(seq, status, attempts, error)
             WHERE r.job_id = $1 AND r.seq = ANY ($2) AND r.seq = u.seq",
            [
                batch.job_id.into(),
                rows.rec_seq.clone().into(),
                rows.rec_status
                    .iter()
                    .map(|s| s.as_str().to_owned())
                    .collect::<Vec<_>>()
                    .into(),
                rows.rec_attempts.clone().into(),
                text_array(&rows.rec_error),
            ],
        ))
        .await?;
    }
    if !rows.dead_seq.is_empty() {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO dead_letters (id, job_id, tenant_id, batch_id, record_seq, error, attempts)
             SELECT gen_random_uuid(), $1, $2, $3, u.seq, u.error, u.attempts
             FROM unnest($4::bigint[], $5::text[], $6::int[]) AS u(seq, error, attempts)",
            [
                batch.job_id.into(),
                batch.tenant_id.into(),
                batch.id.into(),
                rows.dead_seq.clone().into(),
                rows.dead_error.clone().into(),
                rows.dead_attempts.clone().into(),
            ],
        ))
        .await?;
    }
    Ok(())
}

/// Whether an earlier attempt dead-lettered any of the batch's records (a first attempt
/// has no earlier one: no query).
pub async fn has_dead_letters(txn: &PgTxn, batch: &ClaimedBatch) -> Result<bool> {
    if batch.attempts <= 1 {
        return Ok(false);
    }
    use entity::job_record::{self, Column as R, RecordStatus};
    Ok(job_record::Entity::find()
        .filter(R::JobId.eq(batch.job_id))
        .filter(R::Seq.between(batch.first_record_seq, batch.last_record_seq))
        .filter(R::Status.eq(RecordStatus::DeadLettered))
        .exists(txn)
        .await?)
}

/// The batch's new state after an attempt.
pub async fn update_batch(
    txn: &PgTxn,
    batch_id: BatchId,
    status: BatchStatus,
    retry_at: Option<DateTime<Utc>>,
    retrying: i64,
    last_error: Option<String>,
) -> Result<()> {
    let terminal = !matches!(status, BatchStatus::RetryScheduled);
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE batches SET status = $2, next_attempt_at = $3, dispatched_at = CASE WHEN $3 IS NULL THEN dispatched_at ELSE now() END,
                retrying_records = $4, last_error = COALESCE($5, last_error), heartbeat_at = NULL, updated_at = now(),
                finished_at = CASE WHEN $6 THEN now() ELSE NULL END
         WHERE id = $1",
        [
            batch_id.into(),
            sea_orm::ActiveEnum::to_value(&status).into(),
            retry_at.into(),
            (retrying as i32).into(),
            last_error.into(),
            terminal.into(),
        ],
    ))
    .await?;
    Ok(())
}
