//! The reconciler's writes: each in a transaction of its own, so one busy job never holds
//! up the pass. What to look at comes from `store::reconcile`'s scans.

use entity::{BatchId, JobId};
use sea_orm::TransactionTrait;

use super::Services;
use crate::{
    error::Result,
    store::{
        lifecycle::{self, CancelScope},
        reconcile, windows,
    },
};

impl Services {
    /// Refills the windows of running jobs with pending batches and room, skipping a job
    /// another transaction holds (it refills its window itself). Returns batches to push.
    pub async fn refill_windows(&self, limit: i64) -> Result<Vec<BatchId>> {
        let mut dispatch = Vec::new();
        for job_id in reconcile::jobs_with_room(&self.db, limit).await? {
            let txn = self.db.begin().await?;
            if reconcile::try_lock_job(&txn, job_id).await? {
                dispatch.extend(windows::fill_window(&txn, job_id).await?);
            }
            txn.commit().await?;
        }
        Ok(dispatch)
    }

    /// Finalises running or cancelling jobs left with no unfinished batch, admitting the
    /// tenant's next jobs. Returns batches to push and how many jobs finished.
    pub async fn finalize_stragglers(&self, limit: i64) -> Result<(Vec<BatchId>, usize)> {
        let mut dispatch = Vec::new();
        let mut finalized = 0;
        for (job_id, tenant_id) in reconcile::stragglers(&self.db, limit).await? {
            let txn = self.db.begin().await?;
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

    /// Cancels the abandoned batches of a cancelling job (their worker died mid-batch) and
    /// finalises it: without this, the job would stay `cancelling` for ever. Returns
    /// batches to push for the tenant's next jobs, or `None` if the job was busy or not
    /// cancelling.
    pub async fn cancel_abandoned(
        &self,
        job_id: JobId,
        stale_after_secs: f64,
    ) -> Result<Option<Vec<BatchId>>> {
        let txn = self.db.begin().await?;
        let Some(tenant_id) = lifecycle::lock_cancelling(&txn, job_id).await? else {
            return Ok(None);
        };
        let scope = CancelScope::Abandoned { stale_after_secs };
        let (cancelled, was_retrying) =
            lifecycle::cancel_batches(&txn, job_id, tenant_id, scope).await?;
        lifecycle::add_cancelled(&txn, job_id, cancelled, was_retrying).await?;
        let Some(done) = lifecycle::finalize(&txn, job_id).await? else {
            txn.commit().await?;
            return Ok(None);
        };
        let dispatch = windows::admit(&txn, tenant_id).await?;
        txn.commit().await?;
        done.record_metrics();
        Ok(Some(dispatch))
    }
}
