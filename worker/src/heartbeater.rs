//! Keeps this worker's row and its running batches alive, and stops batches whose job
//! was cancelled (a fallback for a missed cancel notification), that another worker has
//! taken over, or that hold more of the fleet than their job's share now that other
//! tenants' work is waiting (they yield: no new write, and writes still in flight after
//! `WORKER_PREEMPT_GRACE` are given up as transient failures).

use std::sync::Arc;

use freight_core::store::{batches, workers};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;

pub async fn run(engine: Arc<Engine>, stop: CancellationToken) {
    let w = &engine.settings.worker;
    let mut tick = tokio::time::interval(w.batch_heartbeat_interval.min(w.heartbeat_interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_worker_beat = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let running = engine.inflight.batch_ids();
        match batches::heartbeat(&engine.db, &engine.worker_id, &running).await {
            Ok(beat) => {
                if !beat.yield_.is_empty() {
                    tracing::info!(
                        batches = beat.yield_.len(),
                        "batches over their job's share yield their slots"
                    );
                }
                engine
                    .inflight
                    .apply(&running, &beat.keep, &beat.yield_, w.preempt_grace)
            }
            Err(e) => tracing::warn!(error = %e, "batch heartbeat failed; will retry"),
        }
        if last_worker_beat.elapsed() >= engine.settings.worker.heartbeat_interval {
            last_worker_beat = std::time::Instant::now();
            if let Err(e) = workers::heartbeat(&engine.db, &engine.worker_id).await {
                tracing::warn!(error = %e, "worker heartbeat failed; will retry");
            }
        }
    }
}
