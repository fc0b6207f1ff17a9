use sea_orm::entity::prelude::*;

use crate::ids::{JobId, TenantId};
use serde::{Deserialize, Serialize};

/// A staged record's current status; its history is in `record_logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "Text")]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    #[sea_orm(string_value = "dead_lettered")]
    DeadLettered,
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

impl RecordStatus {
    /// The stored value, without an allocation (the ledger writes one per record).
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordStatus::Pending => "pending",
            RecordStatus::Succeeded => "succeeded",
            RecordStatus::DeadLettered => "dead_lettered",
            RecordStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "job_records")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub job_id: JobId,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub tenant_id: TenantId,
    pub record_key: Option<String>,
    /// `json`: the validated text as sent (migration 000005).
    #[sea_orm(column_type = "Json")]
    pub payload: Json,
    pub status: RecordStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
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
        for v in RecordStatus::iter() {
            assert_eq!(v.as_str(), v.to_value());
        }
    }
}
