//! A Postgres destination's connection URL, taken apart into the few parts Freight lets a
//! tenant choose.
//!
//! A libpq-style URL can say far more than where to connect: `hostaddr` dials another
//! address than the host that was checked, `host` may name a Unix socket, `options` sets
//! server parameters, `sslrootcert`/`sslkey`/`passfile`/`service` read files on the
//! worker. A tenant's URL may therefore set only the parameters in [`ALLOWED_PARAMS`];
//! anything else is refused by name (never echoing its value, which may be a secret).
//! Intake and the worker parse with this same function, so a job stored before the rule
//! existed fails delivery with the same message instead of connecting.

use std::{net::IpAddr, time::Duration};

use url::{Host, Url};

/// The query parameters a tenant may set.
pub const ALLOWED_PARAMS: &[&str] = &["sslmode", "application_name", "connect_timeout", "password"];

/// How the worker negotiates TLS with the destination (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    Allow,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }
}

/// The parts of a checked destination URL.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    pub user: String,
    pub password: Option<String>,
    /// A DNS name or an IP address (without brackets).
    pub host: String,
    pub port: u16,
    pub database: String,
    pub ssl_mode: SslMode,
    pub application_name: Option<String>,
    pub connect_timeout: Option<Duration>,
}

impl std::fmt::Debug for PostgresUrl {
    /// Everything but the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresUrl")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("ssl_mode", &self.ssl_mode)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl PostgresUrl {
    /// The host as an IP address, when it is written as one.
    pub fn host_ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Parses and checks a `postgres://` or `postgresql://` URL. The error says what is
    /// wrong without quoting any value from the URL.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = Url::parse(raw).map_err(|e| format!("is not a valid URL: {e}"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err("scheme must be one of: postgres, postgresql".into());
        }
        if url.fragment().is_some() {
            return Err("must not have a fragment (`#...`)".into());
        }
        let host = host_of(&url)?;
        let port = url.port().unwrap_or(5432);
        if port == 0 {
            return Err("port must be between 1 and 65535".into());
        }
        let user = decode(url.username());
        if user.is_empty() {
            return Err(
                "must name the user to log in as: postgres://user[:password]@host[:port]/database"
                    .into(),
            );
        }
        let path = decode(url.path().trim_start_matches('/'));
        if path.contains('/') {
            return Err("the path must be just the database name".into());
        }
        let database = if path.is_empty() { user.clone() } else { path };
        let mut parsed = Self {
            user,
            password: url.password().map(decode),
            host,
            port,
            database,
            ssl_mode: SslMode::default(),
            application_name: None,
            connect_timeout: None,
        };
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in url.query_pairs() {
            if seen.iter().any(|s| *s == name) && ALLOWED_PARAMS.contains(&name.as_ref()) {
                return Err(format!("the query parameter `{name}` is given twice"));
            }
            parsed.set_param(&name, value.into_owned())?;
            seen.push(name.into_owned());
        }
        Ok(parsed)
    }

    /// Applies one query parameter; only those on [`ALLOWED_PARAMS`] are taken.
    fn set_param(&mut self, name: &str, value: String) -> Result<(), String> {
        match name {
            "sslmode" => {
                self.ssl_mode = SslMode::parse(&value).ok_or(
                    "`sslmode` must be disable, allow, prefer, require, verify-ca or verify-full",
                )?;
            }
            "application_name" => {
                if value.len() > 63 || !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                    return Err(
                        "`application_name` must be at most 63 visible ASCII characters".into(),
                    );
                }
                self.application_name = Some(value);
            }
            "connect_timeout" => {
                let secs: u64 =
                    value.parse().ok().filter(|s| (1..=60).contains(s)).ok_or(
                        "`connect_timeout` must be a whole number of seconds from 1 to 60",
                    )?;
                self.connect_timeout = Some(Duration::from_secs(secs));
            }
            // Given in the user info too: refused rather than silently picking one.
            "password" if self.password.is_some() => {
                return Err(
                    "the password is given twice (in the user info and as `password`)".into(),
                );
            }
            "password" => self.password = Some(value),
            other => {
                return Err(format!(
                    "the query parameter `{}` is not allowed: a destination URL may set only {}",
                    printable(other),
                    ALLOWED_PARAMS.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// The URL's one host, a DNS name or an IP address: nothing sqlx would read as a list of
/// hosts or a socket path.
fn host_of(url: &Url) -> Result<String, String> {
    match url.host() {
        Some(Host::Ipv6(ip)) => Ok(ip.to_string()),
        Some(Host::Ipv4(ip)) => Ok(ip.to_string()),
        Some(Host::Domain(name)) if is_host_name(name) => Ok(name.to_ascii_lowercase()),
        Some(Host::Domain(_)) => Err(
            "must name one host: a DNS name or an IP address (no list of hosts, no socket path)"
                .into(),
        ),
        None => Err("must name a host".into()),
    }
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_` (container service
/// names), at most 253 characters. Nothing that sqlx would read as a socket path or a
/// list of hosts.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A parameter name as it may appear in an error: printable ASCII, at most 40 characters.
fn printable(name: &str) -> String {
    name.chars()
        .take(40)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_url_parses_into_its_parts() {
        let u = PostgresUrl::parse(
            "postgresql://app:p%40ss@DB.example.com:6543/crm?sslmode=verify-full&application_name=import&connect_timeout=7",
        )
        .unwrap();
        assert_eq!(u.user, "app");
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.host, "db.example.com");
        assert_eq!(u.port, 6543);
        assert_eq!(u.database, "crm");
        assert_eq!(u.ssl_mode, SslMode::VerifyFull);
        assert_eq!(u.application_name.as_deref(), Some("import"));
        assert_eq!(u.connect_timeout, Some(Duration::from_secs(7)));
        assert!(
            !format!("{u:?}").contains("p@ss"),
            "Debug hides the password"
        );

        let d = PostgresUrl::parse("postgres://app@[::1]/").unwrap();
        assert_eq!(
            (d.host.as_str(), d.port, d.database.as_str()),
            ("::1", 5432, "app")
        );
        assert_eq!(d.host_ip(), Some("::1".parse().unwrap()));
        let q = PostgresUrl::parse("postgres://app@10.0.0.1/db?password=s3cret").unwrap();
        assert_eq!(q.password.as_deref(), Some("s3cret"));
    }

    #[test]
    fn every_other_parameter_is_refused_by_name_never_by_value() {
        for name in [
            "hostaddr",
            "host",
            "port",
            "options",
            "sslrootcert",
            "sslcert",
            "sslkey",
            "sslpassword",
            "passfile",
            "service",
            "user",
            "dbname",
            "target_session_attrs",
            "whatever",
        ] {
            let err = PostgresUrl::parse(&format!(
                "postgres://app@db.example.com/db?sslmode=require&{name}=VALUE-1234"
            ))
            .unwrap_err();
            assert!(err.contains(&format!("`{name}`")), "{name}: {err}");
            assert!(!err.contains("VALUE-1234"), "{name}: {err}");
        }
    }

    #[test]
    fn hosts_that_are_not_one_plain_host_are_refused() {
        for url in [
            "postgres://app@%2Fvar%2Frun%2Fpostgresql/db",
            "postgres://app@h1,h2/db",
            "postgres://app@/db",
            "postgres://app@db.example.com:0/db",
            "postgres://db.example.com/db",
            "postgres://app@db.example.com/a/b",
            "postgres://app@db.example.com/db#x",
            "postgres://app:x@db.example.com/db?password=y",
            "postgres://app@db.example.com/db?sslmode=require&sslmode=disable",
            "postgres://app@db.example.com/db?sslmode=sometimes",
            "postgres://app@db.example.com/db?connect_timeout=0",
            "mysql://app@db.example.com/db",
        ] {
            assert!(PostgresUrl::parse(url).is_err(), "{url} should be refused");
        }
    }
}
