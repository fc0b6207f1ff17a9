//! Destinations: where a job's records go, as validated from a request and stored on the
//! job. The stored form keeps secrets (header values, URL passwords), sealed when the
//! operator configured a key ([`crate::secrets`]); responses only ever see
//! [`Destination::redacted`].

use std::{collections::BTreeMap, convert::Infallible, net::IpAddr, time::Duration};

use serde::{Deserialize, Serialize};
use url::Url;
use utoipa::ToSchema;

use super::ssrf;
use crate::{error::Problems, secrets};

pub const REDACTED: &str = "[redacted]";
/// What a URL password becomes (brackets would be percent-encoded inside a URL).
pub const REDACTED_PASSWORD: &str = "redacted";

/// The request shape, flat so that each missing or bad field can be named in a 422
/// (an unknown `type` is a broken rule, not a malformed document).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct DestinationInput {
    /// `http` or `postgres`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `http`: the endpoint (http or https). `postgres`: a `postgres://` connection URL.
    pub url: Option<String>,
    /// `http` only: `POST` (default), `PUT` or `PATCH`.
    pub method: Option<String>,
    /// `http` only: extra request headers. Values are secret: responses redact them.
    pub headers: Option<BTreeMap<String, String>>,
    /// `http` only: per-request timeout, 1–300000 ms (default 10000).
    pub timeout_ms: Option<i64>,
    /// `postgres` only: target table, `name` or `schema.name`.
    pub table: Option<String>,
    /// `postgres` only: the key columns (default `["id"]`), the conflict target of `upsert`.
    pub key: Option<Vec<String>>,
    /// `postgres` only: `insert` (default) or `upsert`.
    pub mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Destination {
    Http(HttpDestination),
    Postgres(PostgresDestination),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpDestination {
    pub url: String,
    pub method: HttpMethod,
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Post,
    Put,
    Patch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostgresDestination {
    pub url: String,
    pub table: String,
    pub key: Vec<String>,
    pub mode: WriteMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    Insert,
    Upsert,
}

/// Headers Freight sets itself or that would break the request framing.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "idempotency-key",
    "content-type",
    "upgrade",
    "te",
];

pub const DEFAULT_HTTP_TIMEOUT_MS: u64 = 10_000;

impl DestinationInput {
    pub fn validate(&self, problems: &mut Problems) -> Option<Destination> {
        let destination = self.validate_kind(problems)?;
        // A tenant must not pass off a sealed value (from a leaked dump, say) as its own
        // secret: the worker would open it and send the plaintext to the tenant's URL.
        destination.with_secrets(|field, value| {
            if secrets::is_sealed(value) {
                let field = if field.starts_with("url.") {
                    "url"
                } else {
                    field
                };
                problems.push(
                    format!("destination.{field}"),
                    format!(
                        "must not start with `{}`, which marks values Freight encrypted",
                        secrets::PREFIX
                    ),
                );
            }
            value.to_owned()
        });
        Some(destination)
    }

    fn validate_kind(&self, problems: &mut Problems) -> Option<Destination> {
        match self.kind.as_deref() {
            None => {
                problems.push("destination.type", "is required: `http` or `postgres`");
                None
            }
            Some("http") => self.validate_http(problems).map(Destination::Http),
            Some("postgres") => self.validate_postgres(problems).map(Destination::Postgres),
            Some(other) => {
                problems.push(
                    "destination.type",
                    format!("`{other}` is not a destination type: use `http` or `postgres`"),
                );
                None
            }
        }
    }

    fn validate_http(&self, problems: &mut Problems) -> Option<HttpDestination> {
        for (field, present) in [
            ("table", self.table.is_some()),
            ("key", self.key.is_some()),
            ("mode", self.mode.is_some()),
        ] {
            if present {
                problems.push(
                    format!("destination.{field}"),
                    "applies to `postgres` destinations only",
                );
            }
        }
        let url = problems.check(
            "destination.url",
            parse_url(self.url.as_deref(), &["http", "https"]),
        );
        let method = match self.method.as_deref().unwrap_or("POST") {
            "POST" => Some(HttpMethod::Post),
            "PUT" => Some(HttpMethod::Put),
            "PATCH" => Some(HttpMethod::Patch),
            _ => {
                problems.push("destination.method", "must be `POST`, `PUT` or `PATCH`");
                None
            }
        };
        let headers = self.headers.clone().unwrap_or_default();
        if headers.len() > 50 {
            problems.push("destination.headers", "at most 50 headers");
        }
        for (name, value) in &headers {
            let field = format!("destination.headers.{name}");
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(field, "is not a valid header name");
            } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                problems.push(field, "is set by Freight and cannot be overridden");
            } else if http::HeaderValue::from_str(value).is_err() || value.len() > 8192 {
                problems.push(field, "value must be visible ASCII, at most 8192 bytes");
            }
        }
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_HTTP_TIMEOUT_MS as i64);
        let timeout_ms = problems.check(
            "destination.timeout_ms",
            if (1..=300_000).contains(&timeout_ms) {
                Ok(timeout_ms as u64)
            } else {
                Err("must be between 1 and 300000".into())
            },
        );
        Some(HttpDestination {
            url: url?.to_string(),
            method: method?,
            headers,
            timeout_ms: timeout_ms?,
        })
    }

    fn validate_postgres(&self, problems: &mut Problems) -> Option<PostgresDestination> {
        for (field, present) in [
            ("method", self.method.is_some()),
            ("headers", self.headers.is_some()),
            ("timeout_ms", self.timeout_ms.is_some()),
        ] {
            if present {
                problems.push(
                    format!("destination.{field}"),
                    "applies to `http` destinations only",
                );
            }
        }
        let url = problems.check(
            "destination.url",
            parse_url(self.url.as_deref(), &["postgres", "postgresql"]),
        );
        let table = match self.table.as_deref() {
            None => {
                problems.push(
                    "destination.table",
                    "is required for a postgres destination",
                );
                None
            }
            Some(t) if t.split('.').count() <= 2 && t.split('.').all(is_identifier) => {
                Some(t.to_owned())
            }
            Some(_) => {
                problems.push(
                    "destination.table",
                    "must be `name` or `schema.name` of letters, digits and `_`, not starting with a digit",
                );
                None
            }
        };
        let key = self.key.clone().unwrap_or_else(|| vec!["id".to_owned()]);
        let key_ok = if key.is_empty() || key.len() > 32 {
            problems.push("destination.key", "must list 1 to 32 columns");
            false
        } else {
            let mut ok = true;
            for (i, col) in key.iter().enumerate() {
                if !is_identifier(col) {
                    problems.push(format!("destination.key[{i}]"), "is not a column name");
                    ok = false;
                }
            }
            ok
        };
        let mode = match self.mode.as_deref().unwrap_or("insert") {
            "insert" => Some(WriteMode::Insert),
            "upsert" => Some(WriteMode::Upsert),
            _ => {
                problems.push("destination.mode", "must be `insert` or `upsert`");
                None
            }
        };
        if !key_ok {
            return None;
        }
        Some(PostgresDestination {
            url: url?.to_string(),
            table: table?,
            key,
            mode: mode?,
        })
    }
}

