//! The batches this worker is delivering right now, each with what stops it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use entity::{BatchId, JobId};
use freight_core::connectors::Stop;

#[derive(Default)]
pub struct Inflight {
    batches: Mutex<HashMap<BatchId, (JobId, Stop)>>,
}

impl Inflight {
    /// Registers a batch of `job_id`. The guard's [`Stop`] fires when the job is cancelled
    /// or the batch must yield; the batch is unregistered when the guard drops — also when
    /// the handler panics or times out, so its heartbeat stops and another worker can take
    /// it over.
    pub fn register(self: &Arc<Self>, batch_id: BatchId, job_id: JobId) -> InflightGuard {
        let stop = Stop::default();
        self.batches
            .lock()
            .expect("not poisoned")
            .insert(batch_id, (job_id, stop.clone()));
        InflightGuard {
            registry: self.clone(),
            batch_id,
            stop,
        }
    }

    pub fn batch_ids(&self) -> Vec<BatchId> {
        self.batches
            .lock()
            .expect("not poisoned")
            .keys()
            .copied()
            .collect()
    }

    /// Stops every running batch of a job (a cancel was announced).
    pub fn cancel_job(&self, job_id: JobId) -> usize {
        let map = self.batches.lock().expect("not poisoned");
        let mut n = 0;
        for (job, stop) in map.values() {
            if *job == job_id {
                stop.cancel.cancel();
                n += 1;
            }
        }
        n
    }

    /// Acts on a heartbeat's answer about the batches of `checked`: those in `yield_` start
    /// no new write and, `grace` later, give up on the writes still in flight; those in
    /// neither list (their job stopped running, or another worker took them over) start
    /// no new write. Batches registered after `checked` was taken are left alone: the
    /// heartbeat did not ask about them.
    pub fn apply(
        &self,
        checked: &[BatchId],
        keep: &[BatchId],
        yield_: &[BatchId],
        grace: Duration,
    ) {
        let map = self.batches.lock().expect("not poisoned");
        for batch_id in checked.iter().filter(|id| !keep.contains(id)) {
            let Some((_, stop)) = map.get(batch_id) else {
                continue;
            };
            stop.cancel.cancel();
            if yield_.contains(batch_id) && !stop.interrupt.is_cancelled() {
                let interrupt = stop.interrupt.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    interrupt.cancel();
                });
            }
        }
    }
}

/// A registered running batch; unregisters it on drop.
pub struct InflightGuard {
    registry: Arc<Inflight>,
    batch_id: BatchId,
    pub stop: Stop,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.registry.batches.lock() {
            map.remove(&self.batch_id);
        }
    }
}
