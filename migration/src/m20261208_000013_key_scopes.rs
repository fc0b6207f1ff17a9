//! `api_keys.scopes`: what each key may do (`jobs:read`, `jobs:write`, `keys:manage`).
//! Every existing key keeps all three, as it could before.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE api_keys ADD COLUMN scopes text[] NOT NULL
                     DEFAULT ARRAY['jobs:read', 'jobs:write', 'keys:manage']
                     CHECK (cardinality(scopes) > 0
                            AND scopes <@ ARRAY['jobs:read', 'jobs:write', 'keys:manage']);",
            )
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE api_keys DROP COLUMN IF EXISTS scopes;")
            .await
            .map(|_| ())
    }
}
