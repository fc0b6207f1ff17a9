use sea_orm::entity::prelude::*;

/// One row per worker process start; `last_heartbeat_at` tells whether it is alive.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub host: String,
    pub pid: i32,
    pub queue: String,
    pub concurrency: i32,
    pub version: String,
    pub started_at: DateTimeUtc,
    pub last_heartbeat_at: DateTimeUtc,
    pub stopped_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
