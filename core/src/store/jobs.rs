//! `jobs`: the statements that create, read, lock, number, start, cancel and reopen jobs.
//! Use cases that combine them, in one transaction, are in `service::jobs`.

use chrono::Utc;
use entity::{
    JobId, TenantId,
    job::{self, JobStatus},
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, Statement, sea_query::LockType,
};

use super::{
    page::{Page, PageRequest},
    pg_txn::{CopyError, PgTxn},
    records,
};
use crate::{
    domain::job_spec::{Idempotency, NewJob, RawRecords, SourceKind},
    error::{Error, Result},
};

/// Stages a new job's inline records, numbered from 1, one chunk in memory at a time.
pub async fn stage_inline(
    txn: &PgTxn,
    job: &job::Model,
    inline: RawRecords<'_>,
    max_record_bytes: usize,
) -> Result<()> {
    let mut first_seq = 1;
    let chunks = inline
        .chunks(job.record_key.as_deref(), max_record_bytes, records::CHUNK)
        .map(|chunk| {
            let records =
                chunk.map_err(|e| Error::internal(format!("inline records: {}", e.message())))?;
            let numbered = records::Numbered { first_seq, records };
            first_seq += numbered.records.len() as i64;
            Ok::<_, Error>(numbered)
        });
    records::stage(txn, job.tenant_id, job.id, futures::stream::iter(chunks))
        .await
        .map_err(|e| match e {
            CopyError::Source(e) => e,
            CopyError::Database(e) => Error::from(e),
        })?;
    Ok(())
}

/// Inserts the job row (its records and batches are separate statements).
pub async fn insert(
    txn: &impl ConnectionTrait,
    tenant_id: TenantId,
    new: &NewJob<'_>,
    total: i64,
    idempotency: Option<&Idempotency>,
) -> Result<job::Model> {
    let now = Utc::now();
    let model = job::ActiveModel {
        id: Set(JobId::new()),
        tenant_id: Set(tenant_id),
        name: Set(new.name.clone()),
        status: Set(match new.source {
            SourceKind::Inline => JobStatus::Queued,
            SourceKind::Upload => JobStatus::AwaitingUpload,
        }),
        source: Set(new.source.as_json()),
        destination: Set(serde_json::to_value(&new.destination).expect("serialisable")),
        record_key: Set(new.record_key.clone()),
        batch_size: Set(new.batch_size),
        parallelism: Set(new.parallelism),
        retry_policy: Set(serde_json::to_value(new.retry).expect("serialisable")),
        idempotency_key: Set(idempotency.map(|i| i.key.clone())),
        request_hash: Set(idempotency.map(|i| i.fingerprint.clone())),
        total_records: Set(total),
        last_reserved_seq: Set(total),
        succeeded_records: Set(0),
        dead_lettered_records: Set(0),
        cancelled_records: Set(0),
        retrying_records: Set(0),
        error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        started_at: Set(None),
        finished_at: Set(None),
        cancel_requested_at: Set(None),
    };
    Ok(model.insert(txn).await?)
}

/// The tenant's job created with this `Idempotency-Key`, however long ago.
pub async fn find_by_idempotency_key(
    db: &impl ConnectionTrait,
    tenant_id: TenantId,
    key: &str,
) -> Result<Option<job::Model>> {
    Ok(job::Entity::find()
        .filter(job::Column::TenantId.eq(tenant_id))
        .filter(job::Column::IdempotencyKey.eq(key))
        .one(db)
        .await?)
}

/// Frees a key whose 24 h window has passed, so it can name a new job.
pub async fn release_idempotency_key(db: &impl ConnectionTrait, job_id: JobId) -> Result<()> {
    job::Entity::update_many()
        .col_expr(
            job::Column::IdempotencyKey,
            sea_orm::sea_query::Expr::value(Option::<String>::None),
        )
        .filter(job::Column::Id.eq(job_id))
        .exec(db)
        .await?;
    Ok(())
}

