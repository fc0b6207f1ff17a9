//! The Postgres destination: each record's top-level fields map to columns of the same
//! name, and a batch is written with ONE statement:
//!
//! ```sql
//! INSERT INTO t (a, b) SELECT r.a, r.b FROM jsonb_populate_recordset(NULL::t, $1::jsonb) AS r
//!   [ON CONFLICT (key) DO UPDATE SET b = EXCLUDED.b]
//! ```
//!
//! In `insert` mode, when every column the batch uses has a plain scalar type (not json,
//! jsonb, an array, a composite or a domain) and every field is a JSON scalar, the batch
//! first goes as one `COPY … FROM
//! STDIN` instead: the same values through the same type input functions, at about a
//! third of the statement's cost. Any error sends the batch down the statement path
//! below, which classifies it record by record.
//!
//! When the statement fails because of the data (classes 21, 22, 23, 42, P0, 44), the
//! failing set is split in halves, each retried as its own statement, recursively, so that
//! only the records that fail alone are permanent and the rest of the batch lands.
//!
//! One pool per destination URL, created lazily and kept while it is used; the table's
//! columns are read once per pool and table (and again when a record names a column the
//! cache does not know).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use entity::JobId;
use futures::{FutureExt, future::BoxFuture};
use sea_orm::sqlx::{
    self, ConnectOptions, Executor,
    postgres::{PgConnectOptions, PgConnection, PgDatabaseError, PgPool, PgPoolOptions, PgSslMode},
};

use super::{
    Connector, INTERRUPTED, Outcome, RecordResult, RecordToDeliver, Stop,
    fields::{Fields, Scalar},
    resolver::{self, ResolveError},
};
use crate::{
    domain::{
        destination::{PostgresDestination, WriteMode},
        postgres_url::{PostgresUrl, SslMode},
    },
    pg_copy,
};

/// Pool settings for destination databases.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connections per destination URL.
    pub max_connections: u32,
    /// How long a batch waits for a connection (connecting included) before its records
    /// count as transient failures.
    pub acquire_timeout: Duration,
    /// Idle connections are closed after this long.
    pub idle_timeout: Duration,
    /// A destination statement running longer than this is cancelled (transient).
    pub statement_timeout: Duration,
    /// A pool unused for this long is closed and forgotten.
    pub pool_ttl: Duration,
    /// When private destinations are refused, a pool is rebuilt (its host resolved and
    /// checked again) after this long, so that it follows DNS changes.
    pub re_resolve_after: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 4,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            statement_timeout: Duration::from_secs(60),
            pool_ttl: Duration::from_secs(10 * 60),
            re_resolve_after: Duration::from_secs(5 * 60),
        }
    }
}

/// One pool per destination URL, shared by every Postgres destination of a worker.
#[derive(Clone)]
pub struct PoolCache {
    inner: Arc<CacheInner>,
}

struct CacheInner {
    allow_private: bool,
    settings: PoolSettings,
    pools: Mutex<HashMap<String, Arc<PoolEntry>>>,
}

struct PoolEntry {
    pool: PgPool,
    created: Instant,
    last_used: Mutex<Instant>,
    /// Columns of each table written through this pool, keyed by the spec's table name.
    columns: Mutex<HashMap<String, Arc<TableColumns>>>,
}

/// A table's columns, in table order.
#[derive(Debug)]
struct TableColumns {
    names: Vec<String>,
    set: HashSet<String>,
    /// Columns whose type reads a JSON scalar's text the way `jsonb_populate_recordset`
    /// does (base and enum types other than json, jsonb and arrays), so `COPY` may fill them.
    copyable: HashSet<String>,
}

impl TableColumns {
    fn new(names: Vec<String>, copyable: Vec<String>) -> Self {
        let set = names.iter().cloned().collect();
        Self {
            names,
            set,
            copyable: copyable.into_iter().collect(),
        }
    }
}

impl PoolCache {
    pub fn new(allow_private: bool) -> Self {
        Self::with_settings(allow_private, PoolSettings::default())
    }

