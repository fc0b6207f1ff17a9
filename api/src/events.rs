//! Live job progress for Server-Sent Events, cheap with many listeners.
//!
//! One poller per api replica watches every job that has listeners: every 250 ms it reads
//! those jobs in one query and, for each whose `updated_at` moved, builds the job view
//! once and publishes it on the job's `watch` channel. Listeners only ever read their
//! channel, so a thousand listeners cost what one does, and a busy job's changes are
//! coalesced to at most four events a second. An event's id is the job's `updated_at` in
//! microseconds: it only grows, so `Last-Event-ID` says exactly what a client has seen.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use entity::{JobId, job};
use freight_core::store::{batches, jobs};
use sea_orm::DatabaseConnection;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::views::JobView;

pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// One published state of a job.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The event id: `updated_at` in microseconds.
    pub version: i64,
    pub view: JobView,
}

impl Snapshot {
    pub fn of(job: job::Model, counts: batches::BatchCounts) -> Self {
        let version = job.updated_at.timestamp_micros();
        Self {
            version,
            view: JobView::new(job, counts),
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.view.status.is_terminal()
    }
}

type Channel = watch::Sender<Option<Arc<Snapshot>>>;

#[derive(Default)]
pub struct JobWatch {
    jobs: Mutex<HashMap<JobId, Channel>>,
}

impl JobWatch {
    /// Listens to a job's changes (the job's tenant has been checked by the caller).
    pub fn subscribe(&self, job_id: JobId) -> watch::Receiver<Option<Arc<Snapshot>>> {
        let mut jobs = self.jobs.lock().expect("not poisoned");
        jobs.entry(job_id)
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    /// Runs until `stop`: one query per tick for all watched jobs.
    pub async fn run(self: Arc<Self>, db: DatabaseConnection, stop: CancellationToken) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.poll(&db).await {
                tracing::warn!(error = %e, "job progress poll failed; will retry");
            }
        }
    }

    async fn poll(&self, db: &DatabaseConnection) -> Result<(), freight_core::Error> {
        let watched: Vec<(JobId, Option<i64>)> = {
            let mut jobs = self.jobs.lock().expect("not poisoned");
            // A job nobody listens to any more is dropped from the watch.
            jobs.retain(|_, tx| tx.receiver_count() > 0);
            jobs.iter()
                .map(|(id, tx)| (*id, tx.borrow().as_ref().map(|s| s.version)))
                .collect()
        };
        if watched.is_empty() {
            return Ok(());
        }
        let ids: Vec<JobId> = watched.iter().map(|w| w.0).collect();
        let rows = jobs::get_many(db, &ids).await?;
        let seen: HashMap<JobId, Option<i64>> = watched.into_iter().collect();
        let changed: Vec<job::Model> = rows
            .into_iter()
            .filter(|j| seen.get(&j.id).copied().flatten() != Some(j.updated_at.timestamp_micros()))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let changed_ids: Vec<JobId> = changed.iter().map(|j| j.id).collect();
        let mut counts = batches::counts(db, &changed_ids).await?;
        let jobs = self.jobs.lock().expect("not poisoned");
        for job in changed {
            let c = counts.remove(&job.id).unwrap_or_default();
            if let Some(tx) = jobs.get(&job.id) {
                tx.send_replace(Some(Arc::new(Snapshot::of(job, c))));
            }
        }
        Ok(())
    }
}
