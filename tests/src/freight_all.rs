//! `freight all` as a child process of a test: the whole of Freight in one binary,
//! logging JSON at debug level to a file the test reads once the process has stopped.

use std::{
    path::PathBuf,
    process::{Child, Command},
    time::Duration,
};

use crate::{
    TestEnv, database_url, free_port, freight_binary, redis_url, send_json, sigterm_and_wait,
    wait_until,
};

pub struct FreightAll {
    child: Child,
    log_path: PathBuf,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub client: reqwest::Client,
}

impl FreightAll {
    /// Starts `freight all` on `env`'s database and Redis prefix with `admin_token`, plus
    /// `extra` settings, and waits until it answers `/health`.
    pub async fn start(env: &TestEnv, admin_token: &str, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log_path =
            std::env::temp_dir().join(format!("freight-all-{}.jsonl", uuid::Uuid::new_v4()));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(freight_binary())
            .arg("all")
            .env("DATABASE_URL", database_url(&env.db_name))
            .env("REDIS_URL", redis_url())
            .env("REDIS_QUEUE", &env.db_name)
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("ADMIN_TOKEN", admin_token)
            .env("FREIGHT_ALLOW_PRIVATE_DESTINATIONS", "true")
            .env("MIGRATE_ON_START", "false")
            .env("LOG_FORMAT", "json")
            .env(
                "LOG_LEVEL",
                "debug,h2=info,hyper=info,tower=info,reqwest=info",
            )
            .envs(extra.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let freight = Self {
            child,
            log_path,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        assert!(
            wait_until(Duration::from_secs(20), || async {
                freight
                    .client
                    .get(freight.url("/health"))
                    .send()
                    .await
                    .is_ok()
            })
            .await,
            "freight all did not start"
        );
        freight
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Polls the job as `key` until its status is `status`; false after `timeout`.
    pub async fn wait_for_job_status(
        &self,
        key: &str,
        id: &str,
        status: &str,
        timeout: Duration,
    ) -> bool {
        wait_until(timeout, || async {
            let job: serde_json::Value = send_json(
                self.client
                    .get(self.url(&format!("/api/v1/jobs/{id}")))
                    .bearer_auth(key),
            )
            .await;
            job["status"] == status
        })
        .await
    }

    /// Stops the process (SIGTERM, then waits for it) and returns everything it logged.
    pub fn stop(mut self) -> String {
        self.terminate();
        std::fs::read_to_string(&self.log_path).unwrap()
    }

    /// SIGTERM and wait, unless the process has already been reaped (`stop` then `Drop`):
    /// its pid may by then belong to another process.
    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        sigterm_and_wait(&mut self.child);
    }
}

impl Drop for FreightAll {
    /// Stops the process even when the test failed, and removes its log.
    fn drop(&mut self) {
        self.terminate();
        let _ = std::fs::remove_file(&self.log_path);
    }
}