    pub fn with_settings(allow_private: bool, settings: PoolSettings) -> Self {
        Self {
            inner: Arc::new(CacheInner {
                allow_private,
                settings,
                pools: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The connector for one destination. Cheap: pools are created on first delivery.
    pub fn connector(&self, spec: PostgresDestination) -> PostgresConnector {
        PostgresConnector {
            cache: self.clone(),
            target: Arc::new(Target::new(&spec)),
            spec,
        }
    }

    /// How many destination pools are open.
    pub fn pool_count(&self) -> usize {
        self.inner.pools.lock().expect("pool map poisoned").len()
    }

    /// Closes every pool (at shutdown).
    pub async fn close(&self) {
        let pools: Vec<_> = self
            .inner
            .pools
            .lock()
            .expect("pool map poisoned")
            .drain()
            .map(|(_, entry)| entry)
            .collect();
        for entry in pools {
            entry.pool.close().await;
        }
    }

    /// The pool for `url`, creating it (and checking its address) when needed.
    async fn entry(&self, url: &str) -> Result<Arc<PoolEntry>, BatchFailure> {
        let settings = &self.inner.settings;
        {
            let mut pools = self.inner.pools.lock().expect("pool map poisoned");
            let now = Instant::now();
            // Forget pools nobody used for a while.
            pools.retain(|_, entry| {
                let idle = now.duration_since(*entry.last_used.lock().expect("poisoned"));
                let keep = idle < settings.pool_ttl;
                if !keep {
                    close_in_background(entry.pool.clone());
                }
                keep
            });
            if let Some(entry) = pools.get(url) {
                let fresh = self.inner.allow_private
                    || now.duration_since(entry.created) < settings.re_resolve_after;
                if fresh {
                    *entry.last_used.lock().expect("poisoned") = now;
                    return Ok(entry.clone());
                }
            }
        }
        let (options, connect_timeout) = self.connect_options(url).await?;
        // A session setting rather than a startup parameter: PgBouncer refuses `options`.
        let set_timeout = format!(
            "SET statement_timeout = {}",
            settings.statement_timeout.as_millis()
        );
        let pool = PgPoolOptions::new()
            .after_connect(move |conn, _meta| {
                let sql = set_timeout.clone();
                Box::pin(async move {
                    conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                    Ok(())
                })
            })
            .max_connections(settings.max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(connect_timeout.map_or(settings.acquire_timeout, |t| {
                t.min(settings.acquire_timeout)
            }))
            .idle_timeout(settings.idle_timeout)
            .max_lifetime(Duration::from_secs(30 * 60))
            .connect_lazy_with(options);
        let now = Instant::now();
        let entry = Arc::new(PoolEntry {
            pool,
            created: now,
            last_used: Mutex::new(now),
            columns: Mutex::new(HashMap::new()),
        });
        let mut pools = self.inner.pools.lock().expect("pool map poisoned");
        match pools.get(url) {
            // Another batch created a fresh one meanwhile: use it, drop ours (it never
            // connected).
            Some(existing)
                if self.inner.allow_private
                    || now.duration_since(existing.created) < settings.re_resolve_after =>
            {
                Ok(existing.clone())
            }
            _ => {
                if let Some(old) = pools.insert(url.to_owned(), entry.clone()) {
                    close_in_background(old.pool.clone());
                }
                Ok(entry)
            }
        }
    }

    /// Connection options for a destination URL, built field by field from its checked
    /// parts ([`PostgresUrl`]) rather than by sqlx's own URL parser, which honours
    /// `hostaddr`, `options` and friends. Every field sqlx would otherwise fill from the
    /// worker's `PG*` environment is set here; the ones that cannot be (`PGSSLCERT`,
    /// `PGOPTIONS`, ...) stop the process at start ([`crate::config`]). When private
    /// destinations are refused, the host is resolved and checked here and the pool dials
    /// the checked address (`hostaddr`), while the name stays the host, so `verify-full`
    /// still checks the certificate against it.
    /// The second value is the URL's `connect_timeout`, if any.
    async fn connect_options(
        &self,
        url: &str,
    ) -> Result<(PgConnectOptions, Option<Duration>), BatchFailure> {
        let pg = PostgresUrl::parse(url)
            .map_err(|e| BatchFailure::Permanent(format!("the destination URL is refused: {e}")))?;
        let dial = if self.inner.allow_private {
            pg.host_ip()
        } else {
            let addrs =
                resolver::resolve_checked(&pg.host, pg.port)
                    .await
                    .map_err(|e| match e {
                        ResolveError::Forbidden(forbidden) => {
                            BatchFailure::Permanent(forbidden.to_string())
                        }
                        ResolveError::Lookup(message) => BatchFailure::Transient(message),
                    })?;
            Some(addrs[0].ip())
        };
        Ok((options_for(&pg, dial), pg.connect_timeout))
    }
}

/// The options of a connection to `pg`, dialling `dial` when given (else whatever the
/// host resolves to), with the host's name kept for TLS: `verify-full` checks the
/// certificate against the name while the socket goes to the checked address.
fn options_for(pg: &PostgresUrl, dial: Option<std::net::IpAddr>) -> PgConnectOptions {
    let options = PgConnectOptions::new_without_pgpass()
        .host(&pg.host)
        .port(pg.port)
        .username(&pg.user)
        // Only a password written in the URL is sent, never the worker's own.
        .password(pg.password.as_deref().unwrap_or(""))
        .database(&pg.database)
        .ssl_mode(match pg.ssl_mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Allow => PgSslMode::Allow,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        })
        .application_name(pg.application_name.as_deref().unwrap_or("freight"))
        .disable_statement_logging();
    match dial {
        Some(ip) => options.hostaddr(ip),
        None => options,
    }
}

/// How much longer than its own `statement_timeout` a destination has to answer.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// Runs `op` on a connection of `pool`, giving up after `limit`, or when `stop`
/// interrupts the batch. A destination that accepts a statement and never answers (a
/// tarpit, a dead network path) would otherwise hold a worker slot for ever; the
/// connection given up on is in the middle of a statement, so it is closed rather than
/// returned to the pool (whose release check would wait on the same silence), and the
/// server rolls the statement back.
async fn on_connection<T>(
    pool: &PgPool,
    limit: Duration,
    stop: &Stop,
    op: impl for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    let interrupted = || gave_up(std::io::ErrorKind::Interrupted, INTERRUPTED.into());
    let mut conn = tokio::select! {
        conn = pool.acquire() => conn?,
        _ = stop.interrupt.cancelled() => return Err(interrupted()),
    };
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(limit, op(&mut conn)) => outcome.map_err(|_| {
            gave_up(
                std::io::ErrorKind::TimedOut,
                format!("the destination did not answer within {} s", limit.as_secs()),
            )
        }),
        _ = stop.interrupt.cancelled() => Err(interrupted()),
    };
    match outcome {
        Ok(result) => result,
        Err(e) => {
            drop(conn.detach());
            Err(e)
        }
    }
}

fn gave_up(kind: std::io::ErrorKind, message: String) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(kind, message))
}

/// Whether `err` is [`on_connection`] giving up on a silent or interrupted destination.
fn is_no_answer(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Io(e)
        if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted))
}

fn close_in_background(pool: PgPool) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move { pool.close().await });
    }
}

/// A failure of the whole batch before any statement ran.
#[derive(Debug)]
enum BatchFailure {
    Transient(String),
    Permanent(String),
}

impl BatchFailure {
    fn outcome(&self) -> Outcome {
        match self {
            BatchFailure::Transient(m) => Outcome::Transient(m.clone()),
            BatchFailure::Permanent(m) => Outcome::Permanent(m.clone()),
        }
    }
}

/// The spec's table and key, quoted once.
struct Target {
    /// Quoted `"schema"."name"` or `"name"`.
    table_sql: String,
    key_sql: String,
    error: Option<String>,
}

impl Target {
    fn new(spec: &PostgresDestination) -> Self {
        let parts: Vec<&str> = spec.table.split('.').collect();
        let valid_table = (1..=2).contains(&parts.len())
            && parts
                .iter()
                .all(|p| crate::domain::destination::is_identifier(p));
        let invalid_key = spec
            .key
            .iter()
            .find(|k| !crate::domain::destination::is_identifier(k));
        let error = if !valid_table {
            Some(format!("`{}` is not a table name", spec.table))
        } else if spec.key.is_empty() && spec.mode == WriteMode::Upsert {
            Some("upsert needs at least one key column".to_owned())
        } else {
            invalid_key.map(|k| format!("`{k}` is not a column name"))
        };
        Self {
            table_sql: parts
                .iter()
                .map(|p| quote_ident(p))
                .collect::<Vec<_>>()
                .join("."),
            key_sql: spec
                .key
                .iter()
                .map(|k| quote_ident(k))
                .collect::<Vec<_>>()
                .join(", "),
            error,
        }
    }
}

