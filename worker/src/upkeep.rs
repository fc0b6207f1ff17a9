//! When table upkeep runs: the reconciler's leader starts a pass every
//! `TABLE_UPKEEP_INTERVAL` ([`freight_core::store::upkeep`] holds what a pass does).

use std::time::{Duration, Instant};

use freight_core::store::upkeep::run_once;
use sea_orm::sqlx::PgPool;

/// When the next pass may start: every `interval`, never two at once.
pub struct Schedule {
    interval: Duration,
    last: Option<Instant>,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Schedule {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            running: None,
        }
    }

    /// Starts a pass in the background if one is due and none is running. The pass runs
    /// apart from the reconciler's loop: a VACUUM of a table of millions of rows must not
    /// hold up re-dispatching.
    pub fn tick(&mut self, pool: &PgPool, database_url: &str) {
        if self.running.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        if self.last.is_some_and(|t| t.elapsed() < self.interval) {
            return;
        }
        self.last = Some(Instant::now());
        let (pool, url) = (pool.clone(), database_url.to_owned());
        self.running = Some(tokio::spawn(async move {
            if let Err(e) = run_once(&pool, &url).await {
                tracing::warn!(error = %e, "table upkeep failed; will retry");
            }
        }));
    }
}

impl Drop for Schedule {
    fn drop(&mut self) {
        if let Some(h) = self.running.take() {
            h.abort();
        }
    }
}
