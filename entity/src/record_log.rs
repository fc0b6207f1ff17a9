use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A record's outcome in one attempt (api-contract "Record outcomes in logs").
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[sea_orm(rs_type = "String", db_type = "Text")]
#[serde(rename_all = "snake_case")]
pub enum RecordOutcome {
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    #[sea_orm(string_value = "failed")]
    Failed,
    #[sea_orm(string_value = "dead_lettered")]
    DeadLettered,
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

/// Append-only: one row per record per attempt.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "record_logs")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub job_id: Uuid,
    pub tenant_id: Uuid,
    pub batch_id: Uuid,
    pub record_seq: i64,
    pub attempt: i32,
    pub status: RecordOutcome,
    pub error: Option<String>,
    pub duration_ms: Option<i32>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