/// Appends one field in `COPY` text format: absent or null is `\N`; a string is its
/// text; numbers and booleans are their JSON text (what `jsonb_populate_recordset` hands
/// a scalar column's input function). Only called for copyable fields.
fn push_copy_text(out: &mut String, value: Option<Scalar>) {
    match value {
        None | Some(Scalar::Null | Scalar::NotCopyable) => out.push_str(pg_copy::NULL),
        Some(Scalar::Text(s)) => pg_copy::push_field(out, &s),
        // A number's or boolean's JSON text has nothing to escape.
        Some(Scalar::Literal(s)) => out.push_str(s),
    }
}

/// The field names of a batch's records, against the table's columns.
struct Shapes<'r> {
    /// Per record, its first field that is not a column, if any.
    unknown: Vec<Option<&'r str>>,
    /// Every field name of the readable records.
    names: HashSet<&'r str>,
}

impl<'r> Shapes<'r> {
    /// The records of a batch mostly share one shape: a record named field for field like
    /// the one before it is not looked up again.
    fn of(parsed: &'r [Result<Fields<'_>, String>], columns: &HashSet<String>) -> Self {
        let mut names = HashSet::new();
        let mut last: Option<(Vec<&'r str>, Option<&'r str>)> = None;
        let unknown = parsed
            .iter()
            .map(|record| {
                let fields = record.as_ref().ok()?;
                if let Some((shape, unknown)) = &last
                    && fields.names().eq(shape.iter().copied())
                {
                    return *unknown;
                }
                let unknown = fields.names().find(|k| !columns.contains(*k));
                names.extend(fields.names());
                last = Some((fields.names().collect(), unknown));
                unknown
            })
            .collect();
        Self { unknown, names }
    }
}

/// A double-quoted identifier (identifiers were validated, this is belt and braces).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Delivers records to one Postgres table.
#[derive(Clone)]
pub struct PostgresConnector {
    cache: PoolCache,
    spec: PostgresDestination,
    target: Arc<Target>,
}

impl Connector for PostgresConnector {
    fn deliver<'a>(
        &'a self,
        _job_id: JobId,
        records: &'a [RecordToDeliver],
        stop: &'a Stop,
    ) -> BoxFuture<'a, Vec<RecordResult>> {
        async move {
            let mut results: Vec<Option<(Outcome, i32)>> = vec![None; records.len()];
            if let Err(failure) = self.deliver_into(records, stop, &mut results).await {
                let outcome = failure.outcome();
                for slot in results.iter_mut().filter(|s| s.is_none()) {
                    *slot = Some((outcome.clone(), 0));
                }
            }
            records
                .iter()
                .zip(results)
                .map(|(record, result)| {
                    let (outcome, duration_ms) = result.unwrap_or_else(|| {
                        (
                            Outcome::Transient(
                                "internal error: record left without an outcome".into(),
                            ),
                            0,
                        )
                    });
                    RecordResult {
                        seq: record.seq,
                        outcome,
                        duration_ms,
                    }
                })
                .collect()
        }
        .boxed()
    }
}

/// How a failed statement is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorClass {
    /// Worth retrying later: every record of the statement is transient.
    Transient,
    /// Caused by the destination itself (no table, no privilege, bad conflict target):
    /// every record is permanent, no bisection.
    AllPermanent,
    /// The table's columns changed under the cache: forget them, retry later.
    SchemaChanged,
    /// Caused by some of the records: bisect to find them.
    Isolate,
}

fn classify(err: &sqlx::Error, acquire_timeout: Duration) -> (ErrorClass, String) {
    use ErrorClass::*;
    match err {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let class = code.get(..2).unwrap_or("");
            let mut message = format!("{} (SQLSTATE {code})", db.message());
            if matches!(code.as_str(), "23505" | "23503")
                && let Some(detail) = db
                    .try_downcast_ref::<PgDatabaseError>()
                    .and_then(|e| e.detail())
            {
                message = format!("{} ({detail}) (SQLSTATE {code})", db.message());
            }
            let message = truncate(&message, 300);
            let kind = match (code.as_str(), class) {
                ("42703", _) => SchemaChanged,
                ("42P01" | "42P10" | "42501" | "42601" | "42809" | "3F000" | "0A000", _) => {
                    AllPermanent
                }
                (_, "28" | "3D") => AllPermanent,
                ("25006", _) => Transient,
                (_, "08" | "40" | "53" | "55" | "57" | "58" | "XX") => Transient,
                (_, "21" | "22" | "23" | "42" | "44" | "P0") => Isolate,
                _ => Transient,
            };
            (kind, message)
        }
        sqlx::Error::PoolTimedOut => (
            Transient,
            format!(
                "no database connection within {} ms (destination unreachable or busy)",
                acquire_timeout.as_millis()
            ),
        ),
        sqlx::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            (Transient, "connection refused".into())
        }
        sqlx::Error::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
            ) =>
        {
            (Transient, truncate(&e.to_string(), 300))
        }
        sqlx::Error::Io(e) => (Transient, truncate(&format!("connection error: {e}"), 300)),
        sqlx::Error::Tls(e) => (Transient, truncate(&format!("TLS error: {e}"), 300)),
        sqlx::Error::Configuration(e) => (
            AllPermanent,
            truncate(&format!("invalid connection settings: {e}"), 300),
        ),
        other => (Transient, truncate(&other.to_string(), 300)),
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    let mut chars = s.chars();
    let mut out: String = chars.by_ref().take(max_chars).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

