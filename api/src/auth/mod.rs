//! Authentication as extractors: a handler that names [`AuthTenant`] or [`Operator`]
//! cannot forget to check, and every tenant query takes the tenant id it yields.
//!
//! The extractors need only the [`Gate`], which any router state provides through
//! `FromRef`: this module knows nothing of the api's `AppState`.

mod authenticator;
pub mod rate_limit;
pub mod sessions;

pub use authenticator::{Authenticator, Principal};
use sessions::AtLimit;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, FromRef, FromRequestParts},
    http::{Method, request::Parts},
};
use entity::TenantId;
use freight_core::{
    config::{Cidr, Settings},
    domain::api_key::{ApiKey, Scope},
    domain::audit::Actor,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::error::ApiError;

/// What authentication needs, cheap to clone: the key verifier (with its caches and
/// long-response sessions), the tenants' rate limits, the operator token's digest, and
/// the settings that shape them.
#[derive(Clone)]
pub struct Gate(Arc<GateParts>);

pub struct GateParts {
    pub authenticator: Arc<Authenticator>,
    pub rate_limiter: rate_limit::RateLimiter,
    admin_token_digest: [u8; 32],
    trusted_proxies: Vec<Cidr>,
    tenant_max_streams: usize,
    stream_max_lifetime: Duration,
}

impl std::ops::Deref for Gate {
    type Target = GateParts;

    fn deref(&self) -> &GateParts {
        &self.0
    }
}

impl Gate {
    pub fn new(authenticator: Arc<Authenticator>, settings: &Settings, admin_token: &str) -> Self {
        Self(Arc::new(GateParts {
            authenticator,
            rate_limiter: Default::default(),
            admin_token_digest: token_digest(admin_token),
            trusted_proxies: settings.http.trusted_proxies.clone(),
            tenant_max_streams: settings.http.tenant_max_streams,
            stream_max_lifetime: settings.http.stream_max_lifetime,
        }))
    }

    pub fn is_admin_token(&self, presented: &str) -> bool {
        digests_equal(&token_digest(presented), &self.admin_token_digest)
    }
}

/// A request authenticated with a tenant API key (`Authorization: Bearer` or `X-API-Key`).
#[derive(Debug, Clone)]
pub struct AuthTenant {
    pub tenant_id: TenantId,
    pub key_id: Uuid,
    /// The key's public id (not secret): how the audit trail names the caller.
    pub public_id: String,
}

impl AuthTenant {
    /// Opens a long response (event stream, download) for this key: at most
    /// `TENANT_MAX_EVENT_STREAMS` per tenant on this replica (429 beyond), each ended
    /// after `STREAM_MAX_LIFETIME` or when the key is revoked or the tenant suspended.
    pub fn open_stream<S: futures::Stream>(
        &self,
        gate: &Gate,
        stream: S,
    ) -> Result<impl futures::Stream<Item = S::Item> + use<S>, ApiError> {
        let session = gate
            .authenticator
            .sessions
            .open(self.tenant_id, self.key_id, gate.tenant_max_streams)
            .map_err(|AtLimit(limit)| ApiError::TooManyAtOnce {
                what: "event streams and downloads",
                limit,
            })?;
        Ok(session.bound(stream, gate.stream_max_lifetime))
    }

    /// The caller as the audit trail records it: `key:<public id>`.
    pub fn actor(&self) -> Actor {
        Actor::Key {
            public_id: self.public_id.clone(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthTenant
where
    Gate: FromRef<S>,
{
    type Rejection = ApiError;

    /// Authenticates the key, then requires the scope the request needs
    /// ([`required_scope`]), then takes a token from the tenant's rate limit.
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let gate = Gate::from_ref(state);
        let token = presented_token(parts)?.ok_or_else(|| {
            ApiError::Unauthorized(
                "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`".into(),
            )
        })?;
        if gate.is_admin_token(&token) {
            return Err(ApiError::Unauthorized(
                "the operator token is not a tenant API key; create a key for the tenant".into(),
            ));
        }
        let client = client_ip(parts, &gate.trusted_proxies);
        let p = gate.authenticator.authenticate_from(&token, client).await?;
        let needed = required_scope(&parts.method, parts.uri.path());
        if !p.scopes.contains(needed) {
            return Err(ApiError::Forbidden(format!(
                "this API key lacks the `{}` scope this request needs (it has {:?})",
                needed.as_str(),
                p.scopes
            )));
        }
        gate.rate_limiter
            .check(p.tenant_id, p.rate)
            .map_err(|l| ApiError::TooManyRequests {
                retry_after: l.retry_after,
                limit: l.limit,
            })?;
        let span = tracing::Span::current();
        span.record("tenant.id", tracing::field::display(p.tenant_id));
        let public_id = ApiKey::parse(&token)
            .map(|k| k.public_id().to_owned())
            .map_err(|_| ApiError::Unauthorized("malformed API key".into()))?;
        Ok(AuthTenant {
            tenant_id: p.tenant_id,
            key_id: p.key_id,
            public_id,
        })
    }
}

/// A request carrying the operator's `ADMIN_TOKEN`.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

impl<S: Send + Sync> FromRequestParts<S> for Operator
where
    Gate: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let gate = Gate::from_ref(state);
        let token = presented_token(parts)?.ok_or_else(|| {
            ApiError::Unauthorized(
                "missing operator token: send `Authorization: Bearer <ADMIN_TOKEN>`".into(),
            )
        })?;
        if gate.is_admin_token(&token) {
            return Ok(Operator);
        }
        let client = client_ip(parts, &gate.trusted_proxies);
        if ApiKey::parse(&token).is_ok()
            && gate
                .authenticator
                .authenticate_from(&token, client)
                .await
                .is_ok()
        {
            return Err(ApiError::Forbidden(
                "this is an operator route; a tenant API key cannot use it".into(),
            ));
        }
        Err(ApiError::Unauthorized("invalid operator token".into()))
    }
}

/// The scope a tenant request needs: `keys:manage` for the key routes, else `jobs:read`
/// to read (GET, HEAD) and `jobs:write` for anything else. One rule for every route, so
/// a new route cannot forget to name its scope.
pub fn required_scope(method: &Method, path: &str) -> Scope {
    if path == "/api/v1/api-keys" || path.starts_with("/api/v1/api-keys/") {
        Scope::KeysManage
    } else if method == Method::GET || method == Method::HEAD {
        Scope::JobsRead
    } else {
        Scope::JobsWrite
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy
/// (`HTTP_TRUSTED_PROXIES`), the last address in `X-Forwarded-For` that is not one.
pub fn client_ip(parts: &Parts, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(*ip))
        .or(Some(peer))
}

/// The bearer token or `X-API-Key` value, if any. A header that is present but not
/// readable (non-ASCII, wrong scheme) is a 401 of its own.
fn presented_token(parts: &Parts) -> Result<Option<String>, ApiError> {
    if let Some(v) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| ApiError::Unauthorized("unreadable Authorization header".into()))?;
        let (scheme, token) = v.trim().split_once(' ').unwrap_or((v, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::Unauthorized(
                "the Authorization header must be `Bearer <token>`".into(),
            ));
        }
        return Ok(Some(token.trim().to_owned()));
    }
    if let Some(v) = parts.headers.get("x-api-key") {
        let v = v
            .to_str()
            .map_err(|_| ApiError::Unauthorized("unreadable X-API-Key header".into()))?;
        return Ok(Some(v.trim().to_owned()));
    }
    Ok(None)
}

/// SHA-256 of the admin token: comparing digests in constant time reveals neither the
/// token's bytes nor its length through timing.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(peer: &str, forwarded: Option<&str>) -> Parts {
        let mut req = axum::http::Request::builder().uri("/api/v1/jobs");
        if let Some(f) = forwarded {
            req = req.header("x-forwarded-for", f);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        parts
            .extensions
            .insert(ConnectInfo::<SocketAddr>(peer.parse().unwrap()));
        parts
    }

    #[test]
    fn the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // A client cannot name itself someone else.
        assert_eq!(
            client_ip(&parts("203.0.113.9:4000", Some("198.51.100.1")), &trusted),
            ip("203.0.113.9")
        );
        // Through the balancer: the last hop it did not add itself.
        assert_eq!(
            client_ip(
                &parts("10.1.2.3:4000", Some("1.2.3.4, 198.51.100.7, 10.9.9.9")),
                &trusted
            ),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(&parts("10.1.2.3:4000", None), &trusted),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn scopes_follow_one_rule_for_every_route() {
        assert_eq!(
            required_scope(&Method::GET, "/api/v1/jobs/x/logs"),
            Scope::JobsRead
        );
        assert_eq!(
            required_scope(&Method::POST, "/api/v1/jobs"),
            Scope::JobsWrite
        );
        assert_eq!(
            required_scope(&Method::GET, "/api/v1/api-keys"),
            Scope::KeysManage
        );
        assert_eq!(
            required_scope(&Method::DELETE, "/api/v1/api-keys/x"),
            Scope::KeysManage
        );
        assert_eq!(
            required_scope(&Method::GET, "/api/v1/api-keysx"),
            Scope::JobsRead
        );
    }
}
