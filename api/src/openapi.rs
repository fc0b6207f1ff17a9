//! The OpenAPI 3.1 document: info, security schemes and tags here; paths and schemas come
//! from the `#[utoipa::path]` on each handler, collected by the routers.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Freight",
        description = "Record migration jobs as a service. Errors are RFC 9457 problem documents (`application/problem+json`).",
    ),
    modifiers(&SecuritySchemes),
    components(schemas(crate::error::Problem, freight_core::FieldError)),
    tags(
        (name = "jobs", description = "Create, upload, start and follow record migration jobs"),
        (name = "api-keys", description = "A tenant's own API keys"),
        (name = "admin", description = "Operator routes (ADMIN_TOKEN)"),
        (name = "ops", description = "Health and readiness"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A tenant API key, `frk_<public id>_<secret>` (also accepted as `X-API-Key`)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The operator's ADMIN_TOKEN"))
                    .build(),
            ),
        );
    }
}
