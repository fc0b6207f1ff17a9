//! Freight's core, shared by the api and the worker, in layers that import only
//! downward (`scripts/check-layers` enforces it):
//!
//! ```text
//!   service        use cases: each begins and commits its own transaction
//!      |
//!   store   connectors   queue     SQL · destinations · the apalis-redis dispatch queue
//!      \        |        /
//!            domain                pure types and rules: no I/O
//!              |
//!   config  error  secrets  metrics  pg_copy  telemetry  shutdown
//! ```

pub mod config;
pub mod connectors;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod pg_copy;
pub mod queue;
pub mod secrets;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use error::{Error, FieldError, Result};

/// The version reported by `/health`, the workers table and logs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
