//! Recording a batch attempt: the worker's one write per batch.

use chrono::{DateTime, Utc};
use entity::{BatchId, batch::BatchStatus, job::JobStatus};

use super::Services;
use crate::{
    domain::{
        attempt::{Attempt, AttemptResult, Counts, Next},
        retry_policy::RetryPolicy,
    },
    error::{Error, Result},
    store::{
        batches::ClaimedBatch,
        ledger,
        lifecycle::{self, Finalized},
        pg_txn::PgTxn,
        windows,
    },
};

/// What the worker must do after an attempt is recorded.
#[derive(Debug)]
pub struct Recorded {
    pub batch_status: BatchStatus,
    /// When set, push a delayed message for this batch at this time.
    pub retry_at: Option<DateTime<Utc>>,
    /// Batches newly queued (this job's window, or jobs admitted): push them now.
    pub to_dispatch: Vec<BatchId>,
    pub job_finished: Option<Finalized>,
    pub counts: Counts,
}

/// When the ledger takes the job's row lock.
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

impl Services {
    /// Records an attempt's results in one transaction: every record's outcome, the
    /// records' status, dead letters, the batch's new state, the job's counters; then
    /// refills the job's window and finalises the job when nothing is left. Returns
    /// `None` when this worker no longer owns the batch (it was presumed dead and another
    /// worker took over): nothing is written, and the other worker's attempt will record
    /// the outcome.
    ///
    /// The job's row is the one lock every batch of a job shares, so it is taken last:
    /// the rows are written first, in parallel with the job's other batches, and the
    /// job's row is locked only to add to its counters. The job's status is therefore
    /// read before it is locked. It can only move from `running` to `cancelling`
    /// meanwhile (nothing else changes the status of a job with a running batch); if it
    /// did, the attempt is recorded again with the job locked from the start, so a
    /// transient failure of a cancelled job is never scheduled for a retry.
    pub async fn record_attempt(
        &self,
        batch: &ClaimedBatch,
        worker_id: &str,
        results: &[AttemptResult],
        policy: &RetryPolicy,
        jitter_unit: f64,
    ) -> Result<Option<Recorded>> {
        let attempt = Attempt {
            results,
            policy,
            batch_attempts: batch.attempts,
            jitter_unit,
        };
        for lock in [JobLock::Late, JobLock::First] {
            match self.write_attempt(batch, worker_id, &attempt, lock).await? {
                Some(Written::Done(recorded)) => return Ok(Some(recorded)),
                None => return Ok(None),
                Some(Written::StatusChanged) => {}
            }
        }
        Err(Error::internal(
            "the job's status changed while its row was locked",
        ))
    }

    async fn write_attempt(
        &self,
        batch: &ClaimedBatch,
        worker_id: &str,
        attempt: &Attempt<'_>,
        lock: JobLock,
    ) -> Result<Option<Written>> {
        let txn = PgTxn::begin(&self.db).await?;
        let Some(was_retrying) = ledger::lock_owned_batch(&txn, batch, worker_id).await? else {
            return Ok(None);
        };
        let job_status = ledger::job_status(&txn, batch.job_id, lock == JobLock::First).await?;
        let classified = attempt.classify(job_status != JobStatus::Running, Utc::now());
        let status = match classified.next {
            Next::Succeeded if ledger::has_dead_letters(&txn, batch).await? => BatchStatus::Failed,
            next => next.status(),
        };
        let retry_at = classified.next.retry_at();
        // A batch that succeeded as a whole needs no per-record status.
        let statuses = status != BatchStatus::Succeeded;
        ledger::write_rows(&txn, batch, &classified.rows, statuses).await?;
        let retrying = classified.counts.retrying;
        ledger::update_batch(
            &txn,
            batch.id,
            status,
            retry_at,
            retrying,
            classified.last_error,
        )
        .await?;
        let locked_status =
            ledger::add_to_job(&txn, batch.job_id, &classified.counts, was_retrying).await?;
        if locked_status != job_status {
            txn.rollback().await?;
            return Ok(Some(Written::StatusChanged));
        }
        let mut to_dispatch = windows::fill_window(&txn, batch.job_id).await?;
        let job_finished = lifecycle::finalize(&txn, batch.job_id).await?;
        if job_finished.is_some() {
            to_dispatch.extend(windows::admit(&txn, batch.tenant_id).await?);
        }
        txn.commit().await?;
        Ok(Some(Written::Done(Recorded {
            batch_status: status,
            retry_at,
            to_dispatch,
            job_finished,
            counts: classified.counts,
        })))
    }
}