/// One of the tenant's jobs; another tenant's job is not found.
pub async fn get(
    db: &impl ConnectionTrait,
    tenant_id: TenantId,
    job_id: JobId,
) -> Result<job::Model> {
    job::Entity::find_by_id(job_id)
        .filter(job::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or(Error::NotFound("job"))
}

/// The jobs with these ids, of any tenant, in no order: for readers that already know
/// whose they are (a watched or cached job view). Missing ids are left out.
pub async fn get_many(db: &impl ConnectionTrait, ids: &[JobId]) -> Result<Vec<job::Model>> {
    Ok(job::Entity::find()
        .filter(job::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?)
}

/// The tenant's jobs, newest first (ids are UUID v7), optionally of one status.
pub async fn list(
    db: &impl ConnectionTrait,
    tenant_id: TenantId,
    status: Option<JobStatus>,
    page: PageRequest,
) -> Result<Page<job::Model>> {
    let mut q = job::Entity::find()
        .filter(job::Column::TenantId.eq(tenant_id))
        .order_by_desc(job::Column::Id)
        .limit(page.limit + 1);
    if let Some(status) = status {
        q = q.filter(job::Column::Status.eq(status));
    }
    if let Some(before) = page.after {
        q = q.filter(job::Column::Id.lt(before));
    }
    Ok(page.finish(q.all(db).await?, |j| j.id.into()))
}

/// Locks the tenant's job for the rest of `txn` (`SELECT … FOR UPDATE`): its start, its
/// cancel, and uploads in flight to it (see [`lock_for_upload`]) exclude each other.
pub async fn lock(
    txn: &impl ConnectionTrait,
    tenant_id: TenantId,
    job_id: JobId,
) -> Result<job::Model> {
    locked(txn, tenant_id, job_id, LockType::Update).await
}

/// Locks the tenant's job for an upload, for the rest of `txn`: `FOR KEY SHARE`, which
/// other uploads to the job share (they number their records with
/// [`reserve_seqs`], not under this lock) and a start or cancel ([`lock`]) waits for.
pub async fn lock_for_upload(
    txn: &impl ConnectionTrait,
    tenant_id: TenantId,
    job_id: JobId,
) -> Result<job::Model> {
    locked(txn, tenant_id, job_id, LockType::KeyShare).await
}

async fn locked(
    txn: &impl ConnectionTrait,
    tenant_id: TenantId,
    job_id: JobId,
    mode: LockType,
) -> Result<job::Model> {
    job::Entity::find_by_id(job_id)
        .filter(job::Column::TenantId.eq(tenant_id))
        .lock(mode)
        .one(txn)
        .await?
        .ok_or(Error::NotFound("job"))
}

pub fn require_awaiting_upload(job: &job::Model, action: &str) -> Result<()> {
    if job.status == JobStatus::AwaitingUpload {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "job is {}; {action} only while it is awaiting_upload",
        sea_orm::ActiveEnum::to_value(&job.status)
    )))
}

/// Hands out the job's next `n` record sequence numbers and returns the first.
///
/// Guard: a statement of its own on `db`, committed at once, never inside an upload's
/// transaction: the row lock it takes lasts only that statement, so uploads to one job
/// do not wait for each other's `COPY`. Numbers reserved by an upload that then fails
/// are never used (gaps, which [`batches::plan`] allows for).
///
/// Its commit does not wait for the WAL to reach the disk (`set_config(…, true)` sets
/// `synchronous_commit = off` for the statement's own transaction, in one round trip):
/// the upload's own commit, later in the WAL, flushes it, and a reservation lost in a
/// crash is one whose upload did not commit either.
pub async fn reserve_seqs(db: &DatabaseConnection, job_id: JobId, n: i64) -> Result<i64> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE jobs SET last_reserved_seq = last_reserved_seq + $2
             WHERE id = $1 AND status = 'awaiting_upload'
               AND set_config('synchronous_commit', 'off', true) = 'off'
             RETURNING last_reserved_seq - $2 + 1 AS first",
            [job_id.into(), n.into()],
        ))
        .await?;
    match row {
        Some(row) => Ok(row.try_get("", "first")?),
        None => Err(Error::Conflict(
            "job is no longer awaiting_upload; records can be added only while it is awaiting_upload".into(),
        )),
    }
}

