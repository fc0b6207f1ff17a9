//! The tower-http stack every request passes through, outermost first: request id (set,
//! then echoed), a tracing span carrying it, compression, problem documents for bare
//! error responses, panic → 500 problem, request timeout, CORS, the body limit and the
//! body's minimum rate.

use std::{any::Any, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{DefaultBodyLimit, Request},
    http::{HeaderValue, Method, StatusCode, header},
    response::Response,
};
use freight_core::config::HttpSettings;
use tower::ServiceBuilder;
use tower_http::{
    LatencyUnit,
    catch_panic::CatchPanicLayer,
    compression::CompressionLayer,
    cors::{AllowOrigin, Any as AnyOrigin, CorsLayer},
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use crate::error::{PROBLEM_JSON, Problem};

pub fn apply(router: Router, settings: &HttpSettings) -> Router {
    // Several `Router::layer` calls rather than one stack: each call turns the response
    // body back into axum's `Body`, which the timeout and `map_response` need.
    router
        .layer(axum::middleware::from_fn_with_state(
            (settings.min_body_rate, settings.min_body_rate_window),
            crate::limits::min_body_rate,
        ))
        .layer(
            ServiceBuilder::new()
                .layer(RequestBodyLimitLayer::new(settings.body_limit))
                .layer(DefaultBodyLimit::max(settings.body_limit)),
        )
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(panic_problem))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    settings.request_timeout,
                ))
                .layer(cors(&settings.cors_allowed_origins)),
        )
        .layer(axum::middleware::map_response(problem_for_bare_errors))
        .layer(axum::middleware::map_response(security_headers))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_request(())
                        .on_response(
                            DefaultOnResponse::new()
                                .level(Level::INFO)
                                .latency_unit(LatencyUnit::Millis),
                        )
                        .on_failure(DefaultOnFailure::new().level(Level::ERROR)),
                )
                .layer(CompressionLayer::new()),
        )
}

/// The request span: every log line of a request carries its id. No query string, no
/// headers: those may hold keys.
fn request_span(req: &Request<Body>) -> tracing::Span {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %request_id,
        tenant.id = tracing::field::Empty,
    )
}

fn cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            "x-api-key".parse().unwrap(),
            "idempotency-key".parse().unwrap(),
        ])
        .expose_headers(["x-request-id".parse().unwrap(), header::LOCATION])
        .max_age(Duration::from_secs(600));
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AnyOrigin)
    } else {
        layer.allow_origin(AllowOrigin::list(
            origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
        ))
    }
}

/// Error responses made by layers or by axum itself (404 fallback, 405, 408 timeout, 413
/// from the body limit) carry no problem document; give them one, keeping their headers.
async fn problem_for_bare_errors(res: Response) -> Response {
    let status = res.status();
    // Only bare responses: no body type, or the plain text layers write. A JSON body
    // (a problem, or `/ready`'s report) is already what the client should see.
    let bare = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !bare {
        return res;
    }
    let detail = match status {
        StatusCode::NOT_FOUND => "no such route; see /api/v1/openapi.json",
        StatusCode::METHOD_NOT_ALLOWED => "this route does not accept that method",
        StatusCode::REQUEST_TIMEOUT => {
            "the request took longer than the server's limit (HTTP_REQUEST_TIMEOUT)"
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            "the request body is larger than the configured limit (HTTP_BODY_LIMIT)"
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported Content-Type",
        _ => status.canonical_reason().unwrap_or("error"),
    };
    let (mut parts, _) = res.into_parts();
    let mut fresh = Problem::new(status, detail).into_response_with(status);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    std::mem::swap(fresh.headers_mut(), &mut parts.headers);
    fresh
}

/// Headers every response carries: no content sniffing (a JSON body is never read as
/// HTML), and no `Referer` leaking an api URL (with a job id) to another site.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

fn panic_problem(err: Box<dyn Any + Send + 'static>) -> Response {
    let message = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = %message, "handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "an internal error occurred; it has been logged",
    )
    .into_response_with(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Counts and times every request by its route template (`/api/v1/jobs/{id}`, or
/// `unmatched`) and its method (one of a fixed set, or `OTHER`), never anything the
/// client spells: a raw path or a made-up method in a label would make each request a
/// new time series, kept for ever.
pub async fn track_http(
    matched: Option<axum::extract::MatchedPath>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    use freight_core::metrics::{HTTP_DURATION, HTTP_REQUESTS};
    let route = matched
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    res
}

/// The methods a label may name; any other is `OTHER`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
