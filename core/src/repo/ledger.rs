//! The ledger: one transaction per batch attempt records every record's outcome, the
//! records' current status, dead letters, the batch's new state and the job's counters,
//! then refills the job's window and finalises the job when nothing is left.

use chrono::{DateTime, Utc};
use entity::batch::BatchStatus;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, Statement, Value, sea_query::ArrayType,
};
use uuid::Uuid;

use super::{batches::ClaimedBatch, lifecycle, windows};
use crate::{
    destinations::Outcome,
    domain::retry_policy::RetryPolicy,
    error::{Error, Result},
    pg_copy::BinaryRows,
    pg_txn::PgTxn,
};

/// One record's result in this attempt.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub seq: i64,
    /// The record's attempt number in this delivery (its earlier attempts + 1).
    pub attempt: i32,
    pub outcome: Outcome,
    pub duration_ms: i32,
}

/// What the worker must do after the ledger commits.
#[derive(Debug, Default)]
pub struct Recorded {
    pub batch_status: Option<BatchStatus>,
    /// When set, push a delayed message for this batch at this time.
    pub retry_at: Option<DateTime<Utc>>,
    /// Batches newly queued (this job's window, or jobs admitted): push them now.
    pub to_dispatch: Vec<Uuid>,
    pub job_finished: Option<lifecycle::Finalized>,
    pub succeeded: i64,
    pub dead_lettered: i64,
    pub cancelled: i64,
    pub retrying: i64,
}

/// The log, record and dead-letter rows one attempt produces.
#[derive(Default)]
struct Rows {
    seq: Vec<i64>,
    attempt: Vec<i32>,
    log_status: Vec<&'static str>,
    error: Vec<Option<String>>,
    duration: Vec<i32>,
    rec_seq: Vec<i64>,
    rec_status: Vec<&'static str>,
    rec_attempts: Vec<i32>,
    rec_error: Vec<Option<String>>,
    dead_seq: Vec<i64>,
    dead_error: Vec<String>,
    dead_attempts: Vec<i32>,
}

impl Rows {
    fn log(&mut self, r: &AttemptResult, status: &'static str, error: Option<String>) {
        self.seq.push(r.seq);
        self.attempt.push(r.attempt);
        self.log_status.push(status);
        self.error.push(error);
        self.duration.push(r.duration_ms);
    }

    /// A final failure: the log row, the record's status and its dead letter.
    fn dead_letter(&mut self, r: &AttemptResult, error: String) {
        self.log(r, "dead_lettered", Some(error.clone()));
        self.record(r.seq, "dead_lettered", r.attempt, Some(error.clone()));
        self.dead_seq.push(r.seq);
        self.dead_error.push(error);
        self.dead_attempts.push(r.attempt);
    }

    fn record(&mut self, seq: i64, status: &'static str, attempts: i32, error: Option<String>) {
        self.rec_seq.push(seq);
        self.rec_status.push(status);
        self.rec_attempts.push(attempts);
        self.rec_error.push(error);
    }
}

/// An outcome's error as the ledger stores it (log, record, dead letter and batch alike):
/// Postgres text cannot hold NUL, which a destination's answer might.
fn stored(error: &str) -> String {
    error.replace('\0', "")
}

/// Records an attempt's results. Returns `None` when this worker no longer owns the batch
/// (it was presumed dead and another worker took over): nothing is written, and the
/// other worker's attempt will record the outcome.
///
/// The job's row is the one lock every batch of a job shares, so it is taken last: the
/// log rows, record statuses and dead letters are written first, in parallel with the
/// job's other batches, and the job row is locked only to add to its counters, refill
/// its window and finalise it. The job's status is therefore read before it is locked.
/// It can only move from `running` to `cancelling` meanwhile (nothing else changes the
/// status of a job with a running batch); if it did, the attempt is recorded again with
/// the job locked from the start, so a transient failure of a cancelled job is never
/// scheduled for a retry.
pub async fn record_attempt(
    db: &DatabaseConnection,
    batch: &ClaimedBatch,
    worker_id: &str,
    results: &[AttemptResult],
    policy: &RetryPolicy,
    jitter_unit: f64,
) -> Result<Option<Recorded>> {
    let attempt = Attempt {
        batch,
        worker_id,
        results,
        policy,
        jitter_unit,
    };
    match attempt.record(db, JobLock::Late).await? {
        Some(Written::Done(recorded)) => Ok(Some(recorded)),
        None => Ok(None),
        Some(Written::StatusChanged) => match attempt.record(db, JobLock::First).await? {
            Some(Written::Done(recorded)) => Ok(Some(recorded)),
            None => Ok(None),
            Some(Written::StatusChanged) => Err(Error::Internal(
                "the job's status changed while its row was locked".into(),
            )),
        },
    }
}

