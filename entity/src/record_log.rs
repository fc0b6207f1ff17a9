use sea_orm::entity::prelude::*;

use crate::ids::{BatchId, JobId, TenantId};
use serde::{Deserialize, Serialize};

/// A record's outcome in one attempt, as its log row records it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
impl RecordOutcome {
    /// The stored value, without an allocation (the ledger writes one per record).
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordOutcome::Succeeded => "succeeded",
            RecordOutcome::Failed => "failed",
            RecordOutcome::DeadLettered => "dead_lettered",
            RecordOutcome::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "record_logs")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub job_id: JobId,
    pub tenant_id: TenantId,
    pub batch_id: BatchId,
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

#[cfg(test)]
mod tests {
    use sea_orm::Iterable;

    use super::*;

    #[test]
    fn as_str_is_the_stored_value() {
        for v in RecordOutcome::iter() {
            assert_eq!(v.as_str(), v.to_value());
        }
    }
}
