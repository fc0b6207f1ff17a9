//! Hears cancellations the moment they commit (Postgres LISTEN/NOTIFY) and stops this
//! worker's running batches of that job, between records.

use std::{sync::Arc, time::Duration};

use freight_core::store::cancellations::CancelListener;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;

pub async fn run(engine: Arc<Engine>, stop: CancellationToken) {
    loop {
        let listened = listen(&engine, &stop).await;
        if stop.is_cancelled() {
            return;
        }
        if let Err(e) = listened {
            tracing::warn!(error = %e, "cancel listener lost its connection; reconnecting");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn listen(engine: &Engine, stop: &CancellationToken) -> Result<(), sea_orm::sqlx::Error> {
    let mut listener =
        CancelListener::connect(engine.settings.database.url.expose_secret()).await?;
    loop {
        let job_id = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            n = listener.next() => n?,
        };
        let stopped = engine.inflight.cancel_job(job_id);
        if stopped > 0 {
            tracing::info!(job_id = %job_id, batches = stopped, "stopping batches of a cancelled job");
        }
    }
}
