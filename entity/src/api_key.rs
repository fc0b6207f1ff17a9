use sea_orm::entity::prelude::*;

use crate::ids::TenantId;

/// An API key. Only the Argon2id PHC string of the secret is stored; the plaintext key
/// exists once, in the response that created it.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub name: Option<String>,
    #[sea_orm(unique)]
    pub public_id: String,
    pub secret_hash: String,
    pub created_at: DateTimeUtc,
    pub last_used_at: Option<DateTimeUtc>,
    pub expires_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
    /// What the key may do: `jobs:read`, `jobs:write`, `keys:manage`.
    pub scopes: Vec<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
