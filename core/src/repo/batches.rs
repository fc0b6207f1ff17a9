//! `batches`: planning, and the per-status counts shown on a job.

use std::collections::HashMap;

use entity::{batch::BatchStatus, job};
use sea_orm::{ConnectionTrait, DbBackend, Statement, TryGetable};
use serde::Serialize;
use uuid::Uuid;

use crate::error::Result;

/// Cuts a job's records into contiguous batches of `batch_size`, in one statement.
/// Guard: runs once per job, inside the transaction that creates or starts it.
pub async fn plan(db: &impl ConnectionTrait, job: &job::Model) -> Result<u64> {
    let res = db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO batches (id, job_id, tenant_id, seq, first_record_seq, last_record_seq, record_count, status)
             SELECT gen_random_uuid(), $1, $2, (g + 1)::int, g * $3 + 1, LEAST((g + 1) * $3, $4),
                    (LEAST((g + 1) * $3, $4) - g * $3)::int, 'pending'
             FROM generate_series(0::bigint, ($4 - 1) / $3) AS g",
            [job.id.into(), job.tenant_id.into(), (job.batch_size as i64).into(), job.total_records.into()],
        ))
        .await?;
    Ok(res.rows_affected())
}

/// How many of a job's batches are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BatchCounts {
    pub total: i64,
    pub pending: i64,
    pub queued: i64,
    pub running: i64,
    pub retry_scheduled: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl BatchCounts {
    fn add(&mut self, status: BatchStatus, n: i64) {
        self.total += n;
        *match status {
            BatchStatus::Pending => &mut self.pending,
            BatchStatus::Queued => &mut self.queued,
            BatchStatus::Running => &mut self.running,
            BatchStatus::RetryScheduled => &mut self.retry_scheduled,
            BatchStatus::Succeeded => &mut self.succeeded,
            BatchStatus::Failed => &mut self.failed,
            BatchStatus::Cancelled => &mut self.cancelled,
        } += n;
    }
}

/// Batch counts for several jobs in one grouped, index-only query.
pub async fn counts(
    db: &impl ConnectionTrait,
    job_ids: &[Uuid],
) -> Result<HashMap<Uuid, BatchCounts>> {
    let mut out: HashMap<Uuid, BatchCounts> = HashMap::new();
    if job_ids.is_empty() {
        return Ok(out);
    }
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT job_id, status, count(*)::bigint AS n FROM batches WHERE job_id = ANY($1) GROUP BY 1, 2",
            [job_ids.to_vec().into()],
        ))
        .await?;
    for row in rows {
        let job_id: Uuid = Uuid::try_get(&row, "", "job_id").map_err(sea_orm::DbErr::from)?;
        let status: BatchStatus = row.try_get("", "status")?;
        let n: i64 = row.try_get("", "n")?;
        out.entry(job_id).or_default().add(status, n);
    }
    Ok(out)
}
