//! The OpenAPI 3.1 document: info, security schemes and tags here; paths and schemas come
//! from the `#[utoipa::path]` on each handler, collected by the routers.

use serde_json::{Value, json};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::error::PROBLEM_JSON;

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
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("METRICS_TOKEN, when the operator sets one"))
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

/// Finishes the served document, once, after every router has added its paths:
///
/// - error responses are `application/problem+json` (what the api sends), not the
///   `application/json` utoipa writes for `body = Problem`;
/// - responses every operation of a kind can give are documented on each, rather than
///   repeated in every annotation: 400, 413 and 415 where a JSON body is read, 400 where a
///   path parameter is parsed, 401 and 429 on tenant routes (bad key, rate limit), 401
///   and 403 on operator routes.
///
/// Found by Schemathesis (`scripts/schemathesis`): the served errors did not match the
/// documented content type.
pub fn finish(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            if !matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "patch" | "head" | "options" | "trace"
            ) {
                continue;
            }
            finish_operation(op);
        }
    }
}

fn finish_operation(op: &mut Value) {
    let takes_json = op
        .pointer("/requestBody/content/application~1json")
        .is_some();
    let has_path_params = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|ps| ps.iter().any(|p| p["in"] == "path"));
    let schemes: Vec<String> = op
        .get("security")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|req| req.keys().cloned())
        .collect();
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    problems_as_problem_json(responses);
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| problem_response(description));
    };
    if takes_json {
        add("400", "malformed JSON, or a JSON value of the wrong type");
        add("408", "the body arrived slower than UPLOAD_MIN_RATE");
        add("413", "the body is larger than HTTP_BODY_LIMIT");
        add("415", "the body is not `application/json`");
    }
    if has_path_params {
        add("400", "a path parameter is not a valid UUID");
    }
    if schemes.iter().any(|s| s == "api_key") {
        add(
            "401",
            "missing, malformed, unknown, expired or revoked API key",
        );
        add(
            "403",
            "the key lacks the scope the request needs (the problem names it), or the tenant is suspended",
        );
        add(
            "429",
            "over the tenant's request rate, or this client's failed authentications (`Retry-After` says when to retry)",
        );
        add(
            "503",
            "too many API keys are being verified at once (`Retry-After` says when to retry)",
        );
    }
    if schemes.iter().any(|s| s == "admin_token") {
        add("401", "missing or wrong operator token");
        add("403", "a tenant API key on an operator route");
    }
}

/// Problem bodies are served as `application/problem+json`, so the document says so.
fn problems_as_problem_json(responses: &mut serde_json::Map<String, Value>) {
    for response in responses.values_mut() {
        let Some(content) = response.get_mut("content").and_then(Value::as_object_mut) else {
            continue;
        };
        let is_problem = content
            .get("application/json")
            .and_then(|c| c.pointer("/schema/$ref"))
            .is_some_and(|r| r == PROBLEM_REF);
        if is_problem && let Some(c) = content.remove("application/json") {
            content.insert(PROBLEM_JSON.to_owned(), c);
        }
    }
}

const PROBLEM_REF: &str = "#/components/schemas/Problem";

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
    })
}
