//! Freight's domain, shared by the api and the worker: configuration, validated job specs,
//! API keys, retry policy, and the repository functions that hold every SQL statement.

pub mod config;
pub mod db;
pub mod destinations;
pub mod dispatch;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod pg_copy;
pub mod pg_txn;
pub mod queue;
pub mod repo;
pub mod secrets;
pub mod shutdown;
pub mod telemetry;

pub use error::{Error, FieldError, Result};

/// The version reported by `/health`, the workers table and logs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
