//! Operator routes under `/api/v1/admin`, all behind the `Operator` extractor.

pub mod audit;
pub mod tenants;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    tenants::router().merge(audit::router())
}