fn millis(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

impl PostgresConnector {
    /// The destination this connector delivers to.
    pub fn spec(&self) -> &PostgresDestination {
        &self.spec
    }

    /// Fills `results`; an `Err` applies to every record still without an outcome.
    async fn deliver_into(
        &self,
        records: &[RecordToDeliver],
        stop: &Stop,
        results: &mut [Option<(Outcome, i32)>],
    ) -> Result<(), BatchFailure> {
        let cancel = &stop.cancel;
        if records.is_empty() {
            return Ok(());
        }
        if cancel.is_cancelled() {
            results.fill(Some((Outcome::NotAttempted, 0)));
            return Ok(());
        }
        if let Some(error) = &self.target.error {
            return Err(BatchFailure::Permanent(error.clone()));
        }
        let entry = self.cache.entry(&self.spec.url).await?;
        let acquire_timeout = self.cache.inner.settings.acquire_timeout;

        // Which fields are columns: per record, with one refresh of the cached columns
        // when a record names a column the cache does not know.
        let parsed: Vec<Result<Fields, String>> =
            records.iter().map(|r| Fields::parse(&r.payload)).collect();
        let mut columns = self.columns(&entry, false, stop).await?;
        let mut shapes = Shapes::of(&parsed, &columns.set);
        if shapes.unknown.iter().any(Option::is_some) {
            columns = self.columns(&entry, true, stop).await?;
            shapes = Shapes::of(&parsed, &columns.set);
        }
        if self.spec.mode == WriteMode::Upsert
            && let Some(missing) = self.spec.key.iter().find(|k| !columns.set.contains(*k))
        {
            return Err(BatchFailure::Permanent(format!(
                "key column `{missing}` does not exist in `{}`",
                self.spec.table
            )));
        }
        let mut candidates = Vec::with_capacity(records.len());
        for (i, (record, unknown)) in parsed.iter().zip(&shapes.unknown).enumerate() {
            let problem = match (record, unknown) {
                (Err(message), _) => Some(message.clone()),
                (Ok(o), _) if o.is_empty() => Some("record has no fields".to_owned()),
                (Ok(_), Some(k)) => Some(format!(
                    "column `{k}` does not exist in `{}`",
                    self.spec.table
                )),
                (Ok(_), None) => None,
            };
            match problem {
                Some(message) => results[i] = Some((Outcome::Permanent(message), 0)),
                None => candidates.push(i),
            }
        }
        if candidates.is_empty() {
            return Ok(());
        }
        // The batch's columns in table order (a stable statement text for a stable shape).
        let used: Vec<&str> = columns
            .names
            .iter()
            .map(String::as_str)
            .filter(|c| shapes.names.contains(c))
            .collect();
        if self.spec.mode == WriteMode::Insert
            && used.iter().all(|c| columns.copyable.contains(*c))
            && candidates
                .iter()
                .all(|&i| parsed[i].as_ref().is_ok_and(Fields::copyable))
            && !cancel.is_cancelled()
        {
            let started = Instant::now();
            match self
                .copy_in(&entry.pool, &used, &parsed, &candidates, stop)
                .await
            {
                Ok(_) => {
                    let took = millis(started.elapsed());
                    for i in candidates {
                        results[i] = Some((Outcome::Succeeded, took));
                    }
                    return Ok(());
                }
                // A destination that stopped answering would not answer the statement
                // either: do not wait for it twice.
                Err(e) if is_no_answer(&e) => {
                    return Err(BatchFailure::Transient(classify(&e, acquire_timeout).1));
                }
                Err(_) => {}
            }
        }
        let sql = self.insert_sql(&used);

        // Bisection, depth first, left half first.
        let mut stack = vec![candidates];
        while let Some(set) = stack.pop() {
            if cancel.is_cancelled() {
                for i in set.into_iter().chain(stack.drain(..).flatten()) {
                    results[i] = Some((Outcome::NotAttempted, 0));
                }
                break;
            }
            // A JSON array of the records' own texts.
            let mut payload = String::with_capacity(
                set.iter()
                    .map(|&i| records[i].payload.len() + 1)
                    .sum::<usize>()
                    + 2,
            );
            payload.push('[');
            for (n, &i) in set.iter().enumerate() {
                if n > 0 {
                    payload.push(',');
                }
                payload.push_str(&records[i].payload);
            }
            payload.push(']');
            let started = Instant::now();
            let statement = sql.clone();
            let outcome = on_connection(&entry.pool, self.answer_limit(), stop, move |conn| {
                sqlx::query(sqlx::AssertSqlSafe(statement))
                    .bind(payload)
                    .execute(conn)
                    .boxed()
            })
            .await;
            let took = millis(started.elapsed());
            let err = match outcome {
                Ok(_) => {
                    for i in set {
                        results[i] = Some((Outcome::Succeeded, took));
                    }
                    continue;
                }
                Err(err) => err,
            };
            let (class, message) = classify(&err, acquire_timeout);
            if class == ErrorClass::Isolate {
                let mut left = set;
                if left.len() == 1 {
                    results[left[0]] = Some((Outcome::Permanent(message), took));
                } else {
                    let right = left.split_off(left.len() / 2);
                    stack.push(right);
                    stack.push(left);
                }
                continue;
            }
            // A failure of the destination, not of these records: it applies to every
            // record not written yet, and ends the batch.
            let outcome = match class {
                ErrorClass::AllPermanent => Outcome::Permanent(message),
                ErrorClass::SchemaChanged => {
                    self.forget_columns(&entry);
                    Outcome::Transient(format!(
                        "the columns of `{}` changed: {message}",
                        self.spec.table
                    ))
                }
                ErrorClass::Transient | ErrorClass::Isolate => Outcome::Transient(message),
            };
            for i in set.into_iter().chain(stack.drain(..).flatten()) {
                results[i] = Some((outcome.clone(), took));
            }
            break;
        }
        Ok(())
    }

    /// Writes the records at `rows` with one `COPY … FROM STDIN` (text format). All or
    /// nothing: on an error nothing was written, and the caller takes the statement path.
    async fn copy_in(
        &self,
        pool: &PgPool,
        columns: &[&str],
        records: &[Result<Fields<'_>, String>],
        rows: &[usize],
        stop: &Stop,
    ) -> Result<u64, sqlx::Error> {
        let cols = columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let mut data = String::with_capacity(rows.len() * 128);
        for &i in rows {
            let fields = records[i].as_ref().ok();
            for (n, column) in columns.iter().enumerate() {
                if n > 0 {
                    data.push('\t');
                }
                push_copy_text(&mut data, fields.and_then(|o| o.get(column)));
            }
            data.push('\n');
        }
        let statement = format!("COPY {} ({cols}) FROM STDIN", self.target.table_sql);
        on_connection(pool, self.answer_limit(), stop, move |conn| {
            async move {
                let mut copy = conn.copy_in_raw(&statement).await?;
                let sent = copy.send(data.into_bytes()).await.map(|_| ());
                match sent {
                    Ok(()) => copy.finish().await,
                    Err(e) => {
                        let _ = copy.abort("freight: the batch could not be sent").await;
                        Err(e)
                    }
                }
            }
            .boxed()
        })
        .await
    }

    /// How long the worker waits for the destination's answer to one statement: the
    /// server's own `statement_timeout` (which cancels a slow statement with SQLSTATE
    /// 57014) plus a margin, for a server that does not answer at all.
    fn answer_limit(&self) -> Duration {
        self.cache.inner.settings.statement_timeout + ANSWER_MARGIN
    }

    /// `INSERT … SELECT … FROM jsonb_populate_recordset(…)`, with the upsert clause.
    fn insert_sql(&self, columns: &[&str]) -> String {
        let table = &self.target.table_sql;
        let cols = columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let selected = columns
            .iter()
            .map(|c| format!("r.{}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sql = format!(
            "INSERT INTO {table} ({cols}) SELECT {selected} FROM jsonb_populate_recordset(NULL::{table}, $1::jsonb) AS r"
        );
        if self.spec.mode == WriteMode::Upsert {
            let updates = columns
                .iter()
                .filter(|c| !self.spec.key.iter().any(|k| k == *c))
                .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
                .collect::<Vec<_>>();
            if updates.is_empty() {
                sql.push_str(&format!(
                    " ON CONFLICT ({}) DO NOTHING",
                    self.target.key_sql
                ));
            } else {
                sql.push_str(&format!(
                    " ON CONFLICT ({}) DO UPDATE SET {}",
                    self.target.key_sql,
                    updates.join(", ")
                ));
            }
        }
        sql
    }

    /// The table's columns, from the cache unless `refresh`. A missing table is a
    /// permanent failure of the batch (one probe, no bisection).
    async fn columns(
        &self,
        entry: &PoolEntry,
        refresh: bool,
        stop: &Stop,
    ) -> Result<Arc<TableColumns>, BatchFailure> {
        if !refresh
            && let Some(columns) = entry
                .columns
                .lock()
                .expect("column cache poisoned")
                .get(&self.spec.table)
        {
            return Ok(columns.clone());
        }
        const SQL: &str = "SELECT coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) \
             FROM pg_attribute a WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped), \
             '{}'::text[]), \
             coalesce((SELECT array_agg(a.attname::text) FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid \
             WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped AND ty.typtype IN ('b', 'e') \
             AND ty.typcategory <> 'A' AND ty.typname NOT IN ('json', 'jsonb')), '{}'::text[]) \
             FROM (SELECT to_regclass($1)::oid AS oid) t WHERE t.oid IS NOT NULL";
        let acquire_timeout = self.cache.inner.settings.acquire_timeout;
        let table = self.target.table_sql.clone();
        let found: Option<(Vec<String>, Vec<String>)> =
            on_connection(&entry.pool, self.answer_limit(), stop, move |conn| {
                sqlx::query_as(SQL).bind(table).fetch_optional(conn).boxed()
            })
            .await
            .map_err(|e| match classify(&e, acquire_timeout) {
                (ErrorClass::AllPermanent, message) => BatchFailure::Permanent(message),
                (_, message) => BatchFailure::Transient(message),
            })?;
        let Some((names, copyable)) = found else {
            return Err(BatchFailure::Permanent(format!(
                "table `{}` does not exist",
                self.spec.table
            )));
        };
        let columns = Arc::new(TableColumns::new(names, copyable));
        entry
            .columns
            .lock()
            .expect("column cache poisoned")
            .insert(self.spec.table.clone(), columns.clone());
        Ok(columns)
    }

    fn forget_columns(&self, entry: &PoolEntry) {
        entry
            .columns
            .lock()
            .expect("column cache poisoned")
            .remove(&self.spec.table);
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::sqlx::{AssertSqlSafe, Connection, PgConnection};
    use serde_json::{Value, json};
    use tokio_util::sync::CancellationToken;
    use url::Url;

    use super::*;

    fn admin_url() -> String {
        std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
    }

    /// A throwaway database, dropped (`WITH (FORCE)`) even when the test panics.
    struct TestDb {
        name: String,
        url: String,
    }

    impl TestDb {
        async fn new(schema: &str) -> Self {
            let name = format!("freight_dest_{}", uuid::Uuid::new_v4().simple());
            let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
            sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .execute(&mut admin)
                .await
                .unwrap();
            admin.close().await.unwrap();
            let mut url = Url::parse(&admin_url()).unwrap();
            url.set_path(&name);
            let db = Self {
                name,
                url: url.to_string(),
            };
            let mut conn = db.connect().await;
            sqlx::raw_sql(AssertSqlSafe(schema.to_owned()))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
            db
        }

        async fn connect(&self) -> PgConnection {
            PgConnection::connect(&self.url).await.unwrap()
        }

        async fn rows(&self, sql: &str) -> Vec<(i32, Option<String>, Option<i32>)> {
            let mut conn = self.connect().await;
            let rows = sqlx::query_as(AssertSqlSafe(sql.to_owned()))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
            rows
        }
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            let name = self.name.clone();
            // Async work in `drop`: a runtime of its own, on a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
                        let _ = sqlx::query(AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await;
                        let _ = admin.close().await;
                    }
                });
            })
            .join();
        }
    }

    const PEOPLE: &str =
        "CREATE TABLE people (id integer PRIMARY KEY, name text NOT NULL, age integer, tags jsonb)";

    fn spec(url: &str, table: &str, mode: WriteMode) -> PostgresDestination {
        PostgresDestination {
            url: url.to_owned(),
            url_redacted: None,
            table: table.to_owned(),
            key: vec!["id".to_owned()],
            mode,
        }
    }

    /// Records from JSON values or texts.
    fn records<T: ToString>(payloads: impl IntoIterator<Item = T>) -> Vec<RecordToDeliver> {
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| RecordToDeliver {
                seq: i as i64 + 1,
                payload: payload.to_string(),
            })
            .collect()
    }

    async fn deliver(
        connector: &PostgresConnector,
        batch: &[RecordToDeliver],
    ) -> Vec<RecordResult> {
        connector
            .deliver(JobId::new(), batch, &Stop::default())
            .await
    }

    /// Two tables of the same shape, and a log of the statement text that wrote to them.
    const TWINS: &str = "
        CREATE TABLE writes (tbl text, query text);
        CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO writes VALUES (TG_TABLE_NAME, current_query()); RETURN NULL; END $$;
        CREATE TABLE a (id integer PRIMARY KEY, name text, note text, amount numeric, ok boolean,
                        at timestamptz, kind text);
        CREATE TABLE b (LIKE a INCLUDING ALL);
        CREATE TRIGGER a_log AFTER INSERT ON a FOR EACH STATEMENT EXECUTE FUNCTION log_write();
        CREATE TRIGGER b_log AFTER INSERT ON b FOR EACH STATEMENT EXECUTE FUNCTION log_write();
        CREATE TABLE j (id integer PRIMARY KEY, doc jsonb);
        CREATE TRIGGER j_log AFTER INSERT ON j FOR EACH STATEMENT EXECUTE FUNCTION log_write();";

    #[tokio::test]
    async fn copy_writes_what_the_statement_would() {
        let db = TestDb::new(TWINS).await;
        let cache = PoolCache::new(true);
        let tricky = [
            "tab\there",
            "line\nbreak\r\n",
            "back\\slash \\N",
            "\\.",
            "quotes ' \" and unicode ✓ é",
            "",
        ];
        let batch = records(
            tricky
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    json!({"id": i, "name": t, "note": format!("{t}{t}"), "amount": 12345.678,
                   "ok": i % 2 == 0, "at": "2026-01-02T03:04:05.123456Z", "kind": null})
                })
                .map(|v| v.to_string())
                // Digits beyond an f64's, kept as sent (numeric reads the text).
                .chain([
                    r#"{"id": 100, "amount": 12345678901234567890.50, "ok": "yes", "note": 42}"#
                        .to_owned(),
                ]),
        );

        let copied = cache.connector(spec(&db.url, "a", WriteMode::Insert));
        let stated = cache.connector(spec(&db.url, "b", WriteMode::Upsert));
        for connector in [&copied, &stated] {
            let results = deliver(connector, &batch).await;
            assert!(
                results.iter().all(|r| r.outcome == Outcome::Succeeded),
                "{results:?}"
            );
        }

        let mut conn = db.connect().await;
        let differing: i64 =
            sqlx::query_scalar("SELECT count(*) FROM (SELECT * FROM a EXCEPT SELECT * FROM b) d")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(differing, 0, "COPY and the statement wrote the same rows");
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM a")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(rows, tricky.len() as i64 + 1);
        let name: String = sqlx::query_scalar("SELECT name FROM a WHERE id = 2")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(name, "back\\slash \\N");
        let writes: Vec<(String, String)> =
            sqlx::query_as("SELECT tbl, query FROM writes WHERE tbl IN ('a', 'b') ORDER BY tbl")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert!(
            writes[0].1.starts_with("COPY "),
            "insert mode copies: {writes:?}"
        );
        assert!(
            writes[1].1.starts_with("INSERT "),
            "upsert mode uses the statement: {writes:?}"
        );

        // An object in a text column is written as jsonb prints it: the statement path.
        let nested = records([json!({"id": 200, "note": {"a": [1, "x"]}})]);
        assert_eq!(
            deliver(&copied, &nested).await[0].outcome,
            Outcome::Succeeded
        );
        let note: String = sqlx::query_scalar("SELECT note FROM a WHERE id = 200")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(note, r#"{"a": [1, "x"]}"#);

        // So is a number jsonb prints differently from its text (`1e3` as `1000`).
        let exponent = records([r#"{"id": 201, "note": 1e3, "amount": -0}"#]);
        assert_eq!(
            deliver(&copied, &exponent).await[0].outcome,
            Outcome::Succeeded
        );
        let written: (String, String) =
            sqlx::query_as("SELECT note, amount::text FROM a WHERE id = 201")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(written, ("1000".to_owned(), "0".to_owned()));

        // A jsonb column takes a JSON string as a string, which COPY would not: the
        // statement path writes it.
        let json_table = cache.connector(spec(&db.url, "j", WriteMode::Insert));
        let results = deliver(&json_table, &records([json!({"id": 1, "doc": "123"})])).await;
        assert_eq!(results[0].outcome, Outcome::Succeeded);
        let (kind, query): (String, String) = sqlx::query_as(
            "SELECT jsonb_typeof(doc), (SELECT query FROM writes WHERE tbl = 'j') FROM j",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(kind, "string");
        assert!(query.starts_with("INSERT "), "{query}");
        conn.close().await.unwrap();
    }

    #[tokio::test]
    async fn insert_mode_lands_every_row_in_one_statement() {
        let db = TestDb::new(PEOPLE).await;
        let cache = PoolCache::new(true);
        let connector = cache.connector(spec(&db.url, "people", WriteMode::Insert));
        let batch = records((1..=50).map(
            |i| json!({"id": i, "name": format!("p{i}"), "age": 20 + i, "tags": ["a", {"b": i}]}),
        ));

        let results = deliver(&connector, &batch).await;

        assert!(
            results.iter().all(|r| r.outcome == Outcome::Succeeded),
            "{results:?}"
        );
        assert_eq!(
            results.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=50).collect::<Vec<_>>()
        );
        // One statement wrote them all: every record carries its duration.
        assert!(
            results
                .iter()
                .all(|r| r.duration_ms == results[0].duration_ms)
        );
        let rows = db
            .rows("SELECT id, name, age FROM people ORDER BY id")
            .await;
        assert_eq!(rows.len(), 50);
        assert_eq!(rows[6], (7, Some("p7".into()), Some(27)));

        // A second batch reuses the pool; a record without `age` gets NULL.
        let more = records([json!({"id": 51, "name": "no age"})]);
        assert_eq!(
            deliver(&connector, &more).await[0].outcome,
            Outcome::Succeeded
        );
        assert_eq!(cache.pool_count(), 1);
        let rows = db
            .rows("SELECT id, name, age FROM people WHERE id = 51")
            .await;
        assert_eq!(rows, vec![(51, Some("no age".into()), None)]);
        cache.close().await;
    }

    #[tokio::test]
    async fn upsert_mode_updates_existing_rows() {
        let db = TestDb::new(&format!(
            "{PEOPLE}; INSERT INTO people (id, name, age) VALUES (1, 'old', 30), (2, 'keep', 40)"
        ))
        .await;
        let cache = PoolCache::new(true);
        let connector = cache.connector(spec(&db.url, "people", WriteMode::Upsert));
        let batch = records([
            json!({"id": 1, "name": "new", "age": 31}),
            json!({"id": 3, "name": "third", "age": 50}),
            // The same key twice in one batch: the later record wins.
            json!({"id": 4, "name": "first"}),
            json!({"id": 4, "name": "second"}),
        ]);

        let results = deliver(&connector, &batch).await;

        assert!(
            results.iter().all(|r| r.outcome == Outcome::Succeeded),
            "{results:?}"
        );
        let rows = db
            .rows("SELECT id, name, age FROM people ORDER BY id")
            .await;
        assert_eq!(
            rows,
            vec![
                (1, Some("new".into()), Some(31)),
                (2, Some("keep".into()), Some(40)),
                (3, Some("third".into()), Some(50)),
                (4, Some("second".into()), None),
            ]
        );
        cache.close().await;
    }

    #[tokio::test]
    async fn poison_records_fail_alone_and_the_rest_lands() {
        let db = TestDb::new(&format!(
            "{PEOPLE}; INSERT INTO people (id, name) VALUES (1000, 'existing')"
        ))
        .await;
        let cache = PoolCache::new(true);
        let connector = cache.connector(spec(&db.url, "people", WriteMode::Insert));
        let mut payloads: Vec<Value> = (1..=100)
            .map(|i| json!({"id": i, "name": format!("p{i}"), "age": i}))
            .collect();
        payloads[9] = json!({"id": 10, "age": 10}); // NOT NULL
        payloads[49] = json!({"id": 50, "name": "p50", "age": "old"}); // wrong type
        payloads[74] = json!({"id": 75, "name": "p75", "nickname": "x"}); // unknown column
        payloads.push(json!({"id": 1000, "name": "dup"})); // unique violation
        let batch = records(payloads);

        let results = deliver(&connector, &batch).await;

        let failed: Vec<(i64, String)> = results
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Succeeded => None,
                Outcome::Permanent(m) => Some((r.seq, m.clone())),
                other => panic!("seq {}: {other:?}", r.seq),
            })
            .collect();
        assert_eq!(
            failed.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![10, 50, 75, 101],
            "{failed:?}"
        );
        assert!(
            failed[0].1.contains("not-null") && failed[0].1.contains("23502"),
            "{}",
            failed[0].1
        );
        assert!(
            failed[1].1.contains("invalid input syntax") && failed[1].1.contains("22P02"),
            "{}",
            failed[1].1
        );
        assert_eq!(failed[2].1, "column `nickname` does not exist in `people`");
        assert!(
            failed[3].1.contains("already exists") && failed[3].1.contains("23505"),
            "{}",
            failed[3].1
        );
        let rows = db
            .rows("SELECT id, name, age FROM people WHERE id < 1000 ORDER BY id")
            .await;
        assert_eq!(rows.len(), 97);
        assert!(!rows.iter().any(|r| [10, 50, 75].contains(&r.0)));
        cache.close().await;
    }

    #[tokio::test]
    async fn schema_qualified_tables_and_composite_keys() {
        let db = TestDb::new(
            "CREATE SCHEMA crm; CREATE TABLE crm.\"Contacts\" (tenant text, id integer, email text, PRIMARY KEY (tenant, id))",
        )
        .await;
        let cache = PoolCache::new(true);
        let mut dest = spec(&db.url, "crm.Contacts", WriteMode::Upsert);
        dest.key = vec!["tenant".into(), "id".into()];
        let connector = cache.connector(dest);
        let batch = records([
            json!({"tenant": "a", "id": 1, "email": "x@a"}),
            json!({"tenant": "b", "id": 1, "email": "x@b"}),
        ]);
        assert!(
            deliver(&connector, &batch)
                .await
                .iter()
                .all(|r| r.outcome == Outcome::Succeeded)
        );
        let again = records([json!({"tenant": "a", "id": 1, "email": "y@a"})]);
        assert_eq!(
            deliver(&connector, &again).await[0].outcome,
            Outcome::Succeeded
        );
        let mut conn = db.connect().await;
        let emails: Vec<String> =
            sqlx::query_scalar("SELECT email FROM crm.\"Contacts\" ORDER BY tenant")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        assert_eq!(emails, vec!["y@a", "x@b"]);
        conn.close().await.unwrap();
        cache.close().await;
    }

    #[tokio::test]
    async fn a_missing_table_fails_every_record_permanently() {
        let db = TestDb::new("SELECT 1").await;
        let cache = PoolCache::new(true);
        let connector = cache.connector(spec(&db.url, "nowhere", WriteMode::Insert));
        let results = deliver(&connector, &records((0..10).map(|i| json!({"id": i})))).await;
        for r in &results {
            assert_eq!(
                r.outcome,
                Outcome::Permanent("table `nowhere` does not exist".into())
            );
        }
        cache.close().await;
    }

    #[tokio::test]
    async fn an_unreachable_database_is_transient() {
        let cache = PoolCache::with_settings(
            true,
            PoolSettings {
                acquire_timeout: Duration::from_millis(800),
                ..PoolSettings::default()
            },
        );
        let connector = cache.connector(spec(
            "postgres://app:pa55word@127.0.0.1:1/db",
            "people",
            WriteMode::Insert,
        ));
        let started = Instant::now();
        let results = deliver(&connector, &records((0..3).map(|i| json!({"id": i})))).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        for r in &results {
            match &r.outcome {
                Outcome::Transient(m) => {
                    assert!(m.starts_with("no database connection within 800 ms"), "{m}");
                    assert!(!m.contains("pa55word"), "{m}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn private_databases_are_refused() {
        let cache = PoolCache::new(false);
        for url in [
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://postgres@localhost:5432/postgres",
            "postgres://postgres@[::1]:5432/postgres?sslmode=verify-full",
        ] {
            let connector = cache.connector(spec(url, "people", WriteMode::Insert));
            let results = deliver(&connector, &records([json!({"id": 1})])).await;
            match &results[0].outcome {
                Outcome::Permanent(m) => assert!(m.contains("private"), "{url}: {m}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        // Parameters that would dial elsewhere than the checked host are refused before
        // anything is resolved, whether or not private destinations are allowed.
        for allow_private in [false, true] {
            let cache = PoolCache::new(allow_private);
            for url in [
                "postgres://postgres@93.184.216.34:5432/postgres?hostaddr=127.0.0.1",
                "postgres://postgres@db.example.com:5432/postgres?host=10.0.0.1",
                "postgres://postgres@db.example.com:5432/postgres?host=/var/run/postgresql",
                "postgres://postgres@%2Fvar%2Frun%2Fpostgresql/postgres",
            ] {
                let connector = cache.connector(spec(url, "people", WriteMode::Insert));
                let results = deliver(&connector, &records([json!({"id": 1})])).await;
                match &results[0].outcome {
                    Outcome::Permanent(m) => {
                        assert!(
                            m.starts_with("the destination URL is refused"),
                            "{url}: {m}"
                        )
                    }
                    other => panic!("{url}: {other:?}"),
                }
            }
            assert_eq!(cache.pool_count(), 0);
        }
        assert_eq!(cache.pool_count(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_batch_writes_nothing() {
        let db = TestDb::new(PEOPLE).await;
        let cache = PoolCache::new(true);
        let connector = cache.connector(spec(&db.url, "people", WriteMode::Insert));
        let cancel = CancellationToken::new();
        cancel.cancel();
        let batch = records((1..=5).map(|i| json!({"id": i, "name": "x"})));
        let stop = Stop {
            cancel,
            ..Stop::default()
        };
        let results = connector.deliver(JobId::new(), &batch, &stop).await;
        assert!(results.iter().all(|r| r.outcome == Outcome::NotAttempted));
        assert!(db.rows("SELECT id, name, age FROM people").await.is_empty());
        cache.close().await;
    }

    #[tokio::test]
    async fn a_statement_timeout_is_transient() {
        let db = TestDb::new(&format!(
            "{PEOPLE}; CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_sleep(2); RETURN NEW; END $$; \
             CREATE TRIGGER slow BEFORE INSERT ON people FOR EACH ROW EXECUTE FUNCTION slow()"
        ))
        .await;
        let cache = PoolCache::with_settings(
            true,
            PoolSettings {
                statement_timeout: Duration::from_millis(300),
                ..PoolSettings::default()
            },
        );
        let connector = cache.connector(spec(&db.url, "people", WriteMode::Insert));
        let results = deliver(&connector, &records([json!({"id": 1, "name": "a"})])).await;
        match &results[0].outcome {
            Outcome::Transient(m) => assert!(m.contains("57014"), "{m}"),
            other => panic!("{other:?}"),
        }
        cache.close().await;
    }

    #[tokio::test]
    async fn columns_added_or_dropped_later_are_picked_up() {
        let db = TestDb::new(PEOPLE).await;
        let cache = PoolCache::new(true);
        let connector = cache.connector(spec(&db.url, "people", WriteMode::Insert));
        let first = records([json!({"id": 1, "name": "a", "age": 1})]);
        assert_eq!(
            deliver(&connector, &first).await[0].outcome,
            Outcome::Succeeded
        );

        let mut conn = db.connect().await;
        sqlx::raw_sql(
            "ALTER TABLE people ADD COLUMN email text; ALTER TABLE people DROP COLUMN age",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();

        // A new column: the cache is refreshed because a record names it.
        let added = records([json!({"id": 2, "name": "b", "email": "b@x"})]);
        assert_eq!(
            deliver(&connector, &added).await[0].outcome,
            Outcome::Succeeded
        );
        // The refresh also saw `age` go: a record naming it fails alone.
        let dropped = records([
            json!({"id": 3, "name": "c", "age": 3}),
            json!({"id": 4, "name": "d"}),
        ]);
        let results = deliver(&connector, &dropped).await;
        assert_eq!(
            results[0].outcome,
            Outcome::Permanent("column `age` does not exist in `people`".into())
        );
        assert_eq!(results[1].outcome, Outcome::Succeeded);
        cache.close().await;
    }

    #[test]
    fn options_dial_the_checked_address_and_keep_the_name_for_tls() {
        let pg = PostgresUrl::parse(
            "postgres://app:pw@db.example.com:6543/crm?sslmode=verify-full&application_name=x",
        )
        .unwrap();
        let options = options_for(&pg, Some("93.184.216.34".parse().unwrap()));
        assert_eq!(options.get_host(), "db.example.com");
        assert_eq!(options.get_port(), 6543);
        assert_eq!(options.get_username(), "app");
        assert_eq!(options.get_database(), Some("crm"));
        assert_eq!(options.get_application_name(), Some("x"));
        assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyFull));
        assert_eq!(options.get_socket(), None);
        let debug = format!("{options:?}");
        assert!(debug.contains("hostaddr: Some(93.184.216.34)"), "{debug}");
        assert!(debug.contains("options: None"), "{debug}");
    }

    #[test]
    fn statement_text() {
        let cache = PoolCache::new(true);
        let mut dest = spec("postgres://u@h/d", "crm.people", WriteMode::Upsert);
        dest.key = vec!["id".into()];
        let connector = cache.connector(dest);
        assert_eq!(
            connector.insert_sql(&["id", "name"]),
            "INSERT INTO \"crm\".\"people\" (\"id\", \"name\") SELECT r.\"id\", r.\"name\" FROM jsonb_populate_recordset(NULL::\"crm\".\"people\", $1::jsonb) AS r ON CONFLICT (\"id\") DO UPDATE SET \"name\" = EXCLUDED.\"name\""
        );
        assert!(
            connector
                .insert_sql(&["id"])
                .ends_with("ON CONFLICT (\"id\") DO NOTHING")
        );
    }
}