/// When [`Attempt::record`] takes the job's row lock.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JobLock {
    /// Read the status unlocked, lock the row for the counters (the fast path).
    Late,
    /// Lock the row before reading the status (after a status change was seen).
    First,
}

enum Written {
    Done(Recorded),
    /// The job's status changed between the unlocked read and the lock: rolled back.
    StatusChanged,
}

struct Attempt<'a> {
    batch: &'a ClaimedBatch,
    worker_id: &'a str,
    results: &'a [AttemptResult],
    policy: &'a RetryPolicy,
    jitter_unit: f64,
}

impl Attempt<'_> {
    async fn record(&self, db: &DatabaseConnection, lock: JobLock) -> Result<Option<Written>> {
        let batch = self.batch;
        let txn = PgTxn::begin(db).await?;
        let Some(was_retrying) = lock_owned_batch(&txn, batch, self.worker_id).await? else {
            return Ok(None);
        };
        let job_status = job_status(&txn, batch.job_id, lock == JobLock::First).await?;
        let (rows, mut out, status, retry_at, last_error) =
            self.classify(&txn, job_status != "running").await?;
        // A batch that succeeded as a whole needs no per-record status: its records'
        // success follows from the batch's (see `job_records.status` in the schema).
        write_rows(&txn, batch, &rows, status != BatchStatus::Succeeded).await?;
        update_batch(&txn, batch.id, status, retry_at, out.retrying, last_error).await?;
        let locked_status = add_to_job(&txn, batch.job_id, &out, was_retrying).await?;
        if locked_status != job_status {
            txn.rollback().await?;
            return Ok(Some(Written::StatusChanged));
        }
        out.to_dispatch = windows::fill_window(&txn, batch.job_id).await?;
        if let Some(finished) = lifecycle::finalize(&txn, batch.job_id).await? {
            out.job_finished = Some(finished);
            out.to_dispatch
                .extend(windows::admit(&txn, batch.tenant_id).await?);
        }
        txn.commit().await?;
        out.batch_status = Some(status);
        out.retry_at = retry_at;
        Ok(Some(Written::Done(out)))
    }

    /// Sorts the results into rows and counts, and picks the batch's next state.
    #[allow(clippy::type_complexity)]
    async fn classify(
        &self,
        txn: &PgTxn,
        cancelling: bool,
    ) -> Result<(
        Rows,
        Recorded,
        BatchStatus,
        Option<DateTime<Utc>>,
        Option<String>,
    )> {
        let (batch, policy) = (self.batch, self.policy);
        let mut rows = Rows::default();
        let mut out = Recorded::default();
        let mut retry_attempt = 0;
        let mut requeue_now = false;
        let mut deferred = false;
        for r in self.results {
            match &r.outcome {
                Outcome::Succeeded => {
                    rows.log(r, "succeeded", None);
                    rows.record(r.seq, "succeeded", r.attempt, None);
                    out.succeeded += 1;
                }
                Outcome::Permanent(e) => {
                    rows.dead_letter(r, stored(e));
                    out.dead_lettered += 1;
                }
                Outcome::Transient(e) if cancelling => {
                    // Failed, and the job was cancelled meanwhile: no retry, the record
                    // ends cancelled (its terminal row follows the failed attempt's row).
                    rows.log(r, "failed", Some(stored(e)));
                    rows.log(r, "cancelled", Some("job cancelled before a retry".into()));
                    rows.record(r.seq, "cancelled", r.attempt, Some(stored(e)));
                    out.cancelled += 1;
                }
                Outcome::Transient(e) if r.attempt >= policy.max_attempts as i32 => {
                    rows.dead_letter(
                        r,
                        format!("gave up after {} attempts: {}", r.attempt, stored(e)),
                    );
                    out.dead_lettered += 1;
                }
                Outcome::Transient(e) => {
                    rows.log(r, "failed", Some(stored(e)));
                    rows.record(r.seq, "pending", r.attempt, Some(stored(e)));
                    out.retrying += 1;
                    retry_attempt = retry_attempt.max(r.attempt);
                }
                Outcome::NotAttempted | Outcome::Deferred(_) if cancelling => {
                    // Never tried: logged under the attempts it had before this one.
                    let before = AttemptResult {
                        attempt: r.attempt - 1,
                        ..r.clone()
                    };
                    rows.log(
                        &before,
                        "cancelled",
                        Some("job cancelled before this record was delivered".into()),
                    );
                    rows.record(r.seq, "cancelled", before.attempt, None);
                    out.cancelled += 1;
                }
                Outcome::NotAttempted => {
                    // Stopped without a cancel (the worker is shutting down): not an
                    // attempt. The record stays pending and the batch goes again at once.
                    out.retrying += 1;
                    requeue_now = true;
                }
                Outcome::Deferred(e) => {
                    // Not an attempt either (no log row, attempts unchanged), so no
                    // number of these dead-letters a record; the error shows why it waits.
                    rows.record(r.seq, "pending", r.attempt - 1, Some(stored(e)));
                    out.retrying += 1;
                    deferred = true;
                }
            }
        }
        let last_error = self.results.iter().rev().find_map(|r| match &r.outcome {
            Outcome::Transient(e) | Outcome::Permanent(e) | Outcome::Deferred(e) => Some(stored(e)),
            _ => None,
        });
        let (status, retry_at) = if out.retrying > 0 {
            let delay = if deferred {
                // Backs off on the batch's own claims, which keep counting while it waits.
                policy.delay_for(batch.attempts.clamp(1, 64) as u32, self.jitter_unit)
            } else if requeue_now && retry_attempt == 0 {
                std::time::Duration::ZERO
            } else {
                policy.delay_for(retry_attempt.max(1) as u32, self.jitter_unit)
            };
            let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            (BatchStatus::RetryScheduled, Some(at))
        } else if out.cancelled > 0 {
            (BatchStatus::Cancelled, None)
        } else if out.dead_lettered > 0 || has_dead_letters(txn, batch).await? {
            (BatchStatus::Failed, None)
        } else {
            (BatchStatus::Succeeded, None)
        };
        Ok((rows, out, status, retry_at, last_error))
    }
}

