use sea_orm::entity::prelude::*;

use crate::ids::{BatchId, JobId, TenantId};

/// A record that failed for good. Its payload stays in `job_records`; a requeue keeps
/// this row and sets `requeued_at`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "dead_letters")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub job_id: JobId,
    pub tenant_id: TenantId,
    pub batch_id: BatchId,
    pub record_seq: i64,
    pub error: String,
    pub attempts: i32,
    pub created_at: DateTimeUtc,
    pub requeued_at: Option<DateTimeUtc>,
    pub requeue_count: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
