//! Cancellations as they commit: a cancel notifies [`CANCEL_CHANNEL`] in its own
//! transaction (`pg_notify`), so a worker listening hears of it at commit, not at the
//! next poll.

use entity::JobId;
use sea_orm::{
    ConnectionTrait, DbBackend, Statement,
    sqlx::{self, postgres::PgListener},
};

use crate::error::Result;

/// The Postgres channel a cancel is announced on; the payload is the job id.
pub const CANCEL_CHANNEL: &str = "freight_cancel";

/// Announces the job's cancel to listening workers when `txn` commits.
pub async fn announce(txn: &impl ConnectionTrait, job_id: JobId) -> Result<()> {
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [CANCEL_CHANNEL.into(), job_id.to_string().into()],
    ))
    .await?;
    Ok(())
}

/// A connection of its own listening on [`CANCEL_CHANNEL`].
pub struct CancelListener(PgListener);

impl CancelListener {
    pub async fn connect(database_url: &str) -> Result<Self, sqlx::Error> {
        let mut listener = PgListener::connect(database_url).await?;
        listener.listen(CANCEL_CHANNEL).await?;
        Ok(Self(listener))
    }

    /// The next cancelled job's id (payloads that are not one are skipped).
    pub async fn next(&mut self) -> Result<JobId, sqlx::Error> {
        loop {
            if let Ok(job_id) = self.0.recv().await?.payload().parse() {
                return Ok(job_id);
            }
        }
    }
}
