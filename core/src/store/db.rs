//! The Postgres pool and the schema check both processes run at start-up.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement,
};
use secrecy::ExposeSecret;

use crate::config::DatabaseSettings;

/// Opens the pool. Statement logging is off: sqlx would log every statement at INFO.
pub async fn connect(settings: &DatabaseSettings) -> Result<DatabaseConnection, sea_orm::DbErr> {
    let mut opts = ConnectOptions::new(settings.url.expose_secret().to_owned());
    opts.max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_timeout(settings.acquire_timeout)
        .idle_timeout(Duration::from_secs(300))
        .max_lifetime(Duration::from_secs(1800))
        .test_before_acquire(false)
        .sqlx_logging(false);
    Database::connect(opts).await
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
    #[error(
        "the database schema is behind this build (pending: {0}); run `freight migrate` or set MIGRATE_ON_START=true"
    )]
    Behind(String),
}

/// Migrates (under the advisory lock) when `migrate` is set; otherwise checks that no
/// migration is pending, so a process never runs against a schema it does not know.
pub async fn prepare_schema(db: &DatabaseConnection, migrate: bool) -> Result<(), SchemaError> {
    if migrate {
        let applied = migration::migrate(db).await?;
        if !applied.is_empty() {
            tracing::info!(migrations = %applied.join(", "), "applied migrations");
        }
    }
    let pending = migration::pending(db).await?;
    if pending.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::Behind(pending.join(", ")))
    }
}

/// `SELECT 1`: the readiness check.
pub async fn ping(db: &DatabaseConnection) -> Result<(), DbErr> {
    db.execute_unprepared("SELECT 1").await.map(|_| ())
}

/// The database's clock: what every replica agrees on, however skewed their own clocks.
pub async fn now(db: &impl ConnectionTrait) -> Result<DateTime<Utc>, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT now() AS now",
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("SELECT now() returned no row".into()))?;
    row.try_get("", "now")
}
