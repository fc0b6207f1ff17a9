//! `jobs`: creation (with its records and batch plan), reads, lists, upload and start.

use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use entity::job::{self, JobStatus};
use futures::{Stream, StreamExt};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, Statement, TransactionTrait, sea_query::LockType,
};
use uuid::Uuid;

use super::{
    audit::{self, Actor},
    batches, is_unique_violation,
    page::{Page, PageRequest},
    records, tenants,
};
use crate::{
    domain::{
        job_spec::{NewJob, RawRecords, SourceKind},
        record::Staged,
    },
    error::{Error, Result},
    pg_txn::{CopyError, PgTxn},
    secrets::Keyring,
};

/// How long an `Idempotency-Key` keeps returning the job it created.
pub const IDEMPOTENCY_WINDOW_HOURS: i64 = 24;

/// An `Idempotency-Key` header with the fingerprint of the body it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: String,
}

/// Whether [`create`] made a new job or found the one an idempotency key already made.
#[derive(Debug)]
pub enum Created {
    New(job::Model),
    Existing(job::Model),
}

/// Stores a job, its inline records, its batch plan and its `job.created` audit event in
/// one transaction, which ends by checking the tenant's `max_pending_records` under the
/// tenant row's lock ([`tenants::enforce_pending_limit`]).
///
/// The destination's secrets are sealed with `keyring`'s current key before they are
/// written (stored as given when it is disabled).
///
/// With an idempotency key: the same key and body within 24 h returns the original job;
/// the same key with another body is a validation error. Two concurrent requests with one
/// key race on the unique index; the loser retries once and finds the winner's job.
pub async fn create(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    mut new: NewJob<'_>,
    idempotency: Option<Idempotency>,
    actor: &Actor,
    keyring: &Keyring,
) -> Result<Created> {
    new.destination = keyring.seal_destination(tenant_id, &new.destination);
    for attempt in 0..2 {
        let txn = PgTxn::begin(db).await?;
        if let Some(idem) = &idempotency
            && let Some(existing) = find_by_idempotency_key(&txn, tenant_id, &idem.key).await?
        {
            if existing.created_at > Utc::now() - Duration::hours(IDEMPOTENCY_WINDOW_HOURS) {
                return if existing.request_hash.as_deref() == Some(idem.fingerprint.as_str()) {
                    Ok(Created::Existing(existing))
                } else {
                    Err(Error::field(
                        "Idempotency-Key",
                        "was already used with a different request body",
                    ))
                };
            }
            release_idempotency_key(&txn, existing.id).await?;
        }
        match insert(
            &txn,
            tenant_id,
            &new,
            new.record_count,
            idempotency.as_ref(),
        )
        .await
        {
            Ok(job) => {
                if let Some(inline) = new.records {
                    stage_inline(&txn, &job, inline, new.max_record_bytes).await?;
                    batches::plan(&txn, &job).await?;
                    tenants::enforce_pending_limit(
                        &txn,
                        tenant_id,
                        "source.records",
                        job.total_records,
                    )
                    .await?;
                }
                audit::record(
                    &txn,
                    audit::NewEvent {
                        tenant_id: Some(tenant_id),
                        actor: actor.clone(),
                        action: audit::JOB_CREATED,
                        target_type: "job",
                        target_id: Some(job.id),
                        details: serde_json::json!({
                            "name": job.name,
                            "source": new.source.as_json()["type"],
                            "destination": new.destination.kind(),
                            "records": job.total_records,
                            "idempotency_key": idempotency.is_some(),
                        }),
                    },
                )
                .await?;
                txn.commit().await?;
                return Ok(Created::New(job));
            }
            Err(Error::Database(e))
                if attempt == 0 && is_unique_violation(&e, "jobs_idempotency_key_idx") =>
            {
                txn.rollback().await?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict(
        "a concurrent request with the same Idempotency-Key is still being processed".into(),
    ))
}

/// Stages a new job's inline records, numbered from 1, one chunk in memory at a time.
async fn stage_inline(
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
                chunk.map_err(|e| Error::Internal(format!("inline records: {}", e.message())))?;
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

async fn insert(
    txn: &impl ConnectionTrait,
    tenant_id: Uuid,
    new: &NewJob<'_>,
    total: i64,
    idempotency: Option<&Idempotency>,
) -> Result<job::Model> {
    let now = Utc::now();
    let model = job::ActiveModel {
        id: Set(Uuid::now_v7()),
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

async fn find_by_idempotency_key(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    key: &str,
) -> Result<Option<job::Model>> {
    Ok(job::Entity::find()
        .filter(job::Column::TenantId.eq(tenant_id))
        .filter(job::Column::IdempotencyKey.eq(key))
        .one(db)
        .await?)
}

/// Frees a key whose 24 h window has passed, so it can name a new job.
async fn release_idempotency_key(db: &impl ConnectionTrait, job_id: Uuid) -> Result<()> {
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
pub async fn get(db: &impl ConnectionTrait, tenant_id: Uuid, job_id: Uuid) -> Result<job::Model> {
    job::Entity::find_by_id(job_id)
        .filter(job::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or(Error::NotFound("job"))
}

/// The jobs with these ids, of any tenant, in no order: for readers that already know
/// whose they are (a watched or cached job view). Missing ids are left out.
pub async fn get_many(db: &impl ConnectionTrait, ids: &[Uuid]) -> Result<Vec<job::Model>> {
    Ok(job::Entity::find()
        .filter(job::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?)
}

/// The tenant's jobs, newest first (ids are UUID v7), optionally of one status.
pub async fn list(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
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
    Ok(page.finish(q.all(db).await?, |j| j.id))
}

/// Locks the tenant's job for the rest of `txn` (`SELECT … FOR UPDATE`): its start, its
/// cancel, and uploads in flight to it (see [`lock_for_upload`]) exclude each other.
pub async fn lock(txn: &impl ConnectionTrait, tenant_id: Uuid, job_id: Uuid) -> Result<job::Model> {
    locked(txn, tenant_id, job_id, LockType::Update).await
}

/// Locks the tenant's job for an upload, for the rest of `txn`: `FOR KEY SHARE`, which
/// other uploads to the job share (they number their records with
/// [`reserve_seqs`], not under this lock) and a start or cancel ([`lock`]) waits for.
pub async fn lock_for_upload(
    txn: &impl ConnectionTrait,
    tenant_id: Uuid,
    job_id: Uuid,
) -> Result<job::Model> {
    locked(txn, tenant_id, job_id, LockType::KeyShare).await
}

async fn locked(
    txn: &impl ConnectionTrait,
    tenant_id: Uuid,
    job_id: Uuid,
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
async fn reserve_seqs(db: &DatabaseConnection, job_id: Uuid, n: i64) -> Result<i64> {
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

/// What an upload added.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    /// Records this upload added.
    pub accepted: i64,
    /// The job's records once it commits, other uploads' included.
    pub total: i64,
}

/// Appends uploaded records to a job locked by [`lock_for_upload`] as `chunks` arrive,
/// numbering each chunk with [`reserve_seqs`] on `db`, and stops at the first chunk that
/// would take the job over `max_records`. Adds them to the job's total last, under the
/// job's row lock until `txn` ends (concurrent uploads take turns only there). On an
/// error the caller rolls `txn` back; the numbers reserved are given back first when
/// no other upload has reserved any since ([`Reserved::give_back`]), so a refused upload
/// leaves no gap unless uploads overlapped.
pub async fn append_records<E: From<Error>>(
    db: &DatabaseConnection,
    txn: &PgTxn,
    job: &job::Model,
    max_records: Option<i64>,
    chunks: impl Stream<Item = std::result::Result<Vec<Staged>, E>>,
) -> std::result::Result<Appended, E> {
    require_awaiting_upload(job, "records can be added")?;
    let mut total = job.total_records;
    let within_limit = chunks.map(move |chunk| {
        let chunk = chunk?;
        total += chunk.len() as i64;
        match max_records {
            Some(max) if total > max => Err(E::from(over_record_limit(max))),
            _ => Ok(chunk),
        }
    });
    let reserved = Arc::new(Mutex::new(Reserved::default()));
    let numbered = within_limit.then({
        let (db, reserved, job_id) = (db.clone(), reserved.clone(), job.id);
        move |chunk| {
            let (db, reserved) = (db.clone(), reserved.clone());
            async move {
                let records = chunk?;
                let n = records.len() as i64;
                if n == 0 {
                    return Ok(records::Numbered {
                        first_seq: 1,
                        records,
                    });
                }
                let first_seq = reserve_seqs(&db, job_id, n).await?;
                reserved.lock().expect("not poisoned").add(first_seq, n);
                Ok(records::Numbered { first_seq, records })
            }
        }
    });
    let appended = async {
        let accepted = records::stage(txn, job.tenant_id, job.id, numbered)
            .await
            .map_err(|e| match e {
                CopyError::Source(e) => e,
                CopyError::Database(e) => E::from(Error::from(e)),
            })? as i64;
        let total = add_to_total(txn, job.id, accepted, max_records).await?;
        Ok(Appended { accepted, total })
    }
    .await;
    if appended.is_err() {
        let reserved = *reserved.lock().expect("not poisoned");
        reserved.give_back(db, job.id).await;
    }
    appended
}

fn over_record_limit(max: i64) -> Error {
    Error::field(
        "records",
        format!("this tenant's jobs hold at most {max} records"),
    )
}

/// The sequence numbers one upload reserved.
#[derive(Debug, Default, Clone, Copy)]
struct Reserved {
    first: i64,
    last: i64,
    /// Every reservation followed the previous one directly (no other upload's between).
    contiguous: bool,
}

impl Reserved {
    /// Notes `n` (at least 1) numbers from `first`.
    fn add(&mut self, first: i64, n: i64) {
        if self.last == 0 {
            (self.first, self.contiguous) = (first, true);
        } else if first != self.last + 1 {
            self.contiguous = false;
        }
        self.last = first + n - 1;
    }

    /// Returns a failed upload's numbers to the job if they are the last handed out, so
    /// the next upload continues where the last one that succeeded ended.
    ///
    /// Guard: the upload's transaction must hold no row lock on the job beyond its
    /// `KEY SHARE` (true whenever [`add_to_total`] has not updated the row), or this
    /// statement, on another connection, would wait for a transaction that ends only
    /// after it. Best effort: a gap left behind costs nothing but a number.
    async fn give_back(self, db: &DatabaseConnection, job_id: Uuid) {
        if self.last == 0 || !self.contiguous {
            return;
        }
        let res = db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "UPDATE jobs SET last_reserved_seq = $2 WHERE id = $1 AND last_reserved_seq = $3",
                [job_id.into(), (self.first - 1).into(), self.last.into()],
            ))
            .await;
        if let Err(e) = res {
            tracing::warn!(%job_id, error = %e, "could not give back a failed upload's sequence numbers");
        }
    }
}

/// Adds an upload's records to the job's total and returns the new total, unless that
/// would exceed `max_records`: then the row is left alone (not even locked) and the
/// upload is refused.
async fn add_to_total(
    txn: &impl ConnectionTrait,
    job_id: Uuid,
    added: i64,
    max_records: Option<i64>,
) -> Result<i64> {
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
        (Some(row), _) => Ok(row.try_get("", "total_records")?),
        (None, Some(max)) => Err(over_record_limit(max)),
        (None, None) => Err(Error::NotFound("job")),
    }
}

/// Closes an upload: plans the batches and queues the job.
pub async fn start(db: &DatabaseConnection, tenant_id: Uuid, job_id: Uuid) -> Result<job::Model> {
    let txn = db.begin().await?;
    let job = lock(&txn, tenant_id, job_id).await?;
    require_awaiting_upload(&job, "a job can be started")?;
    if job.total_records == 0 {
        return Err(Error::field(
            "records",
            "upload at least one record before starting the job",
        ));
    }
    batches::plan(&txn, &job).await?;
    let mut active: job::ActiveModel = job.into();
    active.status = Set(JobStatus::Queued);
    active.updated_at = Set(Utc::now());
    let job = active.update(&txn).await?;
    txn.commit().await?;
    Ok(job)
}

/// What [`reseal_destinations`] did.
#[derive(Debug, Default)]
pub struct Resealed {
    /// Jobs read.
    pub scanned: u64,
    /// Jobs whose stored destination was rewritten.
    pub changed: u64,
    /// Jobs left as they were because a secret would not open: `(job id, why)`. The
    /// reason names a key id or a field, never a value.
    pub failed: Vec<(Uuid, String)>,
}

/// Re-seals every job's destination secrets with `keyring`'s current key (`freight secrets
/// rotate`), `batch_size` jobs at a time: values sealed with an old key, and plaintext
/// stored before a key was configured. Values already sealed with the current key are
/// left alone, so a second run changes nothing. A row is only rewritten if it still holds
/// what was read (nothing else changes a stored destination, but the check is free).
pub async fn reseal_destinations(
    db: &DatabaseConnection,
    keyring: &Keyring,
    batch_size: u64,
) -> Result<Resealed> {
    if !keyring.is_enabled() {
        return Err(Error::Internal(
            "FREIGHT_SECRET_KEY is not set: there is no key to seal with".into(),
        ));
    }
    let mut report = Resealed::default();
    let mut after = Uuid::nil();
    loop {
        let rows = db
            .query_all_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                "SELECT id, tenant_id, destination::text AS raw FROM jobs WHERE id > $1 ORDER BY id LIMIT $2",
                [after.into(), (batch_size.max(1) as i64).into()],
            ))
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("", "id")?;
        let (mut ids, mut olds, mut news) = (Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            report.scanned += 1;
            let id: Uuid = row.try_get("", "id")?;
            let tenant_id: Uuid = row.try_get("", "tenant_id")?;
            let raw: String = row.try_get("", "raw")?;
            let resealed = serde_json::from_str::<crate::domain::destination::Destination>(&raw)
                .map_err(|e| format!("the stored destination cannot be read: {e}"))
                .and_then(|d| {
                    keyring
                        .reseal_destination(tenant_id, &d)
                        .map(|new| (d, new))
                        .map_err(|e| e.to_string())
                });
            match resealed {
                Ok((old, new)) if old != new => {
                    ids.push(id);
                    olds.push(raw);
                    news.push(serde_json::to_string(&new).expect("serialisable"));
                }
                Ok(_) => {}
                Err(why) => report.failed.push((id, why)),
            }
        }
        if !ids.is_empty() {
            let result = db
                .execute_raw(sea_orm::Statement::from_sql_and_values(
                    sea_orm::DbBackend::Postgres,
                    "UPDATE jobs j SET destination = u.new::json
                     FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(id, old, new)
                     WHERE j.id = u.id AND j.destination::text = u.old",
                    [ids.into(), olds.into(), news.into()],
                ))
                .await?;
            report.changed += result.rows_affected();
        }
    }
    Ok(report)
}
