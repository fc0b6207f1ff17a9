//! Freight's schema. This crate is the only author of the tables; `freight migrate`,
//! the api and the worker all apply it through [`migrate`], which serialises concurrent
//! starters with a Postgres advisory lock.

#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{DatabaseConnection, TransactionTrait};

mod m20261122_000001_initial;
mod m20261122_000002_engine;
mod m20261122_000003_indexes;
mod m20261122_000004_ledger_costs;
mod m20261122_000005_payload_as_json;
mod m20261122_000010_audit;
mod m20261122_000011_pending_limit;
mod m20261204_000012_concurrent_uploads;
mod m20261208_000013_key_scopes;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_initial::Migration),
            Box::new(m20261122_000002_engine::Migration),
            Box::new(m20261122_000003_indexes::Migration),
            Box::new(m20261122_000004_ledger_costs::Migration),
            Box::new(m20261122_000005_payload_as_json::Migration),
            Box::new(m20261122_000010_audit::Migration),
            Box::new(m20261122_000011_pending_limit::Migration),
            Box::new(m20261204_000012_concurrent_uploads::Migration),
            Box::new(m20261208_000013_key_scopes::Migration),
        ]
    }
}

/// Advisory lock key shared by every process that migrates ("FRGT" in ASCII).
pub const MIGRATION_LOCK_KEY: i64 = 0x4652_4754;

/// Applies every pending migration inside one transaction that first takes a
/// transaction-scoped advisory lock, so an api and a worker starting at the same moment
/// run the migrations once, one after the other, never interleaved.
/// Returns the names of the migrations this call applied (none if another process got
/// there first).
pub async fn migrate(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    let txn = db.begin().await?;
    txn.execute_unprepared(&format!(
        "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
    ))
    .await?;
    let applied: Vec<String> = Migrator::get_pending_migrations(&txn)
        .await?
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    Migrator::up(&txn, None).await?;
    txn.commit().await?;
    Ok(applied)
}

/// Names of migrations defined in code but not yet applied to `db`.
pub async fn pending(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    Ok(Migrator::get_pending_migrations(db)
        .await?
        .iter()
        .map(|m| m.name().to_owned())
        .collect())
}
