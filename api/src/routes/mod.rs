//! One router per resource, merged here. Every handler carries `#[utoipa::path]`, so the
//! OpenAPI document is built from the same list that routes requests.

pub mod admin;
pub mod api_keys;
pub mod batches;
pub mod dead_letters;
pub mod events;
pub mod fleet;
pub mod jobs;
pub mod logs;
pub mod ops;
pub mod retries;
pub mod retry_policies;
pub mod stats;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(jobs::router())
        .merge(batches::router())
        .merge(events::router())
        .merge(logs::router())
        .merge(dead_letters::router())
        .merge(retries::router())
        .merge(stats::router())
        .merge(retry_policies::router())
        .merge(api_keys::router())
        .merge(admin::router())
        .merge(fleet::router())
        .merge(ops::router())
}