fn parse_url(raw: Option<&str>, schemes: &[&str]) -> Result<Url, String> {
    let raw = raw.ok_or_else(|| "is required".to_owned())?;
    if raw.len() > 2048 {
        return Err("must be at most 2048 characters".into());
    }
    let url = Url::parse(raw).map_err(|e| format!("is not a valid URL: {e}"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!("scheme must be one of: {}", schemes.join(", ")));
    }
    match url.host_str() {
        Some(h) if !h.is_empty() => Ok(url),
        _ => Err("must name a host".into()),
    }
}

/// A plain SQL identifier: quoted later, but limited to a safe alphabet all the same.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 63
}

impl Destination {
    /// `http` or `postgres`: what the audit trail says of a destination (never its URL).
    pub fn kind(&self) -> &'static str {
        match self {
            Destination::Http(_) => "http",
            Destination::Postgres(_) => "postgres",
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Destination::Http(h) => &h.url,
            Destination::Postgres(p) => &p.url,
        }
    }

    /// The destination as responses show it: header values and URL passwords replaced by
    /// `[redacted]` / `redacted`. Nothing else of the stored spec is secret.
    pub fn redacted(&self) -> serde_json::Value {
        let mut copy = self.clone();
        match &mut copy {
            Destination::Http(h) => {
                h.url = redact_url(&h.url);
                h.headers
                    .values_mut()
                    .for_each(|v| *v = REDACTED.to_owned());
            }
            Destination::Postgres(p) => p.url = redact_url(&p.url),
        }
        serde_json::to_value(copy).expect("a destination always serialises")
    }

    /// Rewrites every secret the destination holds through `f`, which gets the field's
    /// name (`headers.Authorization`, `url.password`, `url.query.password`) and value:
    /// header values, the URL's password and its secret-named query parameters, exactly
    /// what [`Destination::redacted`] hides. Sealing, opening and rotation all go through
    /// here, so what responses redact is what is stored sealed. A URL whose secrets `f`
    /// leaves unchanged is kept byte for byte.
    pub fn map_secrets<E>(
        &self,
        mut f: impl FnMut(&str, &str) -> Result<String, E>,
    ) -> Result<Destination, E> {
        let mut copy = self.clone();
        match &mut copy {
            Destination::Http(h) => {
                h.url = map_url_secrets(&h.url, &mut f)?;
                for (name, value) in h.headers.iter_mut() {
                    *value = f(&format!("headers.{name}"), value)?;
                }
            }
            Destination::Postgres(p) => p.url = map_url_secrets(&p.url, &mut f)?,
        }
        Ok(copy)
    }

    /// [`map_secrets`](Self::map_secrets) with a function that cannot fail.
    pub fn with_secrets(&self, mut f: impl FnMut(&str, &str) -> String) -> Destination {
        self.map_secrets(|field, value| Ok::<_, Infallible>(f(field, value)))
            .unwrap_or_else(|never| match never {})
    }

    /// Refuses destinations whose host is, or resolves to, a loopback, private,
    /// link-local or metadata address. A name that does not resolve now is let through:
    /// delivery checks every address again at connect time.
    pub async fn check_network(&self, allow_private: bool) -> Result<(), String> {
        if allow_private {
            return Ok(());
        }
        let url = Url::parse(self.url()).map_err(|e| e.to_string())?;
        let port = url.port_or_known_default().unwrap_or(5432);
        let host = match url.host() {
            Some(url::Host::Ipv4(ip)) => return refuse_if_forbidden(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => return refuse_if_forbidden(IpAddr::V6(ip)),
            Some(url::Host::Domain(d)) => {
                d.trim_start_matches('[').trim_end_matches(']').to_owned()
            }
            None => return Err("must name a host".into()),
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return refuse_if_forbidden(ip);
        }
        let lookup = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await;
        if let Ok(Ok(addrs)) = lookup {
            for addr in addrs {
                refuse_if_forbidden(addr.ip())
                    .map_err(|reason| format!("`{host}` resolves to {}: {reason}", addr.ip()))?;
            }
        }
        Ok(())
    }
}

