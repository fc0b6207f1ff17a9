//! Jobs from intake to cancel: create (with inline records), append uploaded records,
//! start, cancel, and an operator's cancel of everything a tenant runs.

use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use entity::{
    JobId, TenantId,
    job::{self, JobStatus},
    tenant,
};
use futures::{Stream, StreamExt};
use sea_orm::{ActiveEnum, DatabaseConnection, TransactionTrait};

use super::Services;
use crate::{
    connectors::network,
    domain::{
        audit::{self, Actor, NewEvent},
        job_spec::{CreateJobRequest, IDEMPOTENCY_WINDOW_HOURS, Idempotency, NewJob},
        record::Staged,
        tenant::default_retry,
    },
    error::{Error, FieldError, Result},
    metrics,
    store::{
        self, batches, cancellations, jobs,
        lifecycle::{self, CancelScope},
        pg_txn::{CopyError, PgTxn},
        records, tenants, windows,
    },
};

/// What [`Services::create_job`] did.
#[derive(Debug)]
pub struct Created {
    pub job: job::Model,
    /// False when an `Idempotency-Key` found the job it made before.
    pub new: bool,
}

/// What an upload added.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    /// Records this upload added.
    pub accepted: i64,
    /// The job's records once it commits, other uploads' included.
    pub total: i64,
}

/// What a cancel did.
#[derive(Debug)]
pub struct Cancelled {
    /// The job as it now stands: `cancelled`, or `cancelling` while batches stop.
    pub job: job::Model,
    /// False when the job was already cancelling (a repeated request).
    pub changed: bool,
}

impl Services {
    /// Creates a job from a tenant's request: validates it against the tenant's defaults
    /// and limits, checks the destination's network, stores the job with its inline
    /// records and batch plan, and admits it if the tenant has a free job slot.
    ///
    /// With an idempotency key: the same key and body within 24 h returns the original
    /// job; the same key with another body is a validation error.
    pub async fn create_job(
        &self,
        tenant_id: TenantId,
        request: CreateJobRequest<'_>,
        idempotency: Option<Idempotency>,
        actor: &Actor,
    ) -> Result<Created> {
        let tenant = self.tenant(tenant_id).await?;
        let new = request.validate(default_retry(&tenant), self.settings.http.max_record_bytes)?;
        if let Some(max) = tenant.max_records_per_job
            && new.record_count > max
        {
            return Err(over_record_limit("source.records", max));
        }
        network::check_destination(&new.destination, self.settings.allow_private_destinations)
            .await
            .map_err(|m| Error::field("destination.url", m))?;
        let created = self.store_job(tenant_id, new, idempotency, actor).await?;
        if created.new {
            metrics::job_created(tenant_id);
        }
        if created.job.status != JobStatus::Queued {
            return Ok(created);
        }
        self.admit(tenant_id).await?;
        Ok(Created {
            job: jobs::get(&self.db, tenant_id, created.job.id).await?,
            ..created
        })
    }

