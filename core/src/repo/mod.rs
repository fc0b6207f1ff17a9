//! Every SQL statement Freight runs, one function per statement, grouped by table.
//! Tenant-owned queries take the tenant id as their first argument and filter by it, so
//! another tenant's row is simply not found.

pub mod api_keys;
pub mod audit;
pub mod batches;
pub mod fleet;
pub mod jobs;
pub mod ledger;
pub mod lifecycle;
pub mod page;
pub mod reads;
pub mod reconcile;
pub mod records;
pub mod tenants;
pub mod windows;
pub mod workers;

use sea_orm::{DbErr, SqlErr};

/// True when `err` is a unique violation of the named constraint or index.
pub(crate) fn is_unique_violation(err: &DbErr, constraint: &str) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(msg)) if msg.contains(constraint))
}
