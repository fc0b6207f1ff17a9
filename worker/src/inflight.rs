//! The batches this worker is delivering right now, each with the token that stops it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Default)]
pub struct Inflight {
    batches: Mutex<HashMap<Uuid, (Uuid, CancellationToken)>>,
}

impl Inflight {
    /// Registers a batch of `job_id`. The guard's token is cancelled when the job is; the
    /// batch is unregistered when the guard drops — also when the handler panics or times
    /// out, so its heartbeat stops and another worker can take it over.
    pub fn register(self: &Arc<Self>, batch_id: Uuid, job_id: Uuid) -> InflightGuard {
        let token = CancellationToken::new();
        self.batches
            .lock()
            .expect("not poisoned")
            .insert(batch_id, (job_id, token.clone()));
        InflightGuard {
            registry: self.clone(),
            batch_id,
            token,
        }
    }

    pub fn batch_ids(&self) -> Vec<Uuid> {
        self.batches
            .lock()
            .expect("not poisoned")
            .keys()
            .copied()
            .collect()
    }

    /// Stops every running batch of a job (a cancel was announced).
    pub fn cancel_job(&self, job_id: Uuid) -> usize {
        let map = self.batches.lock().expect("not poisoned");
        let mut n = 0;
        for (job, token) in map.values() {
            if *job == job_id {
                token.cancel();
                n += 1;
            }
        }
        n
    }

    /// Stops the batches of `checked` that are not in `keep` (their job stopped running,
    /// or another worker took them over). Batches registered after `checked` was taken
    /// are left alone: the heartbeat did not ask about them.
    pub fn stop_all_but(&self, checked: &[Uuid], keep: &[Uuid]) {
        let map = self.batches.lock().expect("not poisoned");
        for batch_id in checked.iter().filter(|id| !keep.contains(id)) {
            if let Some((_, token)) = map.get(batch_id) {
                token.cancel();
            }
        }
    }
}

/// A registered running batch; unregisters it on drop.
pub struct InflightGuard {
    registry: Arc<Inflight>,
    batch_id: Uuid,
    pub token: CancellationToken,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.registry.batches.lock() {
            map.remove(&self.batch_id);
        }
    }
}
