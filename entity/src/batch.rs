use sea_orm::entity::prelude::*;

use crate::ids::{BatchId, JobId, TenantId};
use serde::{Deserialize, Serialize};

/// Batch states (`docs/api.md`, "Batch states").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[sea_orm(rs_type = "String", db_type = "Text")]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "queued")]
    Queued,
    #[sea_orm(string_value = "running")]
    Running,
    #[sea_orm(string_value = "retry_scheduled")]
    RetryScheduled,
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    #[sea_orm(string_value = "failed")]
    Failed,
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

/// A contiguous range of a job's records, delivered together.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "batches")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: BatchId,
    pub job_id: JobId,
    pub tenant_id: TenantId,
    pub seq: i32,
    pub first_record_seq: i64,
    pub last_record_seq: i64,
    pub record_count: i32,
    pub status: BatchStatus,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTimeUtc>,
    pub dispatched_at: Option<DateTimeUtc>,
    pub worker_id: Option<String>,
    pub heartbeat_at: Option<DateTimeUtc>,
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
    /// Records of this batch waiting for a retry (counted in the job's `retrying`).
    pub retrying_records: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
