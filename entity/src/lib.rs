//! SeaORM entities for Freight, one module per table. The schema itself is
//! written by the `migration` crate; these only describe it. State columns are `text`
//! constrained by CHECK, mapped here to Rust enums.

#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod api_key;
pub mod batch;
pub mod dead_letter;
pub mod ids;
pub mod job;
pub mod job_record;
pub mod record_log;
pub mod tenant;
pub mod worker;

pub use ids::{BatchId, JobId, TenantId};

pub mod prelude {
    pub use super::api_key::Entity as ApiKey;
    pub use super::batch::Entity as Batch;
    pub use super::dead_letter::Entity as DeadLetter;
    pub use super::job::Entity as Job;
    pub use super::job_record::Entity as JobRecord;
    pub use super::record_log::Entity as RecordLog;
    pub use super::tenant::Entity as Tenant;
    pub use super::worker::Entity as Worker;
}