/// The job's status; with `lock`, after taking its row lock.
async fn job_status(txn: &PgTxn, job_id: Uuid, lock: bool) -> Result<String> {
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
async fn add_to_job(
    txn: &PgTxn,
    job_id: Uuid,
    out: &Recorded,
    was_retrying: i32,
) -> Result<String> {
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
async fn lock_owned_batch(
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
/// made the log the costliest write of a delivered record (docs/performance.md, 13).
async fn copy_log_rows(txn: &PgTxn, batch: &ClaimedBatch, rows: &Rows) -> Result<()> {
    let mut data = BinaryRows::with_capacity(rows.seq.len() * 120);
    for i in 0..rows.seq.len() {
        data.row(8)
            .uuid(batch.job_id)
            .uuid(batch.tenant_id)
            .uuid(batch.id)
            .int8(rows.seq[i])
            .int4(rows.attempt[i])
            .text(rows.log_status[i])
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

async fn write_rows(
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
                    .map(|s| s.to_string())
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
async fn has_dead_letters(txn: &PgTxn, batch: &ClaimedBatch) -> Result<bool> {
    if batch.attempts <= 1 {
        return Ok(false);
    }
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT EXISTS (SELECT 1 FROM job_records WHERE job_id = $1 AND seq BETWEEN $2 AND $3
                            AND status = 'dead_lettered') AS any",
            [
                batch.job_id.into(),
                batch.first_record_seq.into(),
                batch.last_record_seq.into(),
            ],
        ))
        .await?;
    Ok(row
        .map(|r| r.try_get::<bool>("", "any"))
        .transpose()?
        .unwrap_or(false))
}

async fn update_batch(
    txn: &PgTxn,
    batch_id: Uuid,
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
