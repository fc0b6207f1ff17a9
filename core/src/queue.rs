//! The Redis connection. Built by hand rather than with `apalis_redis::connect`, whose
//! 500 ms response timeout stops a worker on one slow reply (stack notes §2).

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;

use crate::config::RedisSettings;

pub async fn connect(settings: &RedisSettings) -> Result<ConnectionManager, redis::RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(settings.response_timeout))
        .set_connection_timeout(Some(settings.connection_timeout))
        .set_number_of_retries(5);
    redis::Client::open(settings.url.expose_secret())?
        .get_connection_manager_with_config(config)
        .await
}

/// `PING` with the connection's own timeouts: the readiness check.
pub async fn ping(conn: &mut ConnectionManager) -> Result<(), redis::RedisError> {
    redis::cmd("PING")
        .query_async::<String>(conn)
        .await
        .map(|_| ())
}
