//! The reconciler: makes Postgres' view of the work true in Redis again. It runs on one
//! worker at a time (a session-level advisory lock held on a dedicated connection) and,
//! every `interval`, re-dispatches batches whose worker died or whose message is overdue
//! (lost when Redis restarted or was flushed), refills job windows, admits queued jobs,
//! and finalises jobs left with nothing to do. Because of it, losing Redis or a worker
//! changes when records are delivered, never whether. The leader also stands in for
//! autovacuum on a server that runs without it (`crate::upkeep`).

use std::{sync::Arc, time::Duration};

use freight_core::store::{leadership::Leadership, reconcile};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::{engine::Engine, upkeep};

#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    pub interval: Duration,
    /// A running batch whose heartbeat is older than this is presumed dead.
    pub heartbeat_timeout: Duration,
    /// A queued or retry-scheduled batch unclaimed this long after it was due is re-dispatched.
    pub overdue_after: Duration,
    pub scan_limit: i64,
    /// How often the leader vacuums and analyses Freight's tables when autovacuum is off
    /// for them (`crate::upkeep`); `None`: never.
    pub table_upkeep_interval: Option<Duration>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileReport {
    pub stale_redispatched: usize,
    pub overdue_redispatched: usize,
    pub windows_refilled: usize,
    pub jobs_finalized: usize,
    /// Cancelling jobs whose abandoned batches were cancelled.
    pub abandoned_cancelled: usize,
    /// Finished tasks deleted from Redis.
    pub redis_swept: usize,
}

impl ReconcileReport {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

pub struct Reconciler {
    engine: Arc<Engine>,
    config: ReconcilerConfig,
}

impl Reconciler {
    pub fn new(engine: Arc<Engine>, config: ReconcilerConfig) -> Self {
        Self { engine, config }
    }

    /// One pass. Public so tests can drive it without waiting for the clock.
    pub async fn run_once(&self) -> freight_core::Result<ReconcileReport> {
        let db = &self.engine.db;
        let limit = self.config.scan_limit;
        let stale =
            reconcile::stale_running(db, self.config.heartbeat_timeout.as_secs_f64(), limit)
                .await?;
        let overdue =
            reconcile::overdue(db, self.config.overdue_after.as_secs_f64(), limit).await?;
        let services = &self.engine.services;
        let mut refill = services.refill_windows(limit).await?;
        let windows_refilled = refill.len();
        let (finished, jobs_finalized) = services.finalize_stragglers(limit).await?;
        refill.extend(finished);
        let stale_secs = self.config.heartbeat_timeout.as_secs_f64();
        let mut abandoned_cancelled = 0;
        for job_id in reconcile::cancelling_with_abandoned_batches(db, stale_secs, limit).await? {
            if let Some(dispatch) = services.cancel_abandoned(job_id, stale_secs).await? {
                abandoned_cancelled += 1;
                refill.extend(dispatch);
            }
        }
        for tenant in reconcile::tenants_with_queued_jobs(db, limit).await? {
            refill.extend(services.admitted(tenant).await?);
        }
        let dispatch: Vec<_> = stale
            .iter()
            .chain(&overdue)
            .chain(&refill)
            .copied()
            .collect();
        self.engine.dispatcher.push_now(&dispatch).await?;
        use freight_core::metrics::{
            RECONCILER_LAST_RUN, RECONCILER_REDISPATCHED, RECONCILER_RUNS,
        };
        metrics::counter!(RECONCILER_RUNS).increment(1);
        metrics::gauge!(RECONCILER_LAST_RUN).set(chrono::Utc::now().timestamp() as f64);
        for (reason, n) in [
            ("stale", stale.len()),
            ("overdue", overdue.len()),
            ("window", refill.len()),
        ] {
            if n > 0 {
                metrics::counter!(RECONCILER_REDISPATCHED, "reason" => reason).increment(n as u64);
            }
        }
        Ok(ReconcileReport {
            stale_redispatched: stale.len(),
            overdue_redispatched: overdue.len(),
            windows_refilled,
            jobs_finalized,
            abandoned_cancelled,
            redis_swept: self
                .engine
                .dispatcher
                .sweep_finished(self.config.scan_limit as usize * 10)
                .await?,
        })
    }

    /// Runs until `stop`: takes leadership when free, then reconciles every interval.
    pub async fn run(self, stop: CancellationToken) {
        let mut leader: Option<Leadership> = None;
        let mut upkeep = self.config.table_upkeep_interval.map(upkeep::Schedule::new);
        let url = self.engine.settings.database.url.expose_secret().to_owned();
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            if !self.hold_leadership(&mut leader, &url).await {
                continue;
            }
            match self.run_once().await {
                Ok(report) if !report.is_empty() => tracing::info!(?report, "reconciler pass"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reconciler pass failed; will retry"),
            }
            if let Some(upkeep) = upkeep.as_mut() {
                upkeep.tick(self.engine.db.get_postgres_connection_pool(), &url);
            }
        }
        // Dropping the schedule aborts a pass still running.
        drop(upkeep);
        if let Some(leadership) = leader {
            leadership.release().await;
        }
    }

    /// Keeps (or tries to take) the leader lock.
    async fn hold_leadership(&self, leader: &mut Option<Leadership>, url: &str) -> bool {
        if let Some(leadership) = leader.as_mut() {
            if leadership.is_held().await {
                return true;
            }
            tracing::warn!("reconciler lost its leader connection");
            *leader = None;
        }
        *leader = Leadership::try_take(url).await;
        if leader.is_some() {
            tracing::info!(worker.id = %self.engine.worker_id, "this worker now runs the reconciler");
        }
        leader.is_some()
    }
}
