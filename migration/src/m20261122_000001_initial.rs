//! The initial schema. Written as SQL because its substance is constraints:
//! state columns limited to their states by CHECK, every tenant-owned row tied to its
//! job *and* tenant by one composite foreign key (so a row can never claim another
//! tenant's job), and the partial indexes the dispatcher and reconciler scan.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE tenants (
    id                    uuid PRIMARY KEY,
    name                  text NOT NULL CONSTRAINT tenants_name_key UNIQUE,
    status                text NOT NULL DEFAULT 'active'
                          CHECK (status IN ('active', 'suspended')),
    max_concurrent_jobs   integer NOT NULL DEFAULT 10 CHECK (max_concurrent_jobs BETWEEN 1 AND 10000),
    rate_limit_per_second integer NOT NULL DEFAULT 100 CHECK (rate_limit_per_second BETWEEN 1 AND 1000000),
    rate_limit_burst      integer NOT NULL DEFAULT 200 CHECK (rate_limit_burst BETWEEN 1 AND 1000000),
    max_records_per_job   bigint CHECK (max_records_per_job > 0),
    retry_policy          jsonb,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text,
    public_id    text NOT NULL CONSTRAINT api_keys_public_id_key UNIQUE,
    secret_hash  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, created_at DESC);
-- Every api replica polls this for recent revocations (revocation within 5 s).
CREATE INDEX api_keys_revoked_idx ON api_keys (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE jobs (
    id                    uuid PRIMARY KEY,          -- UUID v7: time-ordered, so id order is creation order
    tenant_id             uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name                  text,
    status                text NOT NULL CHECK (status IN (
                              'awaiting_upload', 'queued', 'running', 'completed',
                              'completed_with_errors', 'failed', 'cancelling', 'cancelled')),
    source                jsonb NOT NULL CHECK (source->>'type' IN ('inline', 'upload')),
    destination           jsonb NOT NULL,
    record_key            text,
    batch_size            integer NOT NULL CHECK (batch_size BETWEEN 1 AND 10000),
    parallelism           integer NOT NULL CHECK (parallelism BETWEEN 1 AND 64),
    retry_policy          jsonb NOT NULL,
    idempotency_key       text,
    request_hash          text,
    total_records         bigint NOT NULL DEFAULT 0 CHECK (total_records >= 0),
    succeeded_records     bigint NOT NULL DEFAULT 0 CHECK (succeeded_records >= 0),
    dead_lettered_records bigint NOT NULL DEFAULT 0 CHECK (dead_lettered_records >= 0),
    cancelled_records     bigint NOT NULL DEFAULT 0 CHECK (cancelled_records >= 0),
    retrying_records      bigint NOT NULL DEFAULT 0 CHECK (retrying_records >= 0),
    error                 text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    started_at            timestamptz,
    finished_at           timestamptz,
    cancel_requested_at   timestamptz,
    -- pending = total - succeeded - dead_lettered - cancelled can never go negative.
    CONSTRAINT jobs_progress_sums CHECK (
        succeeded_records + dead_lettered_records + cancelled_records <= total_records),
    CONSTRAINT jobs_id_tenant_key UNIQUE (id, tenant_id)
);
CREATE UNIQUE INDEX jobs_idempotency_key_idx ON jobs (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_tenant_list_idx ON jobs (tenant_id, id DESC);
CREATE INDEX jobs_tenant_status_list_idx ON jobs (tenant_id, status, id DESC);
CREATE INDEX jobs_active_idx ON jobs (tenant_id, status)
    WHERE status IN ('queued', 'running', 'cancelling');

CREATE TABLE job_records (
    job_id     uuid NOT NULL,
    seq        bigint NOT NULL CHECK (seq >= 1),
    tenant_id  uuid NOT NULL,
    record_key text,
    payload    jsonb NOT NULL,
    status     text NOT NULL DEFAULT 'pending'
               CHECK (status IN ('pending', 'succeeded', 'dead_lettered', 'cancelled')),
    attempts   integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error text,
    PRIMARY KEY (job_id, seq),
    FOREIGN KEY (job_id, tenant_id) REFERENCES jobs (id, tenant_id) ON DELETE CASCADE
);

CREATE TABLE batches (
    id               uuid PRIMARY KEY,
    job_id           uuid NOT NULL,
    tenant_id        uuid NOT NULL,
    seq              integer NOT NULL CHECK (seq >= 1),
    first_record_seq bigint NOT NULL,
    last_record_seq  bigint NOT NULL,
    record_count     integer NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN (
                         'pending', 'queued', 'running', 'retry_scheduled',
                         'succeeded', 'failed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz,
    dispatched_at    timestamptz,
    worker_id        text,
    heartbeat_at     timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    CONSTRAINT batches_range CHECK (
        first_record_seq >= 1 AND last_record_seq >= first_record_seq
        AND record_count = last_record_seq - first_record_seq + 1),
    CONSTRAINT batches_job_seq_key UNIQUE (job_id, seq),
    FOREIGN KEY (job_id, tenant_id) REFERENCES jobs (id, tenant_id) ON DELETE CASCADE
);
CREATE INDEX batches_job_status_idx ON batches (job_id, status, seq);
-- The reconciler's scans: overdue dispatches and expired heartbeats.
CREATE INDEX batches_due_idx ON batches (next_attempt_at)
    WHERE status IN ('queued', 'retry_scheduled');
CREATE INDEX batches_running_idx ON batches (heartbeat_at) WHERE status = 'running';

CREATE TABLE record_logs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      uuid NOT NULL,
    tenant_id   uuid NOT NULL,
    batch_id    uuid NOT NULL,
    record_seq  bigint NOT NULL,
    attempt     integer NOT NULL CHECK (attempt >= 1),
    status      text NOT NULL CHECK (status IN ('succeeded', 'failed', 'dead_lettered', 'cancelled')),
    error       text,
    duration_ms integer,
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (job_id, tenant_id) REFERENCES jobs (id, tenant_id) ON DELETE CASCADE
);
CREATE INDEX record_logs_job_idx ON record_logs (job_id, id);
CREATE INDEX record_logs_job_record_idx ON record_logs (job_id, record_seq, id);

CREATE TABLE dead_letters (
    id            uuid PRIMARY KEY,
    job_id        uuid NOT NULL,
    tenant_id     uuid NOT NULL,
    batch_id      uuid NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    record_seq    bigint NOT NULL,
    error         text NOT NULL,
    attempts      integer NOT NULL CHECK (attempts >= 1),
    created_at    timestamptz NOT NULL DEFAULT now(),
    requeued_at   timestamptz,
    requeue_count integer NOT NULL DEFAULT 0,
    FOREIGN KEY (job_id, tenant_id) REFERENCES jobs (id, tenant_id) ON DELETE CASCADE,
    FOREIGN KEY (job_id, record_seq) REFERENCES job_records (job_id, seq) ON DELETE CASCADE
);
CREATE INDEX dead_letters_job_idx ON dead_letters (job_id, id);
CREATE INDEX dead_letters_open_idx ON dead_letters (tenant_id, job_id) WHERE requeued_at IS NULL;

CREATE TABLE workers (
    id                text PRIMARY KEY,
    host              text NOT NULL,
    pid               integer NOT NULL,
    queue             text NOT NULL,
    concurrency       integer NOT NULL CHECK (concurrency >= 1),
    version           text NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at        timestamptz
);
CREATE INDEX workers_live_idx ON workers (last_heartbeat_at) WHERE stopped_at IS NULL;
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS workers, dead_letters, record_logs, batches, job_records, jobs, api_keys, tenants;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(UP)
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(DOWN)
            .await
            .map(|_| ())
    }
}
