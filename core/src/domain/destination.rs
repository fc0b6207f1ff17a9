//! Destinations: where a job's records go, as validated from a request and stored on the
//! job. The stored form keeps secrets (header values, URL passwords), sealed when the
//! operator configured a key ([`crate::secrets`]); responses only ever see
//! [`Destination::redacted`].

use std::collections::BTreeMap;

use entity::TenantId;
use serde::{Deserialize, Serialize};
use url::Url;

use super::postgres_url::PostgresUrl;

use crate::{
    error::Problems,
    secrets::{self, Keyring, OpenError},
};

pub const REDACTED: &str = "[redacted]";
/// What a URL password becomes (brackets would be percent-encoded inside a URL).
pub const REDACTED_PASSWORD: &str = "redacted";

/// The request shape, flat so that each missing or bad field can be named in a 422
/// (an unknown `type` is a broken rule, not a malformed document).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The URL as responses show it, stored beside a sealed `url` (absent when `url` is
    /// stored as given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_redacted: Option<String>,
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
    /// As [`HttpDestination::url_redacted`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_redacted: Option<String>,
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
        let url_parts = Url::parse(destination.url())
            .map(|u| url_secret_parts(&u))
            .unwrap_or_default();
        let header_values = match &destination {
            Destination::Http(h) => h.headers.iter().collect(),
            Destination::Postgres(_) => Vec::new(),
        };
        let fields = url_parts
            .iter()
            .map(|value| ("url".to_owned(), value.as_str()))
            .chain(
                header_values
                    .into_iter()
                    .map(|(name, value)| (format!("headers.{name}"), value.as_str())),
            );
        for (field, value) in fields {
            if secrets::is_sealed(value) {
                problems.push(
                    format!("destination.{field}"),
                    format!(
                        "must not start with `{}`, which marks values Freight encrypted",
                        secrets::PREFIX
                    ),
                );
            }
        }
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
            url_redacted: None,
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
            parse_url(self.url.as_deref(), &["postgres", "postgresql"]).and_then(|url| {
                PostgresUrl::parse(url.as_str())?;
                Ok(url)
            }),
        );
        let table = problems.check("destination.table", check_table(self.table.as_deref()));
        let key = self.key.clone().unwrap_or_else(|| vec!["id".to_owned()]);
        let key_ok = check_key(&key, problems);
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
            url_redacted: None,
            table: table?,
            key,
            mode: mode?,
        })
    }
}

/// A Postgres destination's table: `name` or `schema.name`.
fn check_table(table: Option<&str>) -> Result<String, String> {
    match table {
        None => Err("is required for a postgres destination".into()),
        Some(t) if t.split('.').count() <= 2 && t.split('.').all(is_identifier) => Ok(t.to_owned()),
        Some(_) => Err(
            "must be `name` or `schema.name` of letters, digits and `_`, not starting with a digit"
                .into(),
        ),
    }
}

/// The key columns: 1 to 32 identifiers, each broken one named.
fn check_key(key: &[String], problems: &mut Problems) -> bool {
    if key.is_empty() || key.len() > 32 {
        problems.push("destination.key", "must list 1 to 32 columns");
        return false;
    }
    let mut ok = true;
    for (i, col) in key.iter().enumerate() {
        if !is_identifier(col) {
            problems.push(format!("destination.key[{i}]"), "is not a column name");
            ok = false;
        }
    }
    ok
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

    fn url_fields(&mut self) -> (&mut String, &mut Option<String>) {
        match self {
            Destination::Http(h) => (&mut h.url, &mut h.url_redacted),
            Destination::Postgres(p) => (&mut p.url, &mut p.url_redacted),
        }
    }

    /// The destination as responses show it: header values replaced by `[redacted]`,
    /// and the URL by its redacted form ([`redact_url`]: no password, no query value, no
    /// long opaque path segment).
    pub fn redacted(&self) -> serde_json::Value {
        let mut copy = self.clone();
        let (url, shown) = copy.url_fields();
        *url = shown.take().unwrap_or_else(|| redact_url(url));
        if let Destination::Http(h) = &mut copy {
            h.headers
                .values_mut()
                .for_each(|v| *v = REDACTED.to_owned());
        }
        serde_json::to_value(copy).expect("a destination always serialises")
    }

    /// Rewrites every secret the destination holds through `f`, which gets the field's
    /// name and value: `url` (the whole URL: its password, query and path may all be
    /// secret, as a chat webhook's path is) and `headers.<name>` (each header value).
    /// Sealing, opening and rotation all go through here. When `f` changes the URL,
    /// `shown` gets the URL as it was and the redacted form kept so far, and says which
    /// redacted form to keep beside the new value (`None` for a URL in the clear).
    pub fn map_secrets<E>(
        &self,
        mut f: impl FnMut(&str, &str) -> Result<String, E>,
        shown: impl FnOnce(&str, Option<String>) -> Option<String>,
    ) -> Result<Destination, E> {
        let mut copy = self.clone();
        let (url, url_redacted) = copy.url_fields();
        let new = f("url", url)?;
        if new != *url {
            *url_redacted = shown(url, url_redacted.take());
            *url = new;
        }
        if let Destination::Http(h) = &mut copy {
            for (name, value) in h.headers.iter_mut() {
                *value = f(&format!("headers.{name}"), value)?;
            }
        }
        Ok(copy)
    }
}

