//! Running jobs in tests: an in-process worker, waiting for a job to finish, and the
//! invariant check every engine test ends with.

use std::time::Duration;

use freight_core::config::Settings;
use sea_orm::DatabaseConnection;
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::TestApp;

/// Settings that make the engine quick to react in tests.
pub fn fast_engine(s: &mut Settings) {
    s.worker.concurrency = 4;
    s.worker.batch_heartbeat_interval = Duration::from_millis(500);
    s.worker.batch_stale_after = Duration::from_secs(3);
    s.worker.reconciler_interval = Duration::from_millis(500);
    s.worker.reconciler_overdue_after = Duration::from_secs(2);
    s.worker.shutdown_grace = Duration::from_secs(5);
}

/// A job's id, parsed and as the api gave it: `(uuid, string)`.
pub fn id_of(job: &Value) -> (Uuid, String) {
    let s = job["id"].as_str().unwrap().to_owned();
    (s.parse().unwrap(), s)
}

/// A worker running inside the test process; stops when dropped.
pub struct InProcessWorker {
    stop: Option<oneshot::Sender<()>>,
    pub id: String,
}

impl InProcessWorker {
    pub async fn start(settings: Settings) -> Self {
        let worker = freight_worker::Worker::build(settings)
            .await
            .expect("build the worker");
        let id = worker.id().to_owned();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            if let Err(e) = worker
                .run_until_stopped(async {
                    let _ = rx.await;
                })
                .await
            {
                eprintln!("in-process worker stopped: {e:#}");
            }
        });
        Self { stop: Some(tx), id }
    }
}

impl Drop for InProcessWorker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestApp {
    /// Starts an in-process worker against this app's database and Redis namespace.
    pub async fn start_worker(&self) -> InProcessWorker {
        self.start_worker_with(|_| {}).await
    }

    /// [`TestApp::start_worker`] with `tweak` applied to the settings after
    /// [`fast_engine`].
    pub async fn start_worker_with(&self, tweak: impl FnOnce(&mut Settings)) -> InProcessWorker {
        let mut settings = self.env.settings.clone();
        fast_engine(&mut settings);
        tweak(&mut settings);
        InProcessWorker::start(settings).await
    }

    /// GET the job.
    pub async fn job(&self, key: &str, id: &str) -> Value {
        self.get_json(key, &format!("/api/v1/jobs/{id}")).await
    }

    /// Polls the job until it reaches a terminal state; panics after `timeout`.
    pub async fn wait_finished(&self, key: &str, id: &str, timeout: Duration) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let job = self.job(key, id).await;
            let status = job["status"].as_str().unwrap_or("").to_owned();
            if matches!(
                status.as_str(),
                "completed" | "completed_with_errors" | "failed" | "cancelled"
            ) {
                return job;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job did not finish within {timeout:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn scalar(db: &DatabaseConnection, sql: &str, job: Uuid) -> i64 {
    crate::query_i64(db, sql, vec![job.into()]).await
}

/// The shared invariant check for a finished job: one terminal outcome per record (no
/// requeues in these tests), it agrees with the record's status, no batch is left
/// unfinished, the job's counters equal the log, and progress adds up.
pub async fn assert_invariants(db: &DatabaseConnection, job: Uuid) {
    let total = scalar(db, "SELECT total_records FROM jobs WHERE id = $1", job).await;
    let records = scalar(
        db,
        "SELECT count(*) FROM job_records WHERE job_id = $1",
        job,
    )
    .await;
    assert_eq!(total, records, "total_records equals the staged records");
    let not_one_terminal = scalar(
        db,
        "SELECT count(*) FROM job_records r WHERE r.job_id = $1 AND (SELECT count(*) FROM record_logs l
           WHERE l.job_id = r.job_id AND l.record_seq = r.seq
             AND l.status IN ('succeeded', 'dead_lettered', 'cancelled')) <> 1",
        job,
    )
    .await;
    assert_eq!(
        not_one_terminal, 0,
        "every record has exactly one terminal outcome"
    );
    let disagreeing = scalar(
        db,
        "SELECT count(*) FROM record_states r WHERE r.job_id = $1 AND r.status <> (SELECT l.status FROM record_logs l
           WHERE l.job_id = r.job_id AND l.record_seq = r.seq
             AND l.status IN ('succeeded', 'dead_lettered', 'cancelled') ORDER BY l.id DESC LIMIT 1)",
        job,
    )
    .await;
    assert_eq!(
        disagreeing, 0,
        "each record's status is its terminal outcome"
    );
    let unfinished = scalar(
        db,
        "SELECT count(*) FROM batches WHERE job_id = $1 AND status IN ('pending', 'queued', 'running', 'retry_scheduled')",
        job,
    )
    .await;
    assert_eq!(unfinished, 0, "no batch is left unfinished");
    for (counter, outcome) in [
        ("succeeded_records", "succeeded"),
        ("dead_lettered_records", "dead_lettered"),
        ("cancelled_records", "cancelled"),
    ] {
        let counted = scalar(
            db,
            &format!("SELECT {counter} FROM jobs WHERE id = $1"),
            job,
        )
        .await;
        let logged = scalar(
            db,
            &format!("SELECT count(*) FROM record_logs WHERE job_id = $1 AND status = '{outcome}'"),
            job,
        )
        .await;
        assert_eq!(
            counted, logged,
            "{counter} equals the log's `{outcome}` rows"
        );
    }
    let sums = scalar(
        db,
        "SELECT total_records - succeeded_records - dead_lettered_records - cancelled_records FROM jobs WHERE id = $1",
        job,
    )
    .await;
    assert_eq!(sums, 0, "a finished job has nothing pending");
    let retrying = scalar(db, "SELECT retrying_records FROM jobs WHERE id = $1", job).await;
    assert_eq!(retrying, 0, "a finished job has nothing retrying");
    let dead = scalar(
        db,
        "SELECT count(*) FROM dead_letters WHERE job_id = $1",
        job,
    )
    .await;
    let dead_records = scalar(
        db,
        "SELECT count(*) FROM job_records WHERE job_id = $1 AND status = 'dead_lettered'",
        job,
    )
    .await;
    assert_eq!(
        dead, dead_records,
        "one dead letter per dead-lettered record"
    );
}

impl TestApp {
    /// The real `freight worker` binary as a child process on this app's database and
    /// Redis namespace, with quick engine timings; `extra` adds or overrides variables.
    pub fn spawn_worker_binary(&self, extra: &[(&str, &str)]) -> std::process::Child {
        std::process::Command::new(crate::freight_binary())
            .arg("worker")
            .env("DATABASE_URL", crate::database_url(&self.env.db_name))
            .env("REDIS_URL", crate::redis_url())
            .env("REDIS_QUEUE", &self.env.db_name)
            .env("FREIGHT_ALLOW_PRIVATE_DESTINATIONS", "true")
            .env("FREIGHT_SECRET_KEY", crate::SECRET_KEY)
            .env("MIGRATE_ON_START", "false")
            .env("DATABASE_MAX_CONNECTIONS", "4")
            .env("WORKER_BATCH_HEARTBEAT_INTERVAL", "500ms")
            .env("WORKER_BATCH_STALE_AFTER", "3s")
            .env("RECONCILER_INTERVAL", "500ms")
            .env("RECONCILER_OVERDUE_AFTER", "2s")
            .env("LOG_LEVEL", "warn")
            .envs(extra.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn the freight binary")
    }
}
