//! The dispatch queue: apalis-redis messages that say "deliver this batch", and the Redis
//! connection they travel on. Redis is a hint: Postgres holds every batch's state.

pub mod connection;
pub mod dispatch;

pub use dispatch::{DeliverBatch, Dispatcher, RedisDepth, queue_config};
