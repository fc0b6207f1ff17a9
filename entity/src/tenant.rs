use sea_orm::entity::prelude::*;

use crate::ids::TenantId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[sea_orm(rs_type = "String", db_type = "Text")]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    #[sea_orm(string_value = "active")]
    Active,
    #[sea_orm(string_value = "suspended")]
    Suspended,
}

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: TenantId,
    #[sea_orm(unique)]
    pub name: String,
    pub status: TenantStatus,
    pub max_concurrent_jobs: i32,
    pub rate_limit_per_second: i32,
    pub rate_limit_burst: i32,
    pub max_records_per_job: Option<i64>,
    /// Records not yet terminal across the tenant's unfinished jobs; `None`: no limit.
    pub max_pending_records: Option<i64>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub retry_policy: Option<Json>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
