//! The reconciler's leadership: a session-level advisory lock held on a connection of its
//! own, so it lasts exactly as long as that connection. A leader that dies, or loses its
//! connection, frees it for another worker.

use sea_orm::sqlx::{self, Connection, PgConnection};

/// Advisory lock key of the reconciler's leadership ("FRGR").
pub const LEADER_LOCK_KEY: i64 = 0x4652_4752;

/// The connection holding the lock while this process leads.
pub struct Leadership(PgConnection);

impl Leadership {
    /// Takes the lock on a new connection, or `None` when another process holds it or
    /// the database cannot be reached.
    pub async fn try_take(database_url: &str) -> Option<Self> {
        let mut conn = PgConnection::connect(database_url).await.ok()?;
        let got: Result<bool, _> = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK_KEY)
            .fetch_one(&mut conn)
            .await;
        if matches!(got, Ok(true)) {
            Some(Self(conn))
        } else {
            let _ = conn.close().await;
            None
        }
    }

    /// Whether the connection, and so the lock, is still there.
    pub async fn is_held(&mut self) -> bool {
        self.0.ping().await.is_ok()
    }

    /// Gives the lock up.
    pub async fn release(self) {
        let _ = self.0.close().await;
    }
}
