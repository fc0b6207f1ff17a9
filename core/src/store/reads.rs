//! The read side of a job and of a tenant: batches, retry status, record logs, dead
//! letters, usage stats, and the tenant's default retry policy (whose one write lives
//! here too, beside its read).
//!
//! Every function takes the tenant id first and filters by it, so another tenant's job
//! reads as [`Error::NotFound`] (a 404, never a 403). Lists use keyset pagination with
//! an opaque cursor: base64url of the last row's sort key (see [`Keyset`](super::page::Keyset)).

use chrono::{DateTime, Utc};
use entity::{
    BatchId, JobId, TenantId,
    batch::BatchStatus,
    dead_letter,
    job::{self, JobStatus},
    job_record,
    record_log::{self, RecordOutcome},
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, IdenStatic,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, SelectExt, Statement, Value,
    sea_query::{Expr, ExprTrait, JoinType},
};
use uuid::Uuid;

use super::page::{CursorKey, Keyset, Page};
use crate::error::{Error, Result};

// ---------------------------------------------------------------------------------------
// Cursor keys beyond the id

/// A dead letter's place in `ORDER BY created_at, id`: the microsecond timestamp (what
/// Postgres stores, so it round-trips exactly) then the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterKey {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl CursorKey for DeadLetterKey {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.created_at.timestamp_micros().to_be_bytes().to_vec();
        out.extend_from_slice(self.id.as_bytes());
        out
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 24 {
            return None;
        }
        let micros = i64::from_be_bytes(bytes[..8].try_into().ok()?);
        Some(Self {
            created_at: DateTime::from_timestamp_micros(micros)?,
            id: Uuid::from_slice(&bytes[8..]).ok()?,
        })
    }
}

