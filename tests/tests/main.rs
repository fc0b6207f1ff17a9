//! One test binary for the whole suite (one compile, one template database per run).

mod audit;
mod auth;
mod engine;
mod fairness;
mod hostile_auth;
mod hostile_destinations;
mod hostile_fleet;
mod hostile_leaks;
mod hostile_requests;
mod intake_fuzz;
mod intake_idempotency;
mod intake_listing;
mod intake_support;
mod intake_upload;
mod intake_validation;
mod isolation;
mod limits;
mod observability;
mod ops;
mod reads;
mod redaction;
mod retries;
mod secrets;
mod upkeep;
mod worker;
