//! Every SQL statement Freight runs, one function per statement, grouped by table. A
//! function runs on whatever connection or transaction it is given and never begins or
//! commits one: the use cases in `service` do.
//! Tenant-owned queries take the tenant id as their first argument and filter by it, so
//! another tenant's row is simply not found.

pub mod api_keys;
pub mod audit;
pub mod batches;
pub mod cancellations;
pub mod db;
pub mod fleet;
pub mod jobs;
pub mod leadership;
pub mod ledger;
pub mod lifecycle;
pub mod page;
pub mod pg_txn;
pub mod reads;
pub mod reconcile;
pub mod records;
pub mod tenants;
pub mod upkeep;
pub mod windows;
pub mod workers;

use sea_orm::{DbErr, RuntimeErr, sqlx};

/// True when `err` is a unique violation (SQLSTATE 23505) of the named constraint or
/// index, as Postgres names it in the error's fields (not its message, which is
/// translated with the server's locale).
pub(crate) fn is_unique_violation(err: &DbErr, constraint: &str) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = err
    else {
        return false;
    };
    matches!(e.as_ref(), sqlx::Error::Database(db)
        if db.code().as_deref() == Some("23505") && db.constraint() == Some(constraint))
}