fn refuse_if_forbidden(ip: IpAddr) -> Result<(), String> {
    match ssrf::forbidden_reason(ip) {
        None => Ok(()),
        Some(reason) => Err(format!(
            "points at a {reason}; private destinations are refused unless the operator sets FREIGHT_ALLOW_PRIVATE_DESTINATIONS=true"
        )),
    }
}

/// Replaces a URL's secrets with `redacted`: the password of its user info, and the
/// value of every query parameter that names a secret (`password`, `sslpassword`,
/// `token`, `api_key`, ...), as Postgres connection URLs and many APIs carry them there.
pub fn redact_url(raw: &str) -> String {
    if Url::parse(raw).is_err() {
        return REDACTED.to_owned();
    }
    map_url_secrets(raw, &mut |_, _| {
        Ok::<_, Infallible>(REDACTED_PASSWORD.to_owned())
    })
    .unwrap_or_else(|never| match never {})
}

/// [`Destination::map_secrets`] for one URL.
fn map_url_secrets<E>(
    raw: &str,
    f: &mut impl FnMut(&str, &str) -> Result<String, E>,
) -> Result<String, E> {
    // Stored URLs were validated, so they parse; anything else holds nothing to map.
    let Ok(mut url) = Url::parse(raw) else {
        return Ok(raw.to_owned());
    };
    let mut changed = false;
    if let Some(password) = url.password() {
        // Decoded, so that a sealed value (whose `:` the URL escapes) reads back as written.
        let current = percent_encoding::percent_decode_str(password)
            .decode_utf8_lossy()
            .into_owned();
        let new = f("url.password", &current)?;
        if new != current {
            let _ = url.set_password(Some(&new));
            changed = true;
        }
    }
    if url.query().is_some() {
        let mut any = false;
        let mut pairs = Vec::new();
        for (name, value) in url.query_pairs().into_owned() {
            let value = if is_secret_param(&name) {
                let new = f(&format!("url.query.{name}"), &value)?;
                any |= new != value;
                new
            } else {
                value
            };
            pairs.push((name, value));
        }
        if any {
            url.query_pairs_mut().clear().extend_pairs(pairs);
            changed = true;
        }
    }
    Ok(if changed {
        url.to_string()
    } else {
        raw.to_owned()
    })
}