    /// Stores a job, its inline records, its batch plan and its `job.created` audit event
    /// in one transaction, its destination's secrets sealed with the current key. Two
    /// concurrent requests with one idempotency key race on the unique index; the loser
    /// tries once more and finds the winner's job.
    async fn store_job(
        &self,
        tenant_id: TenantId,
        mut new: NewJob<'_>,
        idempotency: Option<Idempotency>,
        actor: &Actor,
    ) -> Result<Created> {
        new.destination = new.destination.sealed(&self.settings.secrets, tenant_id);
        for attempt in 0..2 {
            let txn = PgTxn::begin(&self.db).await?;
            if let Some(idem) = &idempotency
                && let Some(job) = replay(&txn, tenant_id, idem).await?
            {
                return Ok(Created { job, new: false });
            }
            match write_job(&txn, tenant_id, &new, idempotency.as_ref(), actor).await {
                Ok(job) => {
                    txn.commit().await?;
                    return Ok(Created { job, new: true });
                }
                Err(Error::Database(e))
                    if attempt == 0
                        && store::is_unique_violation(&e, "jobs_idempotency_key_idx") =>
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

    /// Appends uploaded records to a job awaiting upload, all or nothing. `chunks` gets
    /// the job's `record_key` and returns the records, checked, in chunks; it is called
    /// before the upload waits for its turn, so parsing starts at once. Refused before a
    /// byte is read when the tenant has no room left, and before commit when the records
    /// would take the job past the tenant's `max_records_per_job` or the tenant past its
    /// `max_pending_records`.
    pub async fn append_records<E, S>(
        &self,
        tenant_id: TenantId,
        job_id: JobId,
        chunks: impl FnOnce(Option<String>) -> S,
    ) -> std::result::Result<Appended, E>
    where
        E: From<Error>,
        S: Stream<Item = std::result::Result<Vec<Staged>, E>>,
    {
        let tenant = self.tenant(tenant_id).await?;
        // Fails fast; the guarded check runs again before commit.
        if let Some(max) = tenant.max_pending_records
            && tenants::pending_records(&self.db, tenant_id).await? >= max
        {
            return Err(Error::OverQuota(FieldError::new(
                "records",
                format!(
                    "this tenant already has {max} or more records pending across its unfinished jobs, its limit; retry once running jobs have finished, or cancel some"
                ),
            ))
            .into());
        }
        // Unlocked: a job that takes no uploads fails before the body is read, and its
        // `record_key` never changes. The locked read below is the one that counts.
        let unlocked = jobs::get(&self.db, tenant_id, job_id).await?;
        require_awaiting_upload(&unlocked, "records can be added")?;
        let chunks = chunks(unlocked.record_key);
        let _turn = self.uploads.acquire().await.expect("never closed");
        let txn = PgTxn::begin(&self.db).await.map_err(Error::from)?;
        let job = jobs::lock_for_upload(&txn, tenant_id, job_id).await?;
        let appended =
            append_locked(&self.db, &txn, &job, tenant.max_records_per_job, chunks).await?;
        tenants::enforce_pending_limit(&txn, tenant_id, "records", appended.total).await?;
        txn.commit().await.map_err(Error::from)?;
        Ok(appended)
    }

    /// Closes an upload: plans the batches, queues the job, and admits it if the tenant
    /// has a free job slot. Returns the job as it now stands.
    pub async fn start_job(&self, tenant_id: TenantId, job_id: JobId) -> Result<job::Model> {
        let txn = self.db.begin().await?;
        let job = jobs::lock(&txn, tenant_id, job_id).await?;
        require_awaiting_upload(&job, "a job can be started")?;
        if job.total_records == 0 {
            return Err(Error::field(
                "records",
                "upload at least one record before starting the job",
            ));
        }
        batches::plan(&txn, &job).await?;
        jobs::set_queued(&txn, job).await?;
        txn.commit().await?;
        self.admit(tenant_id).await?;
        jobs::get(&self.db, tenant_id, job_id).await
    }

    /// Cancels a job: every batch not running is cancelled with its pending records (each
    /// gets a `cancelled` log row); the job is `cancelled` at once if no batch is running,
    /// else `cancelling` until the running ones stop. Workers hear of it at commit. A
    /// finished job is a conflict. The `job.cancelled` audit event is written in the same
    /// transaction (a repeated cancel writes none).
    pub async fn cancel_job(
        &self,
        tenant_id: TenantId,
        job_id: JobId,
        actor: &Actor,
    ) -> Result<Cancelled> {
        let txn = self.db.begin().await?;
        let job = jobs::lock(&txn, tenant_id, job_id).await?;
        match job.status {
            s if s.is_terminal() => {
                return Err(Error::Conflict(format!("job is already {}", s.to_value())));
            }
            JobStatus::Cancelling => {
                return Ok(Cancelled {
                    job,
                    changed: false,
                });
            }
            // Planned now, so every record is cancelled with a batch.
            JobStatus::AwaitingUpload if job.total_records > 0 => {
                batches::plan(&txn, &job).await?;
            }
            _ => {}
        }
        let (cancelled, was_retrying) =
            lifecycle::cancel_batches(&txn, job_id, tenant_id, CancelScope::Unstarted).await?;
        lifecycle::mark_cancelled(&txn, job_id, cancelled, was_retrying).await?;
        cancellations::announce(&txn, job_id).await?;
        let job = jobs::lock(&txn, tenant_id, job_id).await?;
        let details = serde_json::json!({
            "status": job.status.to_value(),
            "cancelled_records": cancelled,
        });
        let event = NewEvent::new(
            tenant_id,
            actor,
            audit::JOB_CANCELLED,
            "job",
            Some(job_id.into()),
            details,
        );
        store::audit::record(&txn, event).await?;
        let finished = job.status == JobStatus::Cancelled;
        // A slot freed up for the tenant's queued jobs.
        let to_dispatch = match finished {
            true => windows::admit(&txn, tenant_id).await?,
            false => Vec::new(),
        };
        txn.commit().await?;
        if finished {
            metrics::job_finished(tenant_id, "cancelled");
            ::metrics::histogram!(metrics::CANCEL_LATENCY).record(0.0);
        }
        self.dispatch(&to_dispatch).await;
        Ok(Cancelled { job, changed: true })
    }

    /// Cancels every unfinished job of a tenant (awaiting upload, queued or running): the
    /// operator's kill switch, beside suspension (which stops new work but keeps the
    /// jobs). Jobs that finish meanwhile are left out.
    pub async fn cancel_all_jobs(&self, tenant_id: TenantId) -> Result<Vec<Cancelled>> {
        self.tenant(tenant_id).await?;
        let mut done = Vec::new();
        for job_id in lifecycle::unfinished_jobs(&self.db, tenant_id).await? {
            match self.cancel_job(tenant_id, job_id, &Actor::Operator).await {
                Ok(cancelled) => done.push(cancelled),
                Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// The tenant, or not found.
    pub(super) async fn tenant(&self, tenant_id: TenantId) -> Result<tenant::Model> {
        tenants::get(&self.db, tenant_id)
            .await?
            .ok_or(Error::NotFound("tenant"))
    }
}

/// The job an idempotency key made within its window, or a validation error if the key
/// came with another body. A key whose window has passed is freed to name a new job.
async fn replay(
    txn: &PgTxn,
    tenant_id: TenantId,
    idem: &Idempotency,
) -> Result<Option<job::Model>> {
    let Some(existing) = jobs::find_by_idempotency_key(txn, tenant_id, &idem.key).await? else {
        return Ok(None);
    };
    if existing.created_at <= Utc::now() - Duration::hours(IDEMPOTENCY_WINDOW_HOURS) {
        jobs::release_idempotency_key(txn, existing.id).await?;
        return Ok(None);
    }
    if existing.request_hash.as_deref() == Some(idem.fingerprint.as_str()) {
        Ok(Some(existing))
    } else {
        Err(Error::field(
            "Idempotency-Key",
            "was already used with a different request body",
        ))
    }
}

/// The job row, its inline records and batch plan (checked against the tenant's pending
/// limit last, under the tenant row's lock) and its audit event.
async fn write_job(
    txn: &PgTxn,
    tenant_id: TenantId,
    new: &NewJob<'_>,
    idempotency: Option<&Idempotency>,
    actor: &Actor,
) -> Result<job::Model> {
    let job = jobs::insert(txn, tenant_id, new, new.record_count, idempotency).await?;
    if let Some(inline) = new.records {
        jobs::stage_inline(txn, &job, inline, new.max_record_bytes).await?;
        batches::plan(txn, &job).await?;
        tenants::enforce_pending_limit(txn, tenant_id, "source.records", job.total_records).await?;
    }
    let details = serde_json::json!({
        "name": job.name,
        "source": new.source.as_json()["type"],
        "destination": new.destination.kind(),
        "records": job.total_records,
        "idempotency_key": idempotency.is_some(),
    });
    let event = NewEvent::new(
        tenant_id,
        actor,
        audit::JOB_CREATED,
        "job",
        Some(job.id.into()),
        details,
    );
    store::audit::record(txn, event).await?;
    Ok(job)
}

/// Appends `chunks` to a job locked by `jobs::lock_for_upload`, numbering each chunk as
/// it comes with `jobs::reserve_seqs` on `db` (not under the upload's lock, so uploads
/// to one job overlap), and stops at the first chunk that would take the job over
/// `max_records`. Adds the records to the job's total last, under the job's row lock
/// until `txn` ends. On an error the caller rolls `txn` back; the numbers reserved are
/// given back first when no other upload reserved any since, so a refused upload leaves
/// no gap unless uploads overlapped.
async fn append_locked<E: From<Error>>(
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
            Some(max) if total > max => Err(E::from(over_record_limit("records", max))),
            _ => Ok(chunk),
        }
    });
    let reserved = Arc::new(Mutex::new(Reserved::default()));
    let numbered = within_limit.then({
        let (db, reserved, job_id) = (db.clone(), reserved.clone(), job.id);
        move |chunk| {
            let (db, reserved) = (db.clone(), reserved.clone());
            async move {
                number(&db, &reserved, job_id, chunk?)
                    .await
                    .map_err(E::from)
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
        let total = jobs::add_to_total(txn, job.id, accepted, max_records)
            .await?
            .ok_or_else(|| over_record_limit("records", max_records.unwrap_or_default()))?;
        Ok(Appended { accepted, total })
    }
    .await;
    if appended.is_err() {
        let reserved = *reserved.lock().expect("not poisoned");
        if let Some((first, last)) = reserved.to_give_back() {
            jobs::give_back_seqs(db, job.id, first, last).await;
        }
    }
    appended
}

/// Numbers a chunk of records: reserves its sequence numbers and notes them.
async fn number(
    db: &DatabaseConnection,
    reserved: &Mutex<Reserved>,
    job_id: JobId,
    records: Vec<Staged>,
) -> Result<records::Numbered> {
    let n = records.len() as i64;
    if n == 0 {
        return Ok(records::Numbered {
            first_seq: 1,
            records,
        });
    }
    let first_seq = jobs::reserve_seqs(db, job_id, n).await?;
    reserved.lock().expect("not poisoned").add(first_seq, n);
    Ok(records::Numbered { first_seq, records })
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

    /// The range a failed upload may give back: only numbers reserved in one run.
    fn to_give_back(self) -> Option<(i64, i64)> {
        (self.last != 0 && self.contiguous).then_some((self.first, self.last))
    }
}

fn require_awaiting_upload(job: &job::Model, action: &str) -> Result<()> {
    if job.status == JobStatus::AwaitingUpload {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "job is {}; {action} only while it is awaiting_upload",
        job.status.to_value()
    )))
}

fn over_record_limit(field: &str, max: i64) -> Error {
    Error::field(
        field,
        format!("this tenant's jobs hold at most {max} records"),
    )
}
