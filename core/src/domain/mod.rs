//! Pure types and rules: request shapes that parse and validate (once a value is here, it
//! is valid), destinations and their redaction, retry policy, what a delivery produces.
//! Nothing here does I/O.

pub mod api_key;
pub mod attempt;
pub mod audit;
pub mod decode;
pub mod delivery;
pub mod destination;
pub mod job_spec;
pub mod json_array;
pub mod ndjson;
pub mod postgres_url;
pub mod record;
pub mod retry_policy;
pub mod ssrf;
pub mod tenant;
