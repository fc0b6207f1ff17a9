//! The apalis handler: one message, one batch, in the design's four steps —
//! [`claim`](batches::claim), deliver, record (`Services::record_attempt`), dispatch next.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use apalis::prelude::{BoxDynError, Data};
use chrono::Utc;
use entity::BatchId;
use freight_core::{
    connectors::Stop,
    domain::{
        attempt::AttemptResult,
        delivery::{Outcome, RecordResult, RecordToDeliver},
        destination::Destination,
        retry_policy::RetryPolicy,
    },
    queue::DeliverBatch,
    secrets::OpenError,
    service::Recorded,
    store::batches::{self, PendingRecord},
};
use rand::Rng;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::engine::Engine;

/// Never fails for a record's sake: record outcomes go to the ledger. An `Err` means the
/// database was unreachable; the batch then stays claimed until its heartbeat expires
/// and the reconciler hands it to another attempt.
pub async fn deliver_batch(
    msg: DeliverBatch,
    engine: Data<Arc<Engine>>,
) -> Result<(), BoxDynError> {
    engine.run_batch(msg.batch_id).await.map_err(|e| {
        tracing::error!(batch.id = %msg.batch_id, error = %e, "batch could not be processed");
        Box::new(e) as BoxDynError
    })
}

impl Engine {
    /// Runs the batch, then, while nothing else waits in the queue, the job's next batch
    /// that its ledger queued, in the same slot (see [`Engine::next_in_slot`]).
    pub async fn run_batch(&self, batch_id: BatchId) -> freight_core::Result<()> {
        let slot = Instant::now();
        let stale_after = self.settings.worker.batch_stale_after.as_secs_f64();
        let mut next = Some(batch_id);
        while let Some(batch_id) = next.take() {
            let Some(batch) =
                batches::claim(&self.db, batch_id, &self.worker_id, stale_after).await?
            else {
                tracing::debug!(batch.id = %batch_id, "message for a batch that is not claimable: dropped");
                return Ok(());
            };
            let span = tracing::info_span!(
                "batch",
                tenant_id = %batch.tenant_id,
                job_id = %batch.job_id,
                batch_id = %batch.id,
                attempt = batch.attempts,
            );
            next = self.deliver_claimed(batch, slot).instrument(span).await?;
        }
        Ok(())
    }

