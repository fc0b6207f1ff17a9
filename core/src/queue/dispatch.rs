//! Dispatch: the apalis-redis queue that carries "deliver this batch" messages.
//!
//! A message holds only a batch id. Redis is a hint, never the truth: a message may be
//! lost (the reconciler re-dispatches from Postgres) or delivered twice (the claim's
//! guarded UPDATE lets only one run). Every push gets a fresh task id, because
//! apalis-redis silently ignores a push whose id it has seen before, and a re-dispatch
//! must not be ignored.

use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_redis::{Config, RedisStorage};
use chrono::{DateTime, Utc};
use entity::BatchId;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

/// The one message type: deliver this batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverBatch {
    pub batch_id: BatchId,
}

/// The apalis-redis queue configuration shared by the pushers and the workers. The queue
/// is always named: apalis' default is a Rust type name, which would differ between
/// builds. Orphans (tasks of a worker that stopped heartbeating) come back after
/// heartbeat × missed = 30 s instead of the default 300 s.
pub fn queue_config(queue: &str, fetch_batch: usize) -> Config {
    Config::default()
        .queue(queue)
        .heartbeat_interval(Duration::from_secs(5))
        .missed_heartbeats(6)
        .batch_size(fetch_batch.max(1))
}

#[derive(Clone)]
pub struct Dispatcher {
    storage: RedisStorage<DeliverBatch>,
}

impl Dispatcher {
    pub fn new(conn: ConnectionManager, queue: &str) -> Self {
        Self {
            storage: RedisStorage::new(conn).with_config(queue_config(queue, 10)),
        }
    }

    /// Pushes one message per batch, due now.
    pub async fn push_now(&self, batch_ids: &[BatchId]) -> Result<()> {
        let mut storage = self.storage.clone();
        for &batch_id in batch_ids {
            let task = TaskBuilder::new(DeliverBatch { batch_id })
                .task_id(fresh_id())
                .build();
            storage.push_task(task).await.map_err(push_error)?;
        }
        Ok(())
    }

    /// Pushes a message due at `at`. apalis-redis schedules in whole seconds, so the
    /// message is scheduled at the second `at` falls in (up to a second early); the
    /// worker waits out the remainder before delivering.
    pub async fn push_at(&self, batch_id: BatchId, at: DateTime<Utc>) -> Result<()> {
        let secs = at.timestamp().max(0) as u64;
        let task = TaskBuilder::new(DeliverBatch { batch_id })
            .task_id(fresh_id())
            .run_at_timestamp(secs)
            .build();
        self.storage
            .clone()
            .push_task(task)
            .await
            .map_err(push_error)
    }
}

/// Messages waiting in Redis: ready to fetch now, and scheduled for later (or due
/// but not yet promoted). From the queue's own keys, not apalis' stats helpers (broken).
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RedisDepth {
    pub ready: i64,
    pub scheduled: i64,
}

impl Dispatcher {
    pub async fn redis_depth(&self) -> Result<RedisDepth> {
        let (ready, scheduled) = self.waiting(None).await?;
        Ok(RedisDepth { ready, scheduled })
    }

    /// Whether any message is waiting to be fetched now: ready, or scheduled and due.
    pub async fn anything_due(&self) -> Result<bool> {
        let (ready, due) = self.waiting(Some(Utc::now().timestamp())).await?;
        Ok(ready + due > 0)
    }

    /// Messages ready, and messages scheduled (due by `due_by`, a Unix second, if given).
    async fn waiting(&self, due_by: Option<i64>) -> Result<(i64, i64)> {
        let config = self.storage.get_config().clone();
        let mut conn = self.storage.clone().get_connection().clone();
        let until = due_by.map_or_else(|| "+inf".to_owned(), |at| at.to_string());
        Ok(redis::pipe()
            .cmd("LLEN")
            .arg(config.active_jobs_list())
            .cmd("ZCOUNT")
            .arg(config.scheduled_jobs_set())
            .arg("-inf")
            .arg(until)
            .query_async(&mut conn)
            .await?)
    }
}

/// Deletes finished tasks from Redis. apalis-redis keeps every task's payload and
/// metadata for ever (its own `vacuum` deletes tasks still waiting to retry, which breaks
/// workers); this removes only tasks in the done and dead sets — finished for good, since
/// task ids are never reused — at most `limit` of each per call.
const SWEEP_FINISHED: &str = r"
local removed = 0
for _, set in ipairs({KEYS[1], KEYS[2]}) do
  local ids = redis.call('SPOP', set, ARGV[1])
  for _, id in ipairs(ids) do
    redis.call('HDEL', KEYS[3], id)
    redis.call('DEL', KEYS[4] .. ':' .. id)
    removed = removed + 1
  end
end
return removed
";

impl Dispatcher {
    pub async fn sweep_finished(&self, limit: usize) -> Result<usize> {
        let config = self.storage.get_config().clone();
        let mut conn = self.storage.clone().get_connection().clone();
        let removed: usize = redis::Script::new(SWEEP_FINISHED)
            .key(config.done_jobs_set())
            .key(config.dead_jobs_set())
            .key(config.job_data_hash())
            .key(config.job_meta_hash())
            .arg(limit)
            .invoke_async(&mut conn)
            .await?;
        Ok(removed)
    }
}

fn fresh_id() -> TaskId {
    TaskId::from_string(Uuid::now_v7().to_string())
}

fn push_error(e: impl Into<crate::error::BoxError>) -> Error {
    Error::internal_from("cannot push to the queue", e)
}
