//! `workers`: one row per worker process start, kept alive by its heartbeat.

use chrono::Utc;
use entity::worker;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, sea_query::Expr,
};

use crate::error::Result;

pub struct NewWorker {
    pub id: String,
    pub host: String,
    pub pid: i32,
    pub queue: String,
    pub concurrency: i32,
}

pub async fn register(db: &impl ConnectionTrait, new: NewWorker) -> Result<worker::Model> {
    let now = Utc::now();
    Ok(worker::ActiveModel {
        id: Set(new.id),
        host: Set(new.host),
        pid: Set(new.pid),
        queue: Set(new.queue),
        concurrency: Set(new.concurrency),
        version: Set(crate::VERSION.to_owned()),
        started_at: Set(now),
        last_heartbeat_at: Set(now),
        stopped_at: Set(None),
    }
    .insert(db)
    .await?)
}

/// Refreshes the worker's heartbeat. Guard: only while it is not marked stopped.
pub async fn heartbeat(db: &impl ConnectionTrait, id: &str) -> Result<bool> {
    let res = worker::Entity::update_many()
        .col_expr(worker::Column::LastHeartbeatAt, Expr::value(Utc::now()))
        .filter(worker::Column::Id.eq(id))
        .filter(worker::Column::StoppedAt.is_null())
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

pub async fn mark_stopped(db: &impl ConnectionTrait, id: &str) -> Result<()> {
    worker::Entity::update_many()
        .col_expr(worker::Column::StoppedAt, Expr::value(Utc::now()))
        .filter(worker::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}
