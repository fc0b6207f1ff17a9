//! Extractors that own their rejections: malformed JSON, wrong types, bad UUIDs, bad query
//! strings, over-limit bodies and wrong content types all come back as problem documents.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Query, Request, rejection::BytesRejection},
    http::{HeaderMap, header, request::Parts},
};
use freight_core::FieldError;
use serde::{Deserialize, de::DeserializeOwned};

use crate::error::ApiError;

/// A JSON body (`Content-Type: application/json` or `+json`) holding a JSON object, or a
/// problem. Every request body of this API is an object; without the check serde would
/// also fill a struct from a JSON array, field by field in order (`["acme"]` created a
/// tenant named `acme` until Schemathesis sent one).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ApiJsonBytes(bytes) = ApiJsonBytes::from_request(req, state).await?;
        Ok(ApiJson(parse_json(&bytes)?))
    }
}

/// A JSON object body kept as its bytes, for handlers that parse it themselves (borrowing
/// from it rather than building a value): the same checks as [`ApiJson`] but the parse.
pub struct ApiJsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiJsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            // Say what is wrong with it: not JSON at all, or JSON of the wrong shape.
            parse_json::<serde::de::IgnoredAny>(&bytes)?;
            return Err(ApiError::bad_request(
                "the body has the wrong shape: expected a JSON object",
            ));
        }
        Ok(ApiJsonBytes(bytes))
    }
}

pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = media_type(headers);
    if ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "expected Content-Type: application/json, got `{}`",
            if ct.is_empty() { "nothing" } else { &ct }
        )))
    }
}

/// The media type of the request, lower-cased, without parameters.
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

pub fn body_rejection(err: BytesRejection) -> ApiError {
    if crate::limits::is_slow_body(&err) {
        return ApiError::RequestTimeout(slow_body_message());
    }
    if err.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE || over_limit(&err) {
        ApiError::PayloadTooLarge(
            "the request body is larger than the configured limit (HTTP_BODY_LIMIT)".into(),
        )
    } else {
        ApiError::bad_request(format!("could not read the request body: {err}"))
    }
}

/// Parses JSON into `T`, which may borrow from `bytes`. Syntax errors and wrong types are
/// both 400, naming the path.
pub fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| json_error(e.path().to_string(), e.inner()))?;
    // Anything but white space after the document is an error, not something to ignore.
    de.end()
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// Converts an already parsed JSON value into `T`, naming the path of a wrong type.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| json_error(e.path().to_string(), e.inner()))
}

fn json_error(path: String, err: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Data if path != "." => ApiError::BadRequest {
            detail: format!("`{path}`: {err}"),
            errors: vec![FieldError::new(path, err.to_string())],
        },
        Category::Data => ApiError::bad_request(format!("the body has the wrong shape: {err}")),
        _ => ApiError::bad_request(format!("the body is not valid JSON: {err}")),
    }
}

/// A path parameter; a malformed one (a bad UUID) is a 400.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| {
                ApiError::bad_request(format!("invalid path parameter: {}", e.body_text()))
            })
    }
}

/// A query string; a malformed one is a 400.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
    }
}

/// What a client whose body was cut off for slowness is told.
pub fn slow_body_message() -> String {
    "the request body arrived too slowly (UPLOAD_MIN_RATE): send it faster, or in smaller calls"
        .into()
}

/// Whether the body limit (`HTTP_BODY_LIMIT`) is why reading a body failed, however
/// many layers wrapped the error.
pub fn over_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}