fn is_secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "signature",
        "credential",
    ]
    .iter()
    .any(|s| n.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(url: &str) -> DestinationInput {
        DestinationInput {
            kind: Some("http".into()),
            url: Some(url.into()),
            ..Default::default()
        }
    }

    #[test]
    fn redaction_hides_header_values_and_passwords() {
        let mut input = http("https://user:hunter2@crm.example.com/import");
        input.headers = Some([("Authorization".to_owned(), "Bearer s3cr3t".to_owned())].into());
        let dest = input.validate(&mut Problems::default()).unwrap();
        let shown = dest.redacted().to_string();
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        assert!(shown.contains("Authorization") && shown.contains("crm.example.com"));

        let pg = DestinationInput {
            kind: Some("postgres".into()),
            url: Some("postgres://app:pa55word@db.example.com/crm".into()),
            table: Some("contacts".into()),
            ..Default::default()
        };
        let shown = pg
            .validate(&mut Problems::default())
            .unwrap()
            .redacted()
            .to_string();
        assert!(!shown.contains("pa55word"), "{shown}");
    }

    #[tokio::test]
    async fn private_hosts_are_refused_in_every_spelling() {
        for url in [
            "http://127.0.0.1/x",
            "http://localhost:8080/x",
            "http://2130706433/x",
            "http://0177.0.0.1/x",
            "http://0x7f.1/x",
            "http://[::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://169.254.169.254/latest/meta-data",
            "http://10.1.2.3/x",
        ] {
            let dest = http(url).validate(&mut Problems::default()).unwrap();
            assert!(
                dest.check_network(false).await.is_err(),
                "{url} should be refused"
            );
            assert!(dest.check_network(true).await.is_ok());
        }
        let pg = DestinationInput {
            kind: Some("postgres".into()),
            url: Some("postgres://u@127.0.0.1:5432/db".into()),
            table: Some("t".into()),
            ..Default::default()
        };
        assert!(
            pg.validate(&mut Problems::default())
                .unwrap()
                .check_network(false)
                .await
                .is_err()
        );
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("contacts") && is_identifier("_x1"));
        assert!(
            !is_identifier("1x")
                && !is_identifier("a-b")
                && !is_identifier("")
                && !is_identifier("a;drop")
        );
    }
}
