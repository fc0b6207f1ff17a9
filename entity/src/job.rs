use sea_orm::entity::prelude::*;

use crate::ids::{JobId, TenantId};
use serde::{Deserialize, Serialize};

/// Job states (`docs/api.md`, "Job states").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[sea_orm(rs_type = "String", db_type = "Text")]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    #[sea_orm(string_value = "awaiting_upload")]
    AwaitingUpload,
    #[sea_orm(string_value = "queued")]
    Queued,
    #[sea_orm(string_value = "running")]
    Running,
    #[sea_orm(string_value = "completed")]
    Completed,
    #[sea_orm(string_value = "completed_with_errors")]
    CompletedWithErrors,
    #[sea_orm(string_value = "failed")]
    Failed,
    #[sea_orm(string_value = "cancelling")]
    Cancelling,
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::CompletedWithErrors | Self::Failed | Self::Cancelled
        )
    }
}

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: JobId,
    pub tenant_id: TenantId,
    pub name: Option<String>,
    pub status: JobStatus,
    #[sea_orm(column_type = "JsonBinary")]
    pub source: Json,
    /// The full destination spec, secrets included: never serialise it as is.
    #[sea_orm(column_type = "JsonBinary")]
    pub destination: Json,
    pub record_key: Option<String>,
    pub batch_size: i32,
    pub parallelism: i32,
    #[sea_orm(column_type = "JsonBinary")]
    pub retry_policy: Json,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
    pub total_records: i64,
    /// The highest record sequence number handed out to an upload: `total_records`
    /// unless uploads ran concurrently or one failed after reserving (gaps).
    pub last_reserved_seq: i64,
    pub succeeded_records: i64,
    pub dead_lettered_records: i64,
    pub cancelled_records: i64,
    pub retrying_records: i64,
    pub error: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub cancel_requested_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