fn stmt(sql: impl Into<String>, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

// ---------------------------------------------------------------------------------------
// The job guard

/// Fails with `NotFound("job")` unless the job exists *and* belongs to the tenant.
/// Guard: the tenant's id in the filter: another tenant's job is indistinguishable from none.
pub async fn require_job(
    db: &impl ConnectionTrait,
    tenant_id: TenantId,
    job_id: JobId,
) -> Result<()> {
    let found = job::Entity::find_by_id(job_id)
        .filter(job::Column::TenantId.eq(tenant_id))
        .exists(db)
        .await?;
    if found {
        Ok(())
    } else {
        Err(Error::NotFound("job"))
    }
}

// ---------------------------------------------------------------------------------------
// Batches

/// A contiguous range of a job's records, delivered together.
#[derive(Debug, Clone, FromQueryResult, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchRow {
    pub id: Uuid,
    /// 1, 2, … in record order.
    pub seq: i32,
    pub status: BatchStatus,
    /// Deliveries started so far (the first try included).
    pub attempts: i32,
    pub record_count: i32,
    pub first_record_seq: i64,
    pub last_record_seq: i64,
    /// Records of this batch waiting for a retry.
    pub retrying_records: i32,
    /// When the next attempt is due (`retry_scheduled`, or queued with a delay).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The worker running it, or that ran its last attempt.
    pub worker_id: Option<String>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A page of the job's batches by `seq`, ascending (unique index `(job_id, seq)`).
/// Guard: `tenant_id = $1 AND job_id = $2`; call [`require_job`] first to tell an empty
/// page from a job that is not the tenant's.
pub async fn list_batches(
    db: &impl ConnectionTrait,
    tenant_id: TenantId,
    job_id: JobId,
    page: Keyset<i64>,
) -> Result<Page<BatchRow>> {
    let rows = BatchRow::find_by_statement(stmt(
        "SELECT id, seq, status, attempts, record_count, first_record_seq, last_record_seq, retrying_records,
                next_attempt_at, last_error, worker_id, dispatched_at, heartbeat_at, created_at, updated_at,
                finished_at
         FROM batches
         WHERE tenant_id = $1 AND job_id = $2 AND seq > $3
         ORDER BY seq
         LIMIT $4",
        vec![
            tenant_id.into(),
            job_id.into(),
            page.after.unwrap_or(0).into(),
            (page.limit as i64 + 1).into(),
        ],
    ))
    .all(db)
    .await?;
    Ok(page.finish(rows, |b| i64::from(b.seq)))
}

// ---------------------------------------------------------------------------------------
// Retry status

/// How many scheduled retries [`scheduled_retries`] lists at most (the soonest first);
/// its count covers all of them.
pub const SCHEDULED_RETRIES_SHOWN: i64 = 1000;

/// A batch waiting for its next attempt.
#[derive(Debug, Clone, FromQueryResult)]
pub struct ScheduledRetryRow {
    pub batch_id: BatchId,
    /// The attempt that is scheduled: the batch's attempts so far + 1.
    pub attempt: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// How many of the job's batches are `retry_scheduled` (the same on every row).
    pub total: i64,
}

/// The job's `retry_scheduled` batches, soonest first, at most
/// [`SCHEDULED_RETRIES_SHOWN`], each row carrying the full count.
/// Guard: `tenant_id = $1 AND job_id = $2 AND status = 'retry_scheduled'`.
pub async fn scheduled_retries(
    db: &impl ConnectionTrait,
    tenant_id: TenantId,
    job_id: JobId,
) -> Result<(i64, Vec<ScheduledRetryRow>)> {
    let rows = ScheduledRetryRow::find_by_statement(stmt(
        "SELECT id AS batch_id, attempts + 1 AS attempt, next_attempt_at, count(*) OVER () AS total
         FROM batches
         WHERE tenant_id = $1 AND job_id = $2 AND status = 'retry_scheduled'
         ORDER BY next_attempt_at NULLS LAST, seq
         LIMIT $3",
        vec![
            tenant_id.into(),
            job_id.into(),
            SCHEDULED_RETRIES_SHOWN.into(),
        ],
    ))
    .all(db)
    .await?;
    let total = rows.first().map_or(0, |r| r.total);
    Ok((total, rows))
}

/// How many retries the job has had: its `failed` log rows (each is an attempt that
/// failed transiently and was followed by a retry). Guard: the tenant's id in the filter.
pub async fn count_failed_attempts(
    db: &impl ConnectionTrait,
    tenant_id: TenantId,
    job_id: JobId,
) -> Result<i64> {
    let n = record_log::Entity::find()
        .filter(record_log::Column::TenantId.eq(tenant_id))
        .filter(record_log::Column::JobId.eq(job_id))
        .filter(record_log::Column::Status.eq(RecordOutcome::Failed))
        .count(db)
        .await?;
    Ok(n as i64)
}

// ---------------------------------------------------------------------------------------
// Record logs

/// Which log rows to read.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub status: Option<entity::record_log::RecordOutcome>,
    pub record_seq: Option<i64>,
}

/// One log row, with the record's `record_key`.
#[derive(Debug, Clone, FromQueryResult)]
pub struct LogRow {
    pub id: i64,
    pub record_seq: i64,
    pub record_key: Option<String>,
    pub batch_id: BatchId,
    pub attempt: i32,
    pub status: String,
    pub error: Option<String>,
    pub duration_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
}

/// Up to `limit` of the job's log rows with `id > after_id`, by id ascending, with the
/// record's `record_key` (joined on `(job_id, seq)`). The optional filters are added to
/// the statement only when present, so each shape gets a plan that uses its index
/// (`(job_id, id)`, or `(job_id, record_seq, id)` with a record).
/// Guard: the tenant's id in the filter; call [`require_job`] first.
pub async fn list_logs(
    db: &impl ConnectionTrait,
    tenant_id: TenantId,
    job_id: JobId,
    filter: &LogFilter,
    after_id: i64,
    limit: u64,
) -> Result<Vec<LogRow>> {
    use record_log::Column as L;
    let mut q = record_log::Entity::find()
        .select_only()
        .columns([
            L::Id,
            L::RecordSeq,
            L::BatchId,
            L::Attempt,
            L::Status,
            L::Error,
        ])
        .columns([L::DurationMs, L::CreatedAt])
        .expr_as(record_column(job_record::Column::RecordKey), "record_key")
        .join(JoinType::LeftJoin, record_log_to_its_record())
        .filter(L::TenantId.eq(tenant_id))
        .filter(L::JobId.eq(job_id))
        .filter(L::Id.gt(after_id));
    if let Some(status) = filter.status {
        q = q.filter(L::Status.eq(status));
    }
    if let Some(seq) = filter.record_seq {
        q = q.filter(L::RecordSeq.eq(seq));
    }
    Ok(q.order_by_asc(L::Id)
        .limit(limit)
        .into_model::<LogRow>()
        .all(db)
        .await?)
}

