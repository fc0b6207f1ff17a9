//! One router per resource, merged here. Every handler carries `#[utoipa::path]`, so the
//! OpenAPI document is built from the same list that routes requests.

pub mod admin;
pub mod api_keys;
pub mod jobs;
pub mod ops;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(jobs::router())
        .merge(api_keys::router())
        .merge(admin::router())
        .merge(ops::router())
}
