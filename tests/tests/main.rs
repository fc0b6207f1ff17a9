//! One test binary for the whole suite (one compile, one template database per run).

mod auth;
mod ops;
mod worker;