/// A column of the joined `job_records` row.
fn record_column(col: job_record::Column) -> Expr {
    Expr::col((job_record::Entity, col))
}

/// `job_records ON (job_id, seq)`: a dead letter's record.
fn dead_letter_to_its_record() -> sea_orm::RelationDef {
    dead_letter::Entity::belongs_to(job_record::Entity)
        .from((dead_letter::Column::JobId, dead_letter::Column::RecordSeq))
        .to((job_record::Column::JobId, job_record::Column::Seq))
        .into()
}

/// `job_records ON (job_id, seq)`: a log row's record.
fn record_log_to_its_record() -> sea_orm::RelationDef {
    record_log::Entity::belongs_to(job_record::Entity)
        .from((record_log::Column::JobId, record_log::Column::RecordSeq))
        .to((job_record::Column::JobId, job_record::Column::Seq))
        .into()
}

/// A page of the job's log rows, by id ascending; the cursor is the last id.
/// Guard: as [`list_logs`], which runs the one statement.
pub async fn page_logs(
    db: &impl ConnectionTrait,
    tenant_id: TenantId,
    job_id: JobId,
    filter: &LogFilter,
    page: Keyset<i64>,
) -> Result<Page<LogRow>> {
    let rows = list_logs(
        db,
        tenant_id,
        job_id,
        filter,
        page.after.unwrap_or(0),
        page.limit + 1,
    )
    .await?;
    Ok(page.finish(rows, |l| l.id))
}

// ---------------------------------------------------------------------------------------
// Dead letters

/// One dead letter with its record's key and payload.
#[derive(Debug, Clone, FromQueryResult)]
pub struct DeadLetterRow {
    pub id: Uuid,
    pub batch_id: BatchId,
    pub record_seq: i64,
    pub record_key: Option<String>,
    pub payload: serde_json::Value,
    pub error: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub requeued_at: Option<DateTime<Utc>>,
    pub requeue_count: i32,
}

/// A page of the job's dead letters by `(created_at, id)`, with the record's key and
/// payload. Requeued ones (which keep their row, `requeued_at` set) are included unless
/// `include_requeued` is false.
/// Guard: `d.tenant_id = $1 AND d.job_id = $2`; call [`require_job`] first.
pub async fn list_dead_letters(
    db: &impl ConnectionTrait,
    tenant_id: TenantId,
    job_id: JobId,
    include_requeued: bool,
    page: Keyset<DeadLetterKey>,
) -> Result<Page<DeadLetterRow>> {
    use dead_letter::Column as D;
    let mut q = dead_letter::Entity::find()
        .select_only()
        .columns([
            D::Id,
            D::BatchId,
            D::RecordSeq,
            D::Error,
            D::Attempts,
            D::CreatedAt,
        ])
        .columns([D::RequeuedAt, D::RequeueCount])
        .expr_as(record_column(job_record::Column::RecordKey), "record_key")
        .expr_as(record_column(job_record::Column::Payload), "payload")
        .join(JoinType::InnerJoin, dead_letter_to_its_record())
        .filter(D::TenantId.eq(tenant_id))
        .filter(D::JobId.eq(job_id));
    if !include_requeued {
        q = q.filter(D::RequeuedAt.is_null());
    }
    if let Some(after) = page.after {
        let key = Expr::tuple([
            Expr::col((dead_letter::Entity, D::CreatedAt)),
            Expr::col((dead_letter::Entity, D::Id)),
        ]);
        q = q.filter(key.gt(Expr::tuple([after.created_at.into(), after.id.into()])));
    }
    let rows = q
        .order_by_asc(D::CreatedAt)
        .order_by_asc(D::Id)
        .limit(page.limit + 1)
        .into_model::<DeadLetterRow>()
        .all(db)
        .await?;
    Ok(page.finish(rows, |d| DeadLetterKey {
        created_at: d.created_at,
        id: d.id,
    }))
}

