//! `ApiError`, the api's one error type, and the only place that picks an HTTP status and
//! writes an RFC 9457 `application/problem+json` document. Internal causes are logged
//! here, once, and never sent to the client.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use freight_core::{Error as CoreError, FieldError, error::BoxError};
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input: bad JSON, wrong JSON types, a bad UUID or cursor.
    #[error("{detail}")]
    BadRequest {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The tenant is over its request rate.
    #[error("too many requests: this tenant is limited to {limit} requests per second")]
    TooManyRequests {
        retry_after: std::time::Duration,
        limit: u32,
    },
    /// The tenant holds as many of something as it may at once on this replica
    /// (uploads, event streams): 429 with `Retry-After`.
    #[error(
        "this tenant already has {limit} {what} in progress on this server, its limit; retry when one has finished"
    )]
    TooManyAtOnce { what: &'static str, limit: usize },
    /// A tenant limit that frees up as its jobs finish (`max_pending_records`): 429, but
    /// not a rate limit, so no `Retry-After` (nobody knows when the jobs finish).
    #[error("{}", .0.message)]
    OverQuota(FieldError),
    /// A dependency is down: the detail is sent, the cause (its own error text, which
    /// may name hosts and addresses) only logged.
    #[error("{detail}")]
    Unavailable {
        detail: &'static str,
        #[source]
        cause: BoxError,
    },
    /// This replica is too busy for the request right now (a full queue): 503 with
    /// `Retry-After`.
    #[error("{detail}")]
    Overloaded {
        detail: String,
        retry_after: std::time::Duration,
    },
    /// The request body arrived too slowly (`UPLOAD_MIN_RATE`).
    #[error("{0}")]
    RequestTimeout(String),
    /// Something broke on our side. Logged with its causes, never sent.
    #[error(transparent)]
    Internal(BoxError),
}

impl ApiError {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::BadRequest {
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// An internal error: `message` says what failed, `cause` why.
    pub fn internal(message: &str, cause: impl std::fmt::Display) -> Self {
        Self::Internal(format!("{message}: {cause}").into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } | Self::OverQuota(_) | Self::TooManyAtOnce { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Unavailable { .. } | Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `urn:freight:problem:validation`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// One entry per broken rule, `field` being the dotted path into the request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        let title = status.canonical_reason().unwrap_or("Error").to_owned();
        let slug = title.to_ascii_lowercase().replace(' ', "-");
        Self {
            kind: format!("urn:freight:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn with_errors(self, errors: Vec<FieldError>) -> Self {
        Self { errors, ..self }
    }

    pub fn into_response_with(self, status: StatusCode) -> Response {
        let mut res = (status, Json(self)).into_response();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        res
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Whole seconds, rounded up: a client that waits this long gets through.
        let secs = |d: &std::time::Duration| (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1);
        let rate_headers = match &self {
            Self::TooManyRequests { retry_after, limit } => Some((secs(retry_after), *limit)),
            _ => None,
        };
        let retry_after = match &self {
            Self::Overloaded { retry_after, .. } => Some(secs(retry_after)),
            Self::TooManyAtOnce { .. } => Some(1),
            _ => None,
        };
        let problem = match self {
            Self::Internal(cause) => {
                tracing::error!(error = %chain(cause.as_ref()), "internal error");
                Problem::new(status, "an internal error occurred; it has been logged")
            }
            Self::Validation(errors) => Problem {
                errors,
                ..Problem::new(status, "the request breaks one or more rules; see `errors`")
            },
            Self::BadRequest { detail, errors } => Problem {
                errors,
                ..Problem::new(status, detail)
            },
            Self::OverQuota(error) => Problem {
                kind: "urn:freight:problem:pending-records-limit".into(),
                ..Problem::new(status, error.message.clone())
            }
            .with_errors(vec![error]),
            Self::Unavailable { detail, cause } => {
                tracing::warn!(%detail, error = %chain(cause.as_ref()), "dependency unavailable");
                Problem::new(status, detail)
            }
            other => Problem::new(status, other.to_string()),
        };
        let mut res = problem.into_response_with(status);
        if let Some(secs) = retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some((secs, limit)) = rate_headers {
            let h = res.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            h.insert("ratelimit-limit", HeaderValue::from(limit));
            h.insert("ratelimit-remaining", HeaderValue::from(0));
            h.insert("ratelimit-reset", HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

impl From<CoreError> for ApiError {
    fn from(err: CoreError) -> Self {
        match err {
            CoreError::Validation(errors) => Self::Validation(errors),
            CoreError::Malformed(detail) => Self::bad_request(detail),
            CoreError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            CoreError::Conflict(detail) => Self::Conflict(detail),
            CoreError::OverQuota(error) => Self::OverQuota(error),
            CoreError::Database(e) => from_db(e),
            CoreError::Redis(e) => Self::Unavailable {
                detail: "the queue (Redis) is unavailable; retry shortly",
                cause: e.into(),
            },
            e @ CoreError::Internal { .. } => Self::Internal(e.into()),
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(err: sea_orm::DbErr) -> Self {
        from_db(err)
    }
}

/// A database that cannot be reached is a 503 the client may retry; anything else is ours.
fn from_db(err: sea_orm::DbErr) -> ApiError {
    use sea_orm::DbErr;
    let down = match &err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Query(sea_orm::RuntimeErr::SqlxError(e))
        | DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e)) => unreachable(e),
        _ => false,
    };
    if down {
        ApiError::Unavailable {
            detail: "the database is unavailable; retry shortly",
            cause: err.into(),
        }
    } else {
        ApiError::Internal(err.into())
    }
}

/// An error and its causes, one after another: what a log line needs to say why.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        // Wrappers often repeat their cause's text; say it once.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// The database is down, restarting or out of connections, rather than refusing the
/// statement: the pool's own failures, and SQLSTATE classes 08 (connection exception) and
/// 57 (operator intervention: shutdown, restart, "starting up"), and 53300 (too many
/// connections).
fn unreachable(e: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error;
    match e {
        Error::Io(_) | Error::PoolTimedOut | Error::PoolClosed | Error::WorkerCrashed => true,
        Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57") || code == "53300"
        }),
        _ => false,
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
