//! The fleet as operators see it: live workers and queue depth, read from Postgres.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement};
use serde::Serialize;

use crate::error::Result;

/// A worker that has heartbeated recently and not stopped.
#[derive(Debug, Clone, FromQueryResult, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LiveWorker {
    pub id: String,
    pub host: String,
    pub pid: i32,
    pub concurrency: i32,
    pub running_batches: i64,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
}

/// Workers alive within `within` (three heartbeat intervals, say), with the batches each
/// is running. A killed worker drops off once its last heartbeat is older than that.
pub async fn live_workers(db: &impl ConnectionTrait, within: Duration) -> Result<Vec<LiveWorker>> {
    Ok(LiveWorker::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT w.id, w.host, w.pid, w.concurrency, w.version, w.started_at, w.last_heartbeat_at,
                (SELECT count(*) FROM batches b WHERE b.status = 'running' AND b.worker_id = w.id) AS running_batches
         FROM workers w
         WHERE w.stopped_at IS NULL AND w.last_heartbeat_at > now() - make_interval(secs => $1)
         ORDER BY w.started_at",
        [within.as_secs_f64().into()],
    ))
    .all(db)
    .await?)
}

/// Batches in each unfinished state, and open dead letters, across all tenants.
#[derive(Debug, Clone, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Depth {
    pub pending: i64,
    pub queued: i64,
    pub running: i64,
    pub retry_scheduled: i64,
    /// Dead letters not requeued.
    pub dead: i64,
}

pub async fn depth(db: &impl ConnectionTrait) -> Result<Depth> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT status, count(*)::bigint AS n FROM batches
             WHERE status IN ('pending', 'queued', 'running', 'retry_scheduled') GROUP BY status
             UNION ALL
             SELECT 'dead', count(*)::bigint FROM dead_letters WHERE requeued_at IS NULL",
        ))
        .await?;
    let mut by: BTreeMap<String, i64> = BTreeMap::new();
    for r in rows {
        by.insert(r.try_get("", "status")?, r.try_get("", "n")?);
    }
    let get = |k: &str| by.get(k).copied().unwrap_or(0);
    Ok(Depth {
        pending: get("pending"),
        queued: get("queued"),
        running: get("running"),
        retry_scheduled: get("retry_scheduled"),
        dead: get("dead"),
    })
}