// ---------------------------------------------------------------------------------------
// Stats

/// The tenant's jobs in one state, with their record counters summed.
#[derive(Debug, Clone, FromQueryResult)]
pub struct StatusUsage {
    pub status: JobStatus,
    pub jobs: i64,
    pub total: i64,
    pub succeeded: i64,
    pub dead_lettered: i64,
    pub cancelled: i64,
    pub retrying: i64,
}

/// Per job state: how many of the tenant's jobs are in it and the sums of their record
/// counters (states with no job are absent). Guard: the tenant's id in the filter.
pub async fn usage_by_status(
    db: &impl ConnectionTrait,
    tenant_id: TenantId,
) -> Result<Vec<StatusUsage>> {
    use job::Column as J;
    // `sum` of a bigint is a numeric in Postgres: cast back.
    let sum = |col: J| Expr::cust(format!("COALESCE(sum({}), 0)::bigint", col.as_str()));
    Ok(job::Entity::find()
        .select_only()
        .column(J::Status)
        .expr_as(Expr::cust("count(*)::bigint"), "jobs")
        .expr_as(sum(J::TotalRecords), "total")
        .expr_as(sum(J::SucceededRecords), "succeeded")
        .expr_as(sum(J::DeadLetteredRecords), "dead_lettered")
        .expr_as(sum(J::CancelledRecords), "cancelled")
        .expr_as(sum(J::RetryingRecords), "retrying")
        .filter(J::TenantId.eq(tenant_id))
        .group_by(J::Status)
        .into_model::<StatusUsage>()
        .all(db)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::page::encode_cursor;

    #[test]
    fn cursors_round_trip() {
        let k: Keyset<i64> = Keyset::parse(Some(5), Some(&encode_cursor(&42i64))).unwrap();
        assert_eq!((k.limit, k.after), (5, Some(42)));

        let key = DeadLetterKey {
            created_at: DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        let k: Keyset<DeadLetterKey> = Keyset::parse(None, Some(&encode_cursor(&key))).unwrap();
        assert_eq!((k.limit, k.after), (100, Some(key)));
    }

    #[test]
    fn bad_cursors_and_limits_are_refused() {
        assert!(matches!(
            Keyset::<i64>::parse(None, Some("not-a-cursor")),
            Err(Error::Malformed(_))
        ));
        // A dead-letter cursor is not a log cursor, and the other way round.
        let dl = encode_cursor(&DeadLetterKey {
            created_at: Utc::now(),
            id: Uuid::nil(),
        });
        assert!(Keyset::<i64>::parse(None, Some(&dl)).is_err());
        assert!(Keyset::<DeadLetterKey>::parse(None, Some(&encode_cursor(&1i64))).is_err());
        assert!(matches!(
            Keyset::<i64>::parse(Some(0), None),
            Err(Error::Validation(_))
        ));
        assert!(Keyset::<i64>::parse(Some(1001), None).is_err());
        assert!(
            Keyset::<i64>::parse(None, Some(""))
                .unwrap()
                .after
                .is_none()
        );
    }

    #[test]
    fn finish_keeps_limit_rows_and_points_at_the_last() {
        let k: Keyset<i64> = Keyset::parse(Some(2), None).unwrap();
        let p = k.finish(vec![1i64, 2, 3], |v| *v);
        assert_eq!(p.data, [1, 2]);
        assert_eq!(p.next_cursor, Some(encode_cursor(&2i64)));
        let p = k.finish(vec![1i64, 2], |v| *v);
        assert_eq!(p.next_cursor, None);
    }
}
