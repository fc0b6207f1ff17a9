//! Freight's worker process.
//!
//! Today it connects to Postgres and Redis, checks (or migrates) the schema, registers a
//! row in `workers` under an id unique to this process start, keeps its heartbeat fresh,
//! and on SIGTERM marks itself stopped and exits 0. It does not process batches yet: the
//! batch handler, dispatch and reconciler are the processing-engine issue.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use freight_core::{
    config::Settings,
    db, queue,
    repo::workers::{self, NewWorker},
};
use rand::Rng;
use sea_orm::DatabaseConnection;

pub struct Worker {
    db: DatabaseConnection,
    settings: Arc<Settings>,
    id: String,
    host: String,
}

impl Worker {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = db::connect(&settings.database)
            .await
            .context("cannot connect to Postgres (DATABASE_URL)")?;
        db::prepare_schema(&db, settings.migrate_on_start).await?;
        let mut redis = queue::connect(&settings.redis)
            .await
            .context("cannot connect to Redis (REDIS_URL)")?;
        queue::ping(&mut redis)
            .await
            .context("Redis does not answer PING (REDIS_URL)")?;
        let host = hostname();
        Ok(Self {
            db,
            id: worker_id(&host),
            host,
            settings: Arc::new(settings),
        })
    }

    /// This process's worker id: host, pid and a random suffix, so replicas (and a
    /// restart under the same pid in a fresh container) never share one.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Registers, heartbeats until `shutdown` resolves, then marks itself stopped.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        workers::register(
            &self.db,
            NewWorker {
                id: self.id.clone(),
                host: self.host.clone(),
                pid: std::process::id() as i32,
                queue: self.settings.redis.queue.clone(),
                concurrency: self.settings.worker.concurrency as i32,
            },
        )
        .await
        .context("cannot register in the workers table")?;
        tracing::info!(worker.id = %self.id, "worker registered; batch processing is not built yet");
        let mut beat = tokio::time::interval(self.settings.worker.heartbeat_interval);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = beat.tick() => {
                    if let Err(e) = workers::heartbeat(&self.db, &self.id).await {
                        tracing::warn!(worker.id = %self.id, error = %e, "heartbeat failed; will retry");
                    }
                }
            }
        }
        // Best effort within a bound: a dead database must not hold the exit.
        match tokio::time::timeout(
            Duration::from_secs(5),
            workers::mark_stopped(&self.db, &self.id),
        )
        .await
        {
            Ok(Ok(())) => tracing::info!(worker.id = %self.id, "worker stopped"),
            Ok(Err(e)) => {
                tracing::warn!(worker.id = %self.id, error = %e, "could not mark the worker stopped")
            }
            Err(_) => tracing::warn!(worker.id = %self.id, "timed out marking the worker stopped"),
        }
        Ok(())
    }
}

/// `freight worker`: build, then run until SIGTERM or Ctrl-C.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Worker::build(settings)
        .await?
        .run_until_stopped(shutdown)
        .await
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

fn worker_id(host: &str) -> String {
    let suffix: u32 = rand::rngs::OsRng.r#gen();
    format!("{host}-{}-{suffix:08x}", std::process::id())
}
