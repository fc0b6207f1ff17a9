//! Newtypes and request shapes that parse: once a value is here, it is valid.

pub mod api_key;
pub mod decode;
pub mod destination;
pub mod job_spec;
pub mod json_array;
pub mod ndjson;
pub mod postgres_url;
pub mod record;
pub mod retry_policy;
pub mod ssrf;
