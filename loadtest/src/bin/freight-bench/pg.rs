//! Postgres for the bench: the destination database, destination tables, and the COPY
//! baselines into tables shaped like Freight's own.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
use uuid::Uuid;

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Runs one or more statements (DDL, no parameters).
pub async fn exec(conn: &mut PgConnection, sql: String) -> Result<()> {
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await?;
    Ok(())
}

pub async fn connect(url: &str) -> Result<PgConnection> {
    PgConnection::connect(url)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Creates database `db` on the server if it is missing.
pub async fn ensure_database(server_url: &str, db: &str) -> Result<()> {
    let mut conn = connect(server_url).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(db)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        exec(&mut conn, format!("CREATE DATABASE \"{db}\""))
            .await
            .with_context(|| format!("creating database {db}"))?;
    }
    Ok(())
}

/// The destination table of the generated records (see `records.rs`), dropped and created.
pub async fn recreate_dest_table(conn: &mut PgConnection, table: &str) -> Result<()> {
    exec(
        conn,
        format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (id bigint PRIMARY KEY, name text, email text,
                                   amount numeric, created_at timestamptz)"
        ),
    )
    .await
    .with_context(|| format!("creating table {table}"))?;
    Ok(())
}

pub async fn count_rows(conn: &mut PgConnection, table: &str) -> Result<i64> {
    Ok(
        sqlx::query(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(conn)
            .await?
            .get(0),
    )
}

/// COPY `data` (in the statement's format) in 1 MiB pieces; returns the rows copied.
pub async fn copy_in(conn: &mut PgConnection, statement: &str, data: &[u8]) -> Result<u64> {
    let mut copy = conn
        .copy_in_raw(statement)
        .await
        .with_context(|| statement.to_owned())?;
    for piece in data.chunks(1 << 20) {
        copy.send(piece).await?;
    }
    Ok(copy.finish().await?)
}

/// The static shape of Freight's `record_logs` and `job_records`
/// (migration/src/m20261122_000001_initial.rs), used when Freight's database cannot be
/// read; constraints and indexes are otherwise copied from it (see [`mirror`]).
const LOG_COLUMNS: &str = "
    id          bigint GENERATED ALWAYS AS IDENTITY,
    job_id      uuid NOT NULL,
    tenant_id   uuid NOT NULL,
    batch_id    uuid NOT NULL,
    record_seq  bigint NOT NULL,
    attempt     integer NOT NULL,
    status      text NOT NULL,
    error       text,
    duration_ms integer,
    created_at  timestamptz NOT NULL DEFAULT now()";
const LOG_STATIC: &[&str] = &[
    "CHECK (attempt >= 0)",
    "CHECK (status IN ('succeeded', 'failed', 'dead_lettered', 'cancelled'))",
    "FOREIGN KEY (job_id, tenant_id) REFERENCES jobs (id, tenant_id) ON DELETE CASCADE",
];
const LOG_INDEXES: &[&str] = &[
    "CREATE UNIQUE INDEX record_logs_pkey ON record_logs (id)",
    "CREATE INDEX record_logs_job_idx ON record_logs (job_id, id)",
    "CREATE INDEX record_logs_job_record_idx ON record_logs (job_id, record_seq, id)",
];

/// The columns of Freight's `job_records` (the payload is `json` since migration 000005:
/// the baseline pays the same parsing Freight does).
const RECORDS_COLUMNS: &str = "
    job_id     uuid NOT NULL,
    seq        bigint NOT NULL,
    tenant_id  uuid NOT NULL,
    record_key text,
    payload    json NOT NULL,
    status     text NOT NULL DEFAULT 'pending',
    attempts   integer NOT NULL DEFAULT 0,
    last_error text";
const RECORDS_STATIC: &[&str] = &[
    "CHECK (seq >= 1)",
    "CHECK (status IN ('pending', 'succeeded', 'dead_lettered', 'cancelled'))",
    "CHECK (attempts >= 0)",
    "FOREIGN KEY (job_id, tenant_id) REFERENCES jobs (id, tenant_id) ON DELETE CASCADE",
];
const RECORDS_INDEXES: &[&str] =
    &["CREATE UNIQUE INDEX job_records_pkey ON job_records (job_id, seq)"];

/// Which of Freight's tables a baseline table copies.
#[derive(Clone, Copy)]
pub enum Shape {
    RecordLogs,
    JobRecords,
}

impl Shape {
    fn source(self) -> &'static str {
        match self {
            Shape::RecordLogs => "record_logs",
            Shape::JobRecords => "job_records",
        }
    }
}

/// Where a baseline table's constraints and indexes came from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Mirrored {
    pub table: String,
    pub from: String,
    pub constraints: Vec<String>,
    pub indexes: Vec<String>,
}

