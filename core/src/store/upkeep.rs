//! Table upkeep for a Postgres that will not do it: when autovacuum is off (for the server
//! or for one of Freight's tables), the reconciler's leader vacuums and analyses Freight's
//! tables itself, on the thresholds autovacuum would have used.
//!
//! Why: Freight's queue tables grow from empty to millions of rows within minutes. A table
//! never analysed keeps the statistics (and the cached generic plans) of its empty days, so
//! the per-job reads that an index answers in microseconds turn into sequential scans of
//! every batch of every job; one never vacuumed keeps every dead version of its
//! hot-updated rows. With autovacuum on (the default, and what `docs/operations.md` asks
//! for) this module finds nothing to do.

use std::time::Instant;

use sea_orm::sqlx::{
    self, ConnectOptions, Connection, PgConnection, PgPool, postgres::PgConnectOptions,
};

/// Freight's own tables (the migrations' `CREATE TABLE`s; a test keeps the two in step).
/// Only these are touched: a tenant's Postgres destination may live in the same database.
pub const TABLES: &[&str] = &[
    "tenants",
    "api_keys",
    "jobs",
    "batches",
    "job_records",
    "record_logs",
    "dead_letters",
    "workers",
    "audit_events",
];

/// A table past one of autovacuum's thresholds while autovacuum is off for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// One of [`TABLES`].
    pub table: &'static str,
    /// Dead rows (or rows inserted since the last vacuum) past the vacuum threshold.
    pub vacuum: bool,
    /// Rows changed since the last analyse past the analyse threshold.
    pub analyze: bool,
}

impl Due {
    /// The command to run and its name in metrics and logs.
    fn action(&self) -> (&'static str, &'static str) {
        match (self.vacuum, self.analyze) {
            (true, true) => ("VACUUM (ANALYZE)", "vacuum_analyze"),
            (true, false) => ("VACUUM", "vacuum"),
            _ => ("ANALYZE", "analyze"),
        }
    }
}

/// The tables autovacuum should have seen to and will not. Mirrors autovacuum's own rule
/// (`threshold + scale_factor * reltuples`, with the server's settings) so a table is
/// maintained about as often as it would be on a server with autovacuum on.
pub async fn due(db: impl sqlx::PgExecutor<'_>) -> Result<Vec<Due>, sqlx::Error> {
    let rows: Vec<(String, bool, bool)> = sqlx::query_as(
        "WITH s AS (
             SELECT st.relname::text AS name, st.n_dead_tup, st.n_ins_since_vacuum,
                    st.n_mod_since_analyze, greatest(c.reltuples, 0) AS tuples
               FROM pg_stat_user_tables st
               JOIN pg_class c ON c.oid = st.relid
              WHERE st.schemaname = current_schema()
                AND st.relname = ANY($1)
                AND (current_setting('autovacuum') = 'off'
                     OR EXISTS (SELECT 1 FROM unnest(c.reloptions) o
                                 WHERE lower(o) IN ('autovacuum_enabled=false', 'autovacuum_enabled=off',
                                                    'autovacuum_enabled=no', 'autovacuum_enabled=0',
                                                    'autovacuum_enabled=f')))
         ), t AS (
             SELECT name,
                    n_dead_tup > current_setting('autovacuum_vacuum_threshold')::float8
                        + current_setting('autovacuum_vacuum_scale_factor')::float8 * tuples
                    OR (current_setting('autovacuum_vacuum_insert_threshold')::float8 >= 0
                        AND n_ins_since_vacuum > current_setting('autovacuum_vacuum_insert_threshold')::float8
                            + current_setting('autovacuum_vacuum_insert_scale_factor')::float8 * tuples)
                        AS needs_vacuum,
                    n_mod_since_analyze > current_setting('autovacuum_analyze_threshold')::float8
                        + current_setting('autovacuum_analyze_scale_factor')::float8 * tuples
                        AS needs_analyze
               FROM s
         )
         SELECT name, needs_vacuum, needs_analyze FROM t WHERE needs_vacuum OR needs_analyze ORDER BY name",
    )
    .bind(TABLES)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(name, vacuum, analyze)| {
            let table = TABLES.iter().find(|t| **t == name)?;
            Some(Due {
                table,
                vacuum,
                analyze,
            })
        })
        .collect())
}

/// One upkeep pass: finds the due tables (on the worker's pool, so a pass with nothing
/// to do opens no connection) and vacuums or analyses them one at a time on a connection
/// of its own, throttled like autovacuum (its cost delay), so the pass competes with the
/// work as little as autovacuum would. Returns what it did.
pub async fn run_once(pool: &PgPool, database_url: &str) -> Result<Vec<Due>, sqlx::Error> {
    let due = due(pool).await?;
    if due.is_empty() {
        return Ok(due);
    }
    let options: PgConnectOptions = database_url.parse()?;
    // A VACUUM is slow by nature: no slow-statement warning; each run is logged below.
    let mut conn = PgConnection::connect_with(&options.disable_statement_logging()).await?;
    let result = maintain(&mut conn, &due).await;
    let _ = conn.close().await;
    result.map(|()| due)
}

async fn maintain(conn: &mut PgConnection, due: &[Due]) -> Result<(), sqlx::Error> {
    // A manual VACUUM runs unthrottled (vacuum_cost_delay 0); autovacuum sleeps
    // autovacuum_vacuum_cost_delay (2 ms) per cost_limit of pages. Take autovacuum's.
    sqlx::query(
        "SELECT set_config('vacuum_cost_delay', current_setting('autovacuum_vacuum_cost_delay'), false)
          WHERE current_setting('autovacuum_vacuum_cost_delay') NOT IN ('-1', '-1ms')",
    )
    .execute(&mut *conn)
    .await?;
    for table in due {
        let (command, action) = table.action();
        let started = Instant::now();
        // Safe: `table.table` is one of the constant TABLES, never input.
        let sql = sqlx::AssertSqlSafe(format!("{command} {}", table.table));
        sqlx::raw_sql(sql).execute(&mut *conn).await?;
        let took = started.elapsed();
        metrics::counter!(crate::metrics::TABLE_UPKEEP, "table" => table.table, "action" => action)
            .increment(1);
        tracing::info!(
            table = %table.table,
            action,
            took_ms = took.as_millis() as u64,
            "autovacuum is off for this table: Freight maintained it"
        );
    }
    Ok(())
}
