//! Re-running what failed for good: a job's dead letters, one failed batch, or chosen
//! dead letters. Each re-opens exactly those records as new attempts.

use entity::{BatchId, JobId, TenantId, batch::BatchStatus, job::JobStatus};
use sea_orm::TransactionTrait;
use uuid::Uuid;

use super::Services;
use crate::{
    domain::audit::{self, Actor, NewEvent},
    error::{Error, Result},
    store::{
        self, batches, jobs,
        lifecycle::{self, RequeueScope},
        tenants, windows,
    },
};

/// What to re-run.
#[derive(Debug, Clone)]
pub enum RetryTarget {
    /// `POST /jobs/{id}/retry`: the job's dead letters. A cancelled job cannot be retried.
    Job(JobId),
    /// `POST /batches/{id}/retry`: one failed batch's dead letters.
    Batch(BatchId),
    /// `POST /dead-letters/requeue` by job.
    DeadLettersOfJob(JobId),
    /// `POST /dead-letters/requeue` by id: other tenants' ids are neither re-run nor counted.
    DeadLetters(Vec<Uuid>),
}

/// What a retry did.
#[derive(Debug, Default)]
pub struct Requeued {
    /// Dead letters re-opened.
    pub requeued: i64,
    /// The jobs they belong to (whose cached views are stale now).
    pub jobs: Vec<JobId>,
}

impl Services {
    /// Re-opens dead-lettered records as new attempts (their attempt count starts again):
    /// the dead letter keeps its row with `requeued_at` set, the record becomes pending,
    /// its batch pending, and a finished job is queued again. Only the tenant's dead
    /// letters, in failed batches of jobs that are not cancelled, are re-opened. Refused
    /// as [`Error::OverQuota`] when they would take the tenant past its
    /// `max_pending_records`. The request's audit event, with the counts, is written in
    /// the same transaction when anything was re-opened.
    pub async fn retry(
        &self,
        tenant_id: TenantId,
        target: RetryTarget,
        actor: &Actor,
    ) -> Result<Requeued> {
        let (scope, field, event) = self.check_target(tenant_id, target, actor).await?;
        let batch_retry = matches!(scope, RequeueScope::Batch(_));
        let done = self.requeue(tenant_id, scope, field, event).await?;
        if batch_retry && done.requeued == 0 {
            return Err(Error::Conflict(
                "the batch's job is cancelled; nothing to retry".into(),
            ));
        }
        Ok(done)
    }

    /// The target's scope, the field a quota refusal names, and its audit event; a target
    /// that does not exist for the tenant is not found, one that cannot be retried a conflict.
    async fn check_target(
        &self,
        tenant_id: TenantId,
        target: RetryTarget,
        actor: &Actor,
    ) -> Result<(RequeueScope, &'static str, NewEvent)> {
        let event = |action, target_type, id| {
            NewEvent::new(
                tenant_id,
                actor,
                action,
                target_type,
                id,
                serde_json::json!({}),
            )
        };
        Ok(match target {
            RetryTarget::Job(id) => {
                let job = jobs::get(&self.db, tenant_id, id).await?;
                if matches!(job.status, JobStatus::Cancelling | JobStatus::Cancelled) {
                    return Err(Error::Conflict("a cancelled job cannot be retried".into()));
                }
                let event = event(audit::JOB_RETRIED, "job", Some(id.into()));
                (RequeueScope::Job(id), "job_id", event)
            }
            RetryTarget::Batch(id) => {
                let batch = batches::get(&self.db, tenant_id, id).await?;
                if batch.status != BatchStatus::Failed {
                    return Err(Error::Conflict("only a failed batch can be retried".into()));
                }
                let event = event(audit::BATCH_RETRIED, "batch", Some(id.into()));
                (RequeueScope::Batch(id), "batch_id", event)
            }
            RetryTarget::DeadLettersOfJob(id) => {
                jobs::get(&self.db, tenant_id, id).await?;
                let event = event(audit::DEAD_LETTERS_REQUEUED, "job", Some(id.into()));
                (RequeueScope::Job(id), "job_id", event)
            }
            RetryTarget::DeadLetters(ids) => {
                let mut event = event(audit::DEAD_LETTERS_REQUEUED, "dead_letters", None);
                event.details = serde_json::json!({"ids_requested": ids.len()});
                (RequeueScope::Ids(ids), "ids", event)
            }
        })
    }

    /// One transaction: locks the jobs first, re-opens the dead letters, refills the jobs'
    /// windows, checks the tenant's pending limit, admits queued jobs, writes the event.
    async fn requeue(
        &self,
        tenant_id: TenantId,
        scope: RequeueScope,
        field: &str,
        event: NewEvent,
    ) -> Result<Requeued> {
        let txn = self.db.begin().await?;
        let locked = lifecycle::lock_for_requeue(&txn, tenant_id, &scope).await?;
        if locked.is_empty() {
            return Ok(Requeued::default());
        }
        let mut done = Requeued::default();
        let mut to_dispatch = Vec::new();
        for (job_id, n) in lifecycle::reopen_dead_letters(&txn, tenant_id, &scope, &locked).await? {
            done.requeued += n;
            done.jobs.push(job_id);
            lifecycle::reopen_job(&txn, job_id, n).await?;
            to_dispatch.extend(windows::fill_window(&txn, job_id).await?);
        }
        if done.requeued > 0 {
            // Records re-opened are pending again: they count against the tenant's limit
            // like new ones (the transaction rolls back if they would take it over).
            tenants::enforce_pending_limit(&txn, tenant_id, field, 0).await?;
            to_dispatch.extend(windows::admit(&txn, tenant_id).await?);
            let mut details = match event.details {
                serde_json::Value::Object(map) => map,
                _ => Default::default(),
            };
            details.insert("requeued".into(), done.requeued.into());
            details.insert("jobs".into(), serde_json::json!(done.jobs));
            let event = NewEvent {
                details: details.into(),
                ..event
            };
            store::audit::record(&txn, event).await?;
        }
        txn.commit().await?;
        self.dispatch(&to_dispatch).await;
        Ok(done)
    }
}