/// Sealing at rest: every secret a destination holds goes through the keyring
/// ([`crate::secrets`]) field by field, bound to the tenant and the field's name.
impl Destination {
    /// The destination as stored: its whole URL and every header value sealed with the
    /// current key, and the URL's redacted form kept beside it for responses. Stored as
    /// given when the keyring is disabled.
    pub fn sealed(&self, keyring: &Keyring, tenant_id: TenantId) -> Destination {
        self.map_secrets(
            |field, v| Ok::<_, std::convert::Infallible>(keyring.seal(tenant_id, field, v)),
            |url, _| Some(redact_url(url)),
        )
        .unwrap_or_else(|never| match never {})
    }

    /// The destination with every secret opened (for delivery only: never log it).
    /// Destinations stored by earlier versions, whose URL holds sealed parts rather than
    /// being sealed whole, open too.
    pub fn opened(&self, keyring: &Keyring, tenant_id: TenantId) -> Result<Destination, OpenError> {
        self.map_secrets(
            |field, v| {
                let opened = keyring.open(tenant_id, field, v)?;
                if field == "url" {
                    open_legacy_url_parts(&opened, |part, sealed| {
                        keyring.open(tenant_id, part, sealed)
                    })
                } else {
                    Ok(opened)
                }
            },
            |_, _| None,
        )
    }

    /// The destination with every secret sealed with the current key (rotation): values
    /// sealed with an old key, stored in the clear, or stored by an earlier version's
    /// per-part sealing are opened and sealed again; values already sealed with the
    /// current key are kept as they are.
    pub fn resealed(
        &self,
        keyring: &Keyring,
        tenant_id: TenantId,
    ) -> Result<Destination, OpenError> {
        self.map_secrets(
            |field, v| {
                let plain = if field == "url" && !secrets::is_sealed(v) {
                    open_legacy_url_parts(v, |part, sealed| keyring.open(tenant_id, part, sealed))?
                } else {
                    v.to_owned()
                };
                keyring.reseal(tenant_id, field, &plain)
            },
            // A URL sealed before keeps its redacted form; one in the clear, or with
            // sealed parts only, redacts as it is (sealed parts are what redaction hides).
            |url, kept| kept.or_else(|| Some(redact_url(url))),
        )
    }
}

/// The URL as responses and error messages show it: its password, the value of every
/// query parameter and every long opaque path segment (a webhook's token) replaced by
/// `redacted`. Host, port, scheme and the readable path stay.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = Url::parse(raw) else {
        return REDACTED.to_owned();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some(REDACTED_PASSWORD));
    }
    if url.query().is_some() {
        let names: Vec<String> = url
            .query_pairs()
            .map(|(name, _)| name.into_owned())
            .collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(names.iter().map(|n| (n.as_str(), REDACTED_PASSWORD)));
    }
    if let Some(segments) = url.path_segments() {
        // Decoded: `extend` encodes each segment again.
        let segments: Vec<String> = segments
            .map(|seg| {
                if is_opaque_segment(seg) {
                    REDACTED_PASSWORD.to_owned()
                } else {
                    percent_encoding::percent_decode_str(seg)
                        .decode_utf8_lossy()
                        .into_owned()
                }
            })
            .collect();
        if let Ok(mut path) = url.path_segments_mut() {
            path.clear().extend(segments.iter().map(String::as_str));
        }
    }
    url.to_string()
}

/// A path segment that reads like a token rather than a name: at least 16 characters
/// with both letters and digits, or at least 32 of anything (Slack, Discord and
/// Telegram webhooks carry their secret this way).
fn is_opaque_segment(segment: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
    let n = decoded.chars().count();
    let digits = decoded.chars().any(|c| c.is_ascii_digit());
    let letters = decoded.chars().any(|c| c.is_alphabetic());
    n >= 32 || (n >= 16 && digits && letters)
}

