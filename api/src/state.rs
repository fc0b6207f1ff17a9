//! What every handler can reach.

use std::sync::Arc;

use freight_core::config::Settings;
use redis::aio::ConnectionManager;
use sea_orm::DatabaseConnection;

use crate::auth::{Authenticator, digests_equal, token_digest};

#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub redis: ConnectionManager,
    pub settings: Arc<Settings>,
    pub auth: Arc<Authenticator>,
    admin_token_digest: [u8; 32],
}

impl AppState {
    pub fn new(
        db: DatabaseConnection,
        redis: ConnectionManager,
        settings: Arc<Settings>,
        auth: Arc<Authenticator>,
        admin_token: &str,
    ) -> Self {
        Self {
            db,
            redis,
            settings,
            auth,
            admin_token_digest: token_digest(admin_token),
        }
    }

    pub fn is_admin_token(&self, presented: &str) -> bool {
        digests_equal(&token_digest(presented), &self.admin_token_digest)
    }
}
