//! The Redis connection. Built by hand rather than with `apalis_redis::connect`, whose
//! 500 ms response timeout stops a worker on one slow reply.

use redis::{
    IntoConnectionInfo,
    aio::{ConnectionManager, ConnectionManagerConfig},
    io::tcp::TcpSettings,
};
use secrecy::ExposeSecret;

use crate::config::RedisSettings;

pub async fn connect(settings: &RedisSettings) -> Result<ConnectionManager, redis::RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(settings.response_timeout))
        .set_connection_timeout(Some(settings.connection_timeout))
        .set_number_of_retries(5);
    // Commands from many tasks share one connection: without TCP_NODELAY a small write
    // behind an unacknowledged one waits for the server's delayed ACK.
    let info = settings
        .url
        .expose_secret()
        .into_connection_info()?
        .set_tcp_settings(TcpSettings::default().set_nodelay(true));
    redis::Client::open(info)?
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