/// The parts of a URL that [`redact_url`] hides, decoded: its password, every query
/// value and every opaque path segment. A connector scrubs them from any text it
/// reports (a destination may echo its own URL back).
pub fn url_secret_parts(url: &Url) -> Vec<String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut parts: Vec<String> = url.password().map(decode).into_iter().collect();
    parts.extend(url.query_pairs().map(|(_, v)| v.into_owned()));
    if let Some(segments) = url.path_segments() {
        parts.extend(segments.filter(|s| is_opaque_segment(s)).map(decode));
    }
    parts.retain(|p| !p.is_empty());
    parts
}

/// Opens a URL stored by an earlier version, which sealed its password and the values of
/// secret-named query parameters one by one (fields `url.password`, `url.query.<name>`)
/// rather than the whole URL. A URL with nothing sealed inside comes back as it is.
pub fn open_legacy_url_parts<E>(
    raw: &str,
    mut open: impl FnMut(&str, &str) -> Result<String, E>,
) -> Result<String, E> {
    let Ok(mut url) = Url::parse(raw) else {
        return Ok(raw.to_owned());
    };
    let mut changed = false;
    if let Some(password) = url.password() {
        // Decoded, so that a sealed value (whose `:` the URL escapes) reads back as written.
        let current = percent_encoding::percent_decode_str(password)
            .decode_utf8_lossy()
            .into_owned();
        if secrets::is_sealed(&current) {
            let _ = url.set_password(Some(&open("url.password", &current)?));
            changed = true;
        }
    }
    if url
        .query()
        .is_some_and(|q| q.contains("enc%3Av1") || q.contains("enc:v1"))
    {
        let mut pairs = Vec::new();
        for (name, value) in url.query_pairs().into_owned() {
            let value = if secrets::is_sealed(&value) {
                open(&format!("url.query.{name}"), &value)?
            } else {
                value
            };
            pairs.push((name, value));
        }
        url.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    Ok(if changed {
        url.to_string()
    } else {
        raw.to_owned()
    })
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

    #[test]
    fn redacted_urls_keep_where_they_point_and_nothing_secret() {
        for (raw, shown) in [
            (
                "https://user:hunter2@crm.example.com:8443/api/v1/import?sig=abc123&code=xyz&page=2",
                "https://user:redacted@crm.example.com:8443/api/v1/import?sig=redacted&code=redacted&page=redacted",
            ),
            (
                "https://hooks.slack.com/services/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",
                "https://hooks.slack.com/services/T0AB12CD3/B0CD45EF6/redacted",
            ),
            (
                "https://discord.com/api/webhooks/123456789012345678/abcDEFghiJKLmnoPQRstuVWXyz0123456789abcDEFghiJKLmnoPQRstuVWXyz012345",
                "https://discord.com/api/webhooks/123456789012345678/redacted",
            ),
            (
                "https://api.example.com/customers-import-endpoint/v2",
                "https://api.example.com/customers-import-endpoint/v2",
            ),
            (
                "postgres://app:pa55word@db.example.com:5432/crm?sslmode=require",
                "postgres://app:redacted@db.example.com:5432/crm?sslmode=redacted",
            ),
        ] {
            assert_eq!(redact_url(raw), shown, "{raw}");
            let parts = url_secret_parts(&Url::parse(raw).unwrap());
            for part in &parts {
                assert!(!redact_url(raw).contains(part.as_str()), "{raw}: {part}");
            }
        }
        assert_eq!(redact_url("not a url"), REDACTED);
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

    mod sealing {
        use super::*;
        use crate::secrets::{generate_key, is_sealed};

        const TENANT: TenantId = TenantId(uuid::Uuid::from_u128(7));

        fn ring(keys: &[&str]) -> Keyring {
            Keyring::from_keys(keys[0], &keys[1..]).unwrap()
        }

        fn destination(input: serde_json::Value) -> Destination {
            let input: DestinationInput = serde_json::from_value(input).unwrap();
            input.validate(&mut Problems::default()).unwrap()
        }

        #[test]
        fn destinations_are_stored_sealed_and_delivered_as_given() {
            let keyring = ring(&[&generate_key()]);
            for (input, secrets) in [
                (
                    serde_json::json!({"type": "http",
                        "url": "https://user:p%40ss:w0rd+1@crm.example.com/x?token=tok3n&page=2",
                        "headers": {"Authorization": "Bearer s3cr3t", "X-Tenant": "acme"}}),
                    vec!["p%40ss", "w0rd", "tok3n", "s3cr3t", "acme"],
                ),
                (
                    serde_json::json!({"type": "postgres", "table": "t",
                        "url": "postgres://app@db.example.com/crm?sslmode=require&password=qu3ry"}),
                    vec!["qu3ry"],
                ),
                // A chat webhook: the secret is the path.
                (
                    serde_json::json!({"type": "http",
                        "url": "https://hooks.example.com/services/T0AB12CD3/B0CD45EF6/Xy7Qk2LmN9pR4sT6vW8zA1bC"}),
                    vec!["Xy7Qk2LmN9pR4sT6vW8zA1bC"],
                ),
            ] {
                let given = destination(input);
                let stored = given.sealed(&keyring, TENANT);
                let text = serde_json::to_string(&stored).unwrap();
                for secret in secrets {
                    assert!(!text.contains(secret), "{secret} in {text}");
                }
                // What is not secret stays readable.
                assert!(text.contains("example.com"), "{text}");
                assert_eq!(stored.sealed(&keyring, TENANT), stored, "no double seal");
                assert_eq!(stored.opened(&keyring, TENANT).unwrap(), given);
                // Responses redact the stored form as they did the plaintext.
                assert_eq!(stored.redacted(), given.redacted());
            }
            // The whole URL is sealed, secret-looking or not, and opens byte for byte.
            let plain = destination(
                serde_json::json!({"type": "http", "url": "https://example.com/a%20b?x=1+2"}),
            );
            let stored = plain.sealed(&keyring, TENANT);
            assert!(is_sealed(stored.url()), "{stored:?}");
            assert_eq!(stored.opened(&keyring, TENANT).unwrap(), plain);
            // Disabled, everything is stored as given.
            assert_eq!(plain.sealed(&Keyring::disabled(), TENANT), plain);
        }

        /// Earlier versions sealed a URL's password and secret-named query values one by one
        /// inside the URL. Such a destination still opens, and rotation seals it whole.
        #[test]
        fn destinations_sealed_part_by_part_still_open_and_rotate_whole() {
            let keyring = ring(&[&generate_key()]);
            let password = keyring.seal(TENANT, "url.password", "pa55word");
            let token = keyring.seal(TENANT, "url.query.token", "tok3n");
            let mut url = url::Url::parse("https://user@crm.example.com/import?page=2").unwrap();
            url.set_password(Some(&password)).unwrap();
            url.query_pairs_mut().append_pair("token", &token);
            let legacy =
                destination(serde_json::json!({"type": "http", "url": "https://crm.example.com/"}));
            let legacy = match legacy {
                Destination::Http(mut h) => {
                    h.url = url.to_string();
                    Destination::Http(h)
                }
                other => other,
            };
            let opened = legacy.opened(&keyring, TENANT).unwrap();
            let opened_url = url::Url::parse(opened.url()).unwrap();
            assert_eq!(opened_url.password(), Some("pa55word"));
            assert!(
                opened_url
                    .query_pairs()
                    .any(|(k, v)| k == "token" && v == "tok3n")
            );
            assert!(
                opened_url
                    .query_pairs()
                    .any(|(k, v)| k == "page" && v == "2")
            );

            let rotated = legacy.resealed(&keyring, TENANT).unwrap();
            assert!(is_sealed(rotated.url()), "{rotated:?}");
            let shown = rotated.redacted().to_string();
            assert!(
                shown.contains("crm.example.com") && !shown.contains("enc:v1"),
                "{shown}"
            );
            assert_eq!(rotated.opened(&keyring, TENANT).unwrap(), opened);
            assert_eq!(
                rotated.resealed(&keyring, TENANT).unwrap(),
                rotated,
                "stable"
            );
        }

        #[test]
        fn intake_refuses_values_that_look_sealed() {
            let sealed = ring(&[&generate_key()]).seal(TENANT, "headers.X", "v");
            for input in [
                serde_json::json!({"type": "http", "url": "https://example.com/", "headers": {"X": sealed}}),
                serde_json::json!({"type": "http", "url": format!("https://u:{sealed}@example.com/")}),
                serde_json::json!({"type": "postgres", "table": "t", "url": format!("postgres://u@h/db?password={sealed}")}),
            ] {
                let input: DestinationInput = serde_json::from_value(input).unwrap();
                let mut problems = Problems::default();
                input.validate(&mut problems);
                let err = problems.into_result(|| ()).unwrap_err().to_string();
                assert!(!err.is_empty());
            }
        }
    }
}