/// Creates `target` (dropped first) in `conn`'s database shaped like Freight's table:
/// the columns as in the migration; the CHECK and FOREIGN KEY constraints and every
/// index (the primary key's included, as a unique index) read from Freight's database
/// when `freight` is given, else the static definition. Foreign keys to `jobs` point at
/// a one-row `bench_jobs`, holding (`job`, `tenant`), so their checks cost what they
/// cost in Freight.
pub async fn mirror(
    conn: &mut PgConnection,
    freight: Option<&mut PgConnection>,
    shape: Shape,
    target: &str,
    job: Uuid,
    tenant: Uuid,
) -> Result<Mirrored> {
    let source = shape.source();
    let (constraints, indexes, from) = match freight {
        Some(f) => {
            let constraints: Vec<String> = sqlx::query_scalar(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint
                 WHERE conrelid = $1::regclass AND contype IN ('c', 'f') ORDER BY conname",
            )
            .bind(source)
            .fetch_all(&mut *f)
            .await
            .with_context(|| format!("reading {source}'s constraints"))?;
            let indexes: Vec<String> = sqlx::query_scalar(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1
                 ORDER BY indexname",
            )
            .bind(source)
            .fetch_all(&mut *f)
            .await
            .with_context(|| format!("reading {source}'s indexes"))?;
            (
                constraints,
                indexes,
                "freight database (pg_constraint, pg_indexes)",
            )
        }
        None => {
            let (c, i) = match shape {
                Shape::RecordLogs => (LOG_STATIC, LOG_INDEXES),
                Shape::JobRecords => (RECORDS_STATIC, RECORDS_INDEXES),
            };
            (
                c.iter().map(|s| s.to_string()).collect(),
                i.iter().map(|s| s.to_string()).collect(),
                "static definition (pass --freight-database-url to read Freight's)",
            )
        }
    };
    let columns = match shape {
        Shape::RecordLogs => LOG_COLUMNS,
        Shape::JobRecords => RECORDS_COLUMNS,
    };
    exec(
        conn,
        format!(
            "CREATE TABLE IF NOT EXISTS bench_jobs (id uuid PRIMARY KEY, tenant_id uuid NOT NULL,
                                                   UNIQUE (id, tenant_id));
             DROP TABLE IF EXISTS {target};
             CREATE TABLE {target} ({columns})"
        ),
    )
    .await?;
    sqlx::query("INSERT INTO bench_jobs (id, tenant_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(job)
        .bind(tenant)
        .execute(&mut *conn)
        .await?;
    let mut applied_constraints = Vec::new();
    for c in &constraints {
        if c.starts_with("FOREIGN KEY") && !references_jobs(c) {
            continue; // only `jobs` has a stand-in here
        }
        let def = c
            .replace("REFERENCES jobs(", "REFERENCES bench_jobs(")
            .replace("REFERENCES jobs (", "REFERENCES bench_jobs (");
        exec(conn, format!("ALTER TABLE {target} ADD {def}"))
            .await
            .with_context(|| format!("adding `{def}` to {target}"))?;
        applied_constraints.push(def);
    }
    let mut applied_indexes = Vec::new();
    for def in &indexes {
        let def = retarget_index(def, source, target);
        exec(conn, def.clone())
            .await
            .with_context(|| format!("creating `{def}`"))?;
        applied_indexes.push(def);
    }
    Ok(Mirrored {
        table: target.to_owned(),
        from: from.to_owned(),
        constraints: applied_constraints,
        indexes: applied_indexes,
    })
}

fn references_jobs(c: &str) -> bool {
    c.contains("REFERENCES jobs(") || c.contains("REFERENCES jobs (")
}

/// `CREATE [UNIQUE] INDEX name ON [public.]source USING ...` → the same on `target`,
/// with the index renamed `target__name`.
fn retarget_index(def: &str, source: &str, target: &str) -> String {
    let Some(on) = def.find(" ON ") else {
        return def.to_owned();
    };
    let head = &def[..on];
    let rest = &def[on + 4..];
    let name_start = head.rfind(' ').map(|i| i + 1).unwrap_or(0);
    let name = &head[name_start..];
    let rest = rest
        .strip_prefix("ONLY ")
        .unwrap_or(rest)
        .trim_start_matches("public.");
    let rest = rest.strip_prefix(source).unwrap_or(rest);
    format!("{}{target}__{name} ON {target}{rest}", &head[..name_start])
}

/// Times a closure-like future and returns (result, seconds).
pub async fn timed<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<(T, Duration)> {
    let t = Instant::now();
    let v = f.await?;
    Ok((v, t.elapsed()))
}

/// Lets the server finish what the last scenario left it: a checkpoint now, rather than
/// one spread over the next scenario's measurement, and every autovacuum worker done (at
/// most `limit`), then the kernel's dirty pages written. Returns how long that took.
pub async fn settle(server_url: &str, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut conn = connect(server_url).await?;
    exec(&mut conn, "CHECKPOINT".into()).await?;
    while started.elapsed() < limit {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'",
        )
        .fetch_one(&mut conn)
        .await?;
        if busy == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::task::spawn_blocking(|| std::process::Command::new("sync").status())
        .await?
        .context("running sync")?;
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_indexes() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
        assert_eq!(
            retarget_index(
                "CREATE INDEX record_logs_job_idx ON public.record_logs USING btree (job_id, id)",
                "record_logs",
                "bench_log"
            ),
            "CREATE INDEX bench_log__record_logs_job_idx ON bench_log USING btree (job_id, id)"
        );
        assert_eq!(
            retarget_index(
                "CREATE UNIQUE INDEX record_logs_pkey ON record_logs (id)",
                "record_logs",
                "bench_log"
            ),
            "CREATE UNIQUE INDEX bench_log__record_logs_pkey ON bench_log (id)"
        );
    }
}