    /// Which of the batches a ledger just queued this slot runs next, if any; the rest
    /// go to the queue. Pushing a job's next batch and fetching it back costs two Redis
    /// round trips and a wait for the fetch, during which the slot delivers nothing:
    /// about a tenth of a 5,000-record batch's time. It is
    /// skipped whenever anything else is waiting in the queue, so the FIFO order across
    /// tenants holds: a waiting batch gets this slot; and while draining, and once the
    /// slot has run for a fifth of `WORKER_BATCH_TIMEOUT` (apalis times the whole slot).
    /// A batch taken here has no message: if this worker dies before claiming it, the
    /// reconciler dispatches it again as overdue.
    async fn next_in_slot(&self, queued: &mut Vec<BatchId>, slot: Instant) -> Option<BatchId> {
        let budget = self.settings.worker.batch_timeout.mul_f64(0.2);
        if queued.is_empty() || self.draining.load(Ordering::Acquire) || slot.elapsed() > budget {
            return None;
        }
        match self.dispatcher.anything_due().await {
            Ok(false) => Some(queued.remove(0)),
            Ok(true) => None,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the queue's depth; pushing the next batch");
                None
            }
        }
    }

    /// Delivers and records a claimed batch; returns the batch this slot runs next.
    async fn deliver_claimed(
        &self,
        batch: batches::ClaimedBatch,
        slot: Instant,
    ) -> freight_core::Result<Option<BatchId>> {
        let started = Instant::now();
        // Registered at once, so a cancel announced from here on reaches this batch.
        let running = self.inflight.register(batch.id, batch.job_id);
        let deadline = self.stop_before_timeout(running.stop.cancel.clone(), slot);
        wait_until_due(&batch).await;
        let policy: RetryPolicy =
            serde_json::from_value(batch.retry_policy.clone()).unwrap_or_default();
        let records = batches::pending_records(&self.db, &batch).await?;
        let attempts = self.deliver(&batch, records, &running.stop).await;
        deadline.abort();
        let jitter_unit: f64 = rand::thread_rng().r#gen();
        let Some(recorded) = self
            .services
            .record_attempt(&batch, &self.worker_id, &attempts, &policy, jitter_unit)
            .await?
        else {
            tracing::warn!("another worker took this batch over; its outcome is theirs to record");
            return Ok(None);
        };
        report(&batch, &recorded, started);
        Ok(self.dispatch_after(&batch, recorded, slot).await)
    }

    /// Stops starting new writes well before apalis' own timeout would drop this handler
    /// (counted from the slot's start: apalis times the whole slot): what was delivered
    /// by then is recorded, the rest goes again at once.
    fn stop_before_timeout(&self, cancel: CancellationToken, slot: Instant) -> JoinHandle<()> {
        let after = self
            .settings
            .worker
            .batch_timeout
            .mul_f64(0.8)
            .saturating_sub(slot.elapsed());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            cancel.cancel();
        })
    }

    /// Delivers the records through the job's destination; each result is the record's
    /// next attempt. A destination that cannot be opened gives every record the same
    /// outcome without a write.
    async fn deliver(
        &self,
        batch: &batches::ClaimedBatch,
        records: Vec<PendingRecord>,
        stop: &Stop,
    ) -> Vec<AttemptResult> {
        // Each record's attempts before this one; the payloads move on to the connector.
        let before: Vec<(i64, i32)> = records.iter().map(|r| (r.seq, r.attempts)).collect();
        let results = match self.destination(batch) {
            Ok(destination) => {
                let to_deliver: Vec<RecordToDeliver> = records
                    .into_iter()
                    .map(|r| RecordToDeliver {
                        seq: r.seq,
                        payload: r.payload,
                    })
                    .collect();
                let connector = self.connectors.for_destination(&destination);
                connector.deliver(batch.job_id, &to_deliver, stop).await
            }
            Err(outcome) => before
                .iter()
                .map(|&(seq, _)| RecordResult {
                    seq,
                    outcome: outcome.clone(),
                    duration_ms: 0,
                })
                .collect(),
        };
        before
            .iter()
            .zip(results)
            .map(|(&(seq, attempts), res)| AttemptResult {
                seq,
                attempt: attempts + 1,
                outcome: res.outcome,
                duration_ms: res.duration_ms,
            })
            .collect()
    }

    /// The job's destination with its secrets opened, or the outcome every record gets
    /// when it cannot be: a key this worker lacks is the operator's to fix, so the batch
    /// waits (deferred); anything else is permanent.
    fn destination(&self, batch: &batches::ClaimedBatch) -> Result<Destination, Outcome> {
        let stored =
            serde_json::from_value::<Destination>(batch.destination.clone()).map_err(|e| {
                Outcome::Permanent(format!("the job's destination cannot be read: {e}"))
            })?;
        stored
            .opened(&self.settings.secrets, batch.tenant_id)
            .map_err(|e| match e {
                OpenError::UnknownKey { ref key_id } => {
                    tracing::error!(key_id = %key_id, error = %e, "cannot open the job's destination secrets; the batch waits for a worker holding the key");
                    metrics::counter!(freight_core::metrics::BATCHES_DEFERRED).increment(1);
                    Outcome::Deferred(e.to_string())
                }
                _ => {
                    tracing::error!(error = %e, "the job's destination secrets do not open");
                    Outcome::Permanent(e.to_string())
                }
            })
    }

    /// After the ledger committed: pushes the batches it queued (keeping one for this
    /// slot, see [`Engine::next_in_slot`]) and schedules the retry. A push lost here is
    /// redone by the reconciler.
    async fn dispatch_after(
        &self,
        batch: &batches::ClaimedBatch,
        recorded: Recorded,
        slot: Instant,
    ) -> Option<BatchId> {
        let mut to_dispatch = recorded.to_dispatch;
        let next = self.next_in_slot(&mut to_dispatch, slot).await;
        match self.dispatcher.push_now(&to_dispatch).await {
            // Fetch them now rather than at the next tick (see `Wakeup`).
            Ok(()) if !to_dispatch.is_empty() => self.wakeup.wake(),
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not dispatch the next batches; the reconciler will")
            }
        }
        if let Some(at) = recorded.retry_at
            && let Err(e) = self.dispatcher.push_at(batch.id, at).await
        {
            tracing::warn!(error = %e, "could not schedule the retry; the reconciler will");
        }
        next
    }
}

/// Delayed messages are scheduled to the second; waits out the rest (under 2 s).
async fn wait_until_due(batch: &batches::ClaimedBatch) {
    if let Some(at) = batch.next_attempt_at
        && let Ok(early) = (at - Utc::now()).to_std()
    {
        tokio::time::sleep(early.min(Duration::from_secs(2))).await;
    }
}

/// Logs the recorded attempt and counts it in the metrics.
fn report(batch: &batches::ClaimedBatch, recorded: &Recorded, started: Instant) {
    let counts = &recorded.counts;
    tracing::info!(
        status = ?recorded.batch_status,
        succeeded = counts.succeeded,
        dead_lettered = counts.dead_lettered,
        retrying = counts.retrying,
        cancelled = counts.cancelled,
        duration_ms = started.elapsed().as_millis() as u64,
        "batch attempt recorded"
    );
    freight_core::metrics::record_outcomes(
        batch.tenant_id,
        counts.succeeded,
        counts.retrying,
        counts.dead_lettered,
        counts.cancelled,
    );
    metrics::histogram!(freight_core::metrics::BATCH_DURATION)
        .record(started.elapsed().as_secs_f64());
    if recorded.retry_at.is_some() {
        metrics::counter!(freight_core::metrics::BATCH_RETRIES).increment(1);
    }
    if let Some(finished) = &recorded.job_finished {
        tracing::info!(status = ?finished.status, "job finished");
        finished.record_metrics();
    }
}