/// Gives a failed upload's numbers `first ..= last` back to the job if they are still
/// the last handed out, so the next upload continues where the last one that succeeded
/// ended. Best effort: a gap left behind costs nothing but a number.
///
/// Guard: the upload's transaction must hold no row lock on the job beyond its
/// `KEY SHARE` (true whenever [`add_to_total`] has not updated the row), or this
/// statement, on another connection, would wait for a transaction that ends only after it.
pub async fn give_back_seqs(db: &DatabaseConnection, job_id: JobId, first: i64, last: i64) {
    let res = db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE jobs SET last_reserved_seq = $2 WHERE id = $1 AND last_reserved_seq = $3",
            [job_id.into(), (first - 1).into(), last.into()],
        ))
        .await;
    if let Err(e) = res {
        tracing::warn!(%job_id, error = %e, "could not give back a failed upload's sequence numbers");
    }
}

/// Adds an upload's records to the job's total and returns the new total, unless that
/// would exceed `max_records`: then the row is left alone (not even locked) and `None`
/// comes back.
pub async fn add_to_total(
    txn: &impl ConnectionTrait,
    job_id: JobId,
    added: i64,
    max_records: Option<i64>,
) -> Result<Option<i64>> {
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE jobs SET total_records = total_records + $2, updated_at = now()
             WHERE id = $1 AND ($3::bigint IS NULL OR total_records + $2 <= $3)
             RETURNING total_records",
            [job_id.into(), added.into(), max_records.into()],
        ))
        .await?;
    match (row, max_records) {
        (Some(row), _) => Ok(Some(row.try_get("", "total_records")?)),
        (None, Some(_)) => Ok(None),
        (None, None) => Err(Error::NotFound("job")),
    }
}

/// Moves a job locked by [`lock`] to `queued`.
pub async fn set_queued(txn: &impl ConnectionTrait, job: job::Model) -> Result<job::Model> {
    let mut active: job::ActiveModel = job.into();
    active.status = Set(JobStatus::Queued);
    active.updated_at = Set(Utc::now());
    Ok(active.update(txn).await?)
}

/// A job's destination as stored, for rotation.
pub struct StoredDestination {
    pub id: JobId,
    pub tenant_id: TenantId,
    /// The stored JSON, as text: the rewrite only replaces a row that still holds it.
    pub raw: String,
}

/// Jobs' stored destinations in id order, `limit` after `after`.
pub async fn destinations_after(
    db: &impl ConnectionTrait,
    after: JobId,
    limit: u64,
) -> Result<Vec<StoredDestination>> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT id, tenant_id, destination::text AS raw FROM jobs WHERE id > $1 ORDER BY id LIMIT $2",
            [after.into(), (limit.max(1) as i64).into()],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            Ok(StoredDestination {
                id: row.try_get("", "id")?,
                tenant_id: row.try_get("", "tenant_id")?,
                raw: row.try_get("", "raw")?,
            })
        })
        .collect()
}

/// Replaces stored destinations, each only if the row still holds `old` (nothing else
/// rewrites a destination, but the check is free). Returns the rows changed.
pub async fn replace_destinations(
    db: &impl ConnectionTrait,
    ids: Vec<JobId>,
    olds: Vec<String>,
    news: Vec<String>,
) -> Result<u64> {
    let result = db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE jobs j SET destination = u.new::json
             FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(id, old, new)
             WHERE j.id = u.id AND j.destination::text = u.old",
            [ids.into(), olds.into(), news.into()],
        ))
        .await?;
    Ok(result.rows_affected())
}
