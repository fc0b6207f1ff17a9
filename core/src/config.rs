//! Typed settings, parsed once from the environment at start-up.
//!
//! Every variable is listed, with its default and meaning, in `.env.example` at the repo
//! root. A missing or malformed value stops the process with an error naming the
//! variable. Tests build a [`Settings`] value and edit its fields; they never touch the
//! environment.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use secrecy::SecretString;

use crate::secrets::Keyring;

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl From<crate::secrets::KeyError> for ConfigError {
    fn from(e: crate::secrets::KeyError) -> Self {
        Self {
            var: e.var,
            message: e.message,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub http: HttpSettings,
    pub auth: AuthSettings,
    pub worker: WorkerSettings,
    /// `FREIGHT_ALLOW_PRIVATE_DESTINATIONS`: allow destinations on loopback and private
    /// networks (local setups and tests).
    pub allow_private_destinations: bool,
    pub log: LogSettings,
    /// `MIGRATE_ON_START`: apply pending migrations when the api or worker starts.
    pub migrate_on_start: bool,
    /// `METRICS_TENANT_LABELS`: label job and record counters with the tenant id.
    pub metrics_tenant_labels: bool,
    /// `TENANT_MAX_PENDING_RECORDS`: the `max_pending_records` a new tenant gets when the
    /// operator does not say (default 10,000,000; `none` for no limit).
    pub tenant_max_pending_records: Option<i64>,
    /// `TENANT_MAX_API_KEYS`: active (unrevoked, unexpired) keys a tenant may hold.
    pub tenant_max_api_keys: i64,
    /// `FREIGHT_SECRET_KEY` and `FREIGHT_SECRET_KEYS_OLD`: the keys destination secrets
    /// are sealed with at rest. Unset, disabled: secrets are stored as given.
    pub secrets: Keyring,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: SecretString,
    /// Queue name and key prefix: every Redis key Freight writes starts with it, so
    /// several deployments (or test runs) can share one Redis.
    pub queue: String,
    pub response_timeout: Duration,
    pub connection_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    pub body_limit: usize,
    /// `MAX_RECORD_BYTES`: the largest single record an upload or an inline job may
    /// hold; a larger one is refused (422) as soon as that many bytes of it arrived.
    pub max_record_bytes: usize,
    pub request_timeout: Duration,
    /// Empty: no CORS headers at all. `*`: any origin.
    pub cors_allowed_origins: Vec<String>,
    /// `None`: the api generates one at start-up and prints it once (local use only).
    pub admin_token: Option<SecretString>,
    /// `HTTP_HEADER_READ_TIMEOUT`: a connection whose request head has not fully arrived
    /// this long after it started (or that idles this long between requests) is closed.
    pub header_read_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: open connections per api process; past it the api stops
    /// accepting until one closes.
    pub max_connections: usize,
    /// `HTTP_SHUTDOWN_GRACE`: how long a stopping api waits for open requests.
    pub shutdown_grace: Duration,
    /// `HTTP_TRUSTED_PROXIES`: addresses or CIDR blocks of the proxies in front of the
    /// api. A request from one of them is attributed to the last address in its
    /// `X-Forwarded-For` that is not a trusted proxy (per-client limits count that).
    pub trusted_proxies: Vec<Cidr>,
    /// `METRICS_TOKEN`: when set, `/metrics` on the api answers only
    /// `Authorization: Bearer <token>`.
    pub metrics_token: Option<SecretString>,
    /// `UPLOAD_MIN_RATE`: a request body that delivers less than this many bytes per
    /// second over any `UPLOAD_MIN_RATE_WINDOW` (after the first window) is cut off with
    /// a 408, so a trickling sender cannot hold an upload slot and a transaction.
    pub min_body_rate: usize,
    /// `UPLOAD_MIN_RATE_WINDOW`.
    pub min_body_rate_window: Duration,
    /// `TENANT_MAX_CONCURRENT_UPLOADS`: uploads one tenant may run at once on a replica.
    pub tenant_max_uploads: usize,
    /// `TENANT_MAX_EVENT_STREAMS`: event streams and downloads one tenant may hold open
    /// at once on a replica.
    pub tenant_max_streams: usize,
    /// `STREAM_MAX_LIFETIME`: an event stream or download ends after this long (an event
    /// stream is resumed with `Last-Event-ID`).
    pub stream_max_lifetime: Duration,
    /// How long `GET /api/v1/jobs/{id}` serves a job's view from this replica's memory.
    /// Writes through this replica drop the entry at once; progress made by workers and
    /// other replicas shows within this long.
    pub job_view_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// How long a verified key is served from memory before its row is read again
    /// (Argon2 runs again only if the stored hash changed).
    pub cache_ttl: Duration,
    pub cache_capacity: u64,
    /// How often each api replica looks for revoked keys (revocation must take effect
    /// everywhere within 5 s).
    pub revocation_poll_interval: Duration,
    /// How often `last_used_at` is written back, in one statement for all keys used.
    pub last_used_flush_interval: Duration,
    /// `AUTH_FAILURES_PER_MINUTE`: failed authentications one client address may have
    /// (as a burst, refilled at this rate); past it, keys not already verified are
    /// refused with a 429 before any lookup or hashing.
    pub failures_per_minute: u32,
    /// `AUTH_VERIFY_QUEUE`: key verifications that may wait for a hashing slot; past it
    /// the api answers 503 with `Retry-After` at once.
    pub verify_queue: usize,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub concurrency: usize,
    /// How often the queue worker asks Redis for due batches. Each slot of a job's
    /// window waits for the next poll after its batch finishes, so this bounds how
    /// small batches can be before the wait dominates.
    pub poll_interval: Duration,
    pub shutdown_grace: Duration,
    /// How often the worker's own row is refreshed.
    pub heartbeat_interval: Duration,
    /// How often running batches' heartbeats are refreshed.
    pub batch_heartbeat_interval: Duration,
    /// A running batch whose heartbeat is older than this is presumed dead and taken over.
    pub batch_stale_after: Duration,
    /// Longest a single batch attempt may run before apalis abandons it.
    pub batch_timeout: Duration,
    /// `WORKER_PREEMPT_GRACE`: how long a batch that must yield its slot (its job is over
    /// its share of the fleet) lets the writes it has in flight finish before giving up
    /// on them as transient failures.
    pub preempt_grace: Duration,
    pub reconciler_interval: Duration,
    /// A queued or retry-scheduled batch not claimed this long after it was due is re-dispatched.
    pub reconciler_overdue_after: Duration,
    /// `TABLE_UPKEEP_INTERVAL`: how often the reconciler vacuums and analyses Freight's
    /// tables when autovacuum is off for them (`off`: never; `worker/src/upkeep.rs`).
    pub table_upkeep_interval: Option<Duration>,
    /// `WORKER_METRICS_ADDR`: where this worker serves `/metrics` and `/health`; unset, none.
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive (`LOG_LEVEL`, or `RUST_LOG` when set).
    pub filter: String,
}

impl DatabaseSettings {
    fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            url: SecretString::from(
                env.string("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/freight"),
            ),
            // At least 2: an api upload holds one connection for its `COPY` and
            // numbers its records on another (`Services::append_records`).
            max_connections: env.parsed("DATABASE_MAX_CONNECTIONS", 10, 2..=1000)?,
            min_connections: env.parsed("DATABASE_MIN_CONNECTIONS", 1, 0..=1000)?,
            acquire_timeout: env.duration("DATABASE_ACQUIRE_TIMEOUT", "5s")?,
        })
    }
}

impl RedisSettings {
    fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            url: SecretString::from(env.string("REDIS_URL", "redis://127.0.0.1:6379")),
            queue: env.identifier("REDIS_QUEUE", "freight")?,
            response_timeout: env.duration("REDIS_RESPONSE_TIMEOUT", "5s")?,
            connection_timeout: env.duration("REDIS_CONNECTION_TIMEOUT", "5s")?,
        })
    }
}

impl HttpSettings {
    fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            addr: env.parsed_any("HTTP_ADDR", "127.0.0.1:8080")?,
            body_limit: env.size("HTTP_BODY_LIMIT", "10MiB")?,
            max_record_bytes: env.size("MAX_RECORD_BYTES", "1MiB")?,
            request_timeout: env.duration("HTTP_REQUEST_TIMEOUT", "30s")?,
            cors_allowed_origins: env
                .string("CORS_ALLOWED_ORIGINS", "")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            admin_token: env.optional_secret("ADMIN_TOKEN", 16)?,
            header_read_timeout: env.duration("HTTP_HEADER_READ_TIMEOUT", "10s")?,
            max_connections: env.parsed("HTTP_MAX_CONNECTIONS", 4096, 1..=1_000_000)?,
            shutdown_grace: env.duration("HTTP_SHUTDOWN_GRACE", "10s")?,
            trusted_proxies: env.cidrs("HTTP_TRUSTED_PROXIES")?,
            metrics_token: env.optional_secret("METRICS_TOKEN", 16)?,
            min_body_rate: env.size("UPLOAD_MIN_RATE", "64KiB")?,
            min_body_rate_window: env.duration("UPLOAD_MIN_RATE_WINDOW", "5s")?,
            tenant_max_uploads: env.parsed("TENANT_MAX_CONCURRENT_UPLOADS", 2, 1..=1000)?,
            tenant_max_streams: env.parsed("TENANT_MAX_EVENT_STREAMS", 10, 1..=100_000)?,
            stream_max_lifetime: env.duration("STREAM_MAX_LIFETIME", "15m")?,
            job_view_ttl: env.duration("JOB_VIEW_CACHE_TTL", "100ms")?,
        })
    }
}

impl AuthSettings {
    fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            cache_ttl: env.duration("AUTH_CACHE_TTL", "60s")?,
            cache_capacity: env.parsed("AUTH_CACHE_CAPACITY", 10_000, 1..=10_000_000)?,
            revocation_poll_interval: env.duration("AUTH_REVOCATION_POLL_INTERVAL", "1s")?,
            last_used_flush_interval: env.duration("AUTH_LAST_USED_FLUSH_INTERVAL", "10s")?,
            failures_per_minute: env.parsed("AUTH_FAILURES_PER_MINUTE", 30, 1..=10_000_000)?,
            verify_queue: env.parsed("AUTH_VERIFY_QUEUE", 64, 0..=100_000)?,
        })
    }
}

impl WorkerSettings {
    fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            concurrency: env.parsed("WORKER_CONCURRENCY", 8, 1..=1024)?,
            poll_interval: env.duration("WORKER_POLL_INTERVAL", "50ms")?,
            shutdown_grace: env.duration("WORKER_SHUTDOWN_GRACE", "30s")?,
            heartbeat_interval: env.duration("WORKER_HEARTBEAT_INTERVAL", "5s")?,
            batch_heartbeat_interval: env.duration("WORKER_BATCH_HEARTBEAT_INTERVAL", "2s")?,
            batch_stale_after: env.duration("WORKER_BATCH_STALE_AFTER", "30s")?,
            batch_timeout: env.duration("WORKER_BATCH_TIMEOUT", "10m")?,
            preempt_grace: env.duration("WORKER_PREEMPT_GRACE", "5s")?,
            reconciler_interval: env.duration("RECONCILER_INTERVAL", "5s")?,
            reconciler_overdue_after: env.duration("RECONCILER_OVERDUE_AFTER", "15s")?,
            table_upkeep_interval: if env.string("TABLE_UPKEEP_INTERVAL", "30s").trim() == "off" {
                None
            } else {
                Some(env.duration("TABLE_UPKEEP_INTERVAL", "30s")?)
            },
            metrics_addr: match env.get("WORKER_METRICS_ADDR") {
                None => None,
                Some(raw) => Some(
                    raw.trim()
                        .parse()
                        .map_err(|e| env.invalid("WORKER_METRICS_ADDR", format!("`{raw}`: {e}")))?,
                ),
            },
        })
    }
}

impl LogSettings {
    fn read(env: &Env) -> Result<Self, ConfigError> {
        let format = match env.string("LOG_FORMAT", "text").as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(env.invalid(
                    "LOG_FORMAT",
                    format!("expected `text` or `json`, got `{other}`"),
                ));
            }
        };
        // RUST_LOG, when set, wins; a filter that does not parse stops the process like
        // any other bad setting, rather than logging at `info` unasked.
        let (var, filter) = match env.get("RUST_LOG") {
            Some(filter) => ("RUST_LOG", filter),
            None => ("LOG_LEVEL", env.string("LOG_LEVEL", "info")),
        };
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&filter) {
            return Err(env.invalid(var, format!("`{filter}` is not a log filter: {e}")));
        }
        Ok(Self { format, filter })
    }
}

impl Settings {
    /// Reads every setting from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads every setting through `lookup`, which returns a variable's value if set.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        if let Some(var) = INHERITED_PG_VARS.iter().find(|v| env.get(v).is_some()) {
            return Err(env.invalid(
                var,
                "sqlx copies this variable into every Postgres connection the process opens, \
                 tenants' destination databases included, and Freight cannot override it; \
                 unset it (for Freight's own database, put the setting in DATABASE_URL)",
            ));
        }
        Ok(Settings {
            database: DatabaseSettings::read(&env)?,
            redis: RedisSettings::read(&env)?,
            http: HttpSettings::read(&env)?,
            auth: AuthSettings::read(&env)?,
            worker: WorkerSettings::read(&env)?,
            allow_private_destinations: env.boolean("FREIGHT_ALLOW_PRIVATE_DESTINATIONS", false)?,
            log: LogSettings::read(&env)?,
            migrate_on_start: env.boolean("MIGRATE_ON_START", true)?,
            metrics_tenant_labels: env.boolean("METRICS_TENANT_LABELS", false)?,
            tenant_max_pending_records: match env.get("TENANT_MAX_PENDING_RECORDS") {
                Some(v) if v.trim() == "none" => None,
                _ => Some(env.parsed("TENANT_MAX_PENDING_RECORDS", 10_000_000, 1..=i64::MAX)?),
            },
            tenant_max_api_keys: env.parsed("TENANT_MAX_API_KEYS", 100, 1..=1_000_000)?,
            secrets: Keyring::from_settings(
                env.get(crate::secrets::KEY_VAR).as_deref(),
                env.get(crate::secrets::OLD_KEYS_VAR).as_deref(),
            )?,
        })
    }
}

/// libpq variables that sqlx reads into every connection's options and that have no
/// setter to clear them: a worker started with one set would hand it to every tenant's
/// destination database (a client key, server options, another address to dial). The
/// other `PG*` variables (`PGPASSWORD`, `PGUSER`, `PGHOST`, ...) are harmless: every
/// destination connection sets those fields itself (`destinations::postgres`).
pub const INHERITED_PG_VARS: &[&str] = &[
    "PGHOSTADDR",
    "PGOPTIONS",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
];

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    fn invalid(&self, var: &'static str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            var,
            message: message.into(),
        }
    }

    fn string(&self, var: &str, default: &str) -> String {
        self.get(var).unwrap_or_else(|| default.to_owned())
    }

    fn parsed_any<T: std::str::FromStr>(
        &self,
        var: &'static str,
        default: &str,
    ) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self.string(var, default);
        raw.trim()
            .parse()
            .map_err(|e| self.invalid(var, format!("`{raw}`: {e}")))
    }

    fn parsed<T>(
        &self,
        var: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
        T::Err: std::fmt::Display,
    {
        let value = match self.get(var) {
            None => default,
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e| self.invalid(var, format!("`{raw}`: {e}")))?,
        };
        if !range.contains(&value) {
            return Err(self.invalid(
                var,
                format!(
                    "{value} is out of range {}..={}",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(value)
    }

    fn duration(&self, var: &'static str, default: &str) -> Result<Duration, ConfigError> {
        let raw = self.string(var, default);
        let d = humantime::parse_duration(raw.trim()).map_err(|e| {
            self.invalid(
                var,
                format!("`{raw}` is not a duration like `5s` or `250ms`: {e}"),
            )
        })?;
        if d.is_zero() {
            return Err(self.invalid(var, "must be greater than zero"));
        }
        Ok(d)
    }

    fn size(&self, var: &'static str, default: &str) -> Result<usize, ConfigError> {
        let raw = self.string(var, default);
        parse_size(&raw).ok_or_else(|| {
            self.invalid(
                var,
                format!("`{raw}` is not a size like `10485760`, `512KiB` or `10MiB`"),
            )
        })
    }

    fn boolean(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(self.invalid(var, format!("`{v}` is not a boolean (true/false)"))),
        }
    }

    fn identifier(&self, var: &'static str, default: &str) -> Result<String, ConfigError> {
        let v = self.string(var, default);
        if v.len() > 100
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-:.".contains(c))
        {
            return Err(self.invalid(var, "use up to 100 letters, digits and `_-:.`"));
        }
        Ok(v)
    }

    fn cidrs(&self, var: &'static str) -> Result<Vec<Cidr>, ConfigError> {
        self.string(var, "")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|e| self.invalid(var, format!("`{s}`: {e}")))
            })
            .collect()
    }

    fn optional_secret(
        &self,
        var: &'static str,
        min_len: usize,
    ) -> Result<Option<SecretString>, ConfigError> {
        match self.get(var) {
            None => Ok(None),
            Some(v) if v.len() < min_len => {
                Err(self.invalid(var, format!("must be at least {min_len} characters long")))
            }
            Some(v) => Ok(Some(SecretString::from(v))),
        }
    }
}

/// An address block, `10.0.0.0/8` or `2001:db8::/32`; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = addr
            .parse()
            .map_err(|e| format!("not an IP address: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("the prefix length must be 0 to {max}"))?
        };
        Ok(Self { addr, prefix })
    }
}

/// Parses `1048576`, `512KiB`, `10MiB`, `1GiB` (also `KB`/`MB`/`GB`, read as powers of 1024).
pub fn parse_size(raw: &str) -> Option<usize> {
    let s = raw.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits_end);
    let n: usize = num.parse().ok()?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&v| v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(move |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_valid() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.http.body_limit, 10 * 1024 * 1024);
        assert_eq!(s.worker.concurrency, 8);
        assert!(!s.allow_private_destinations);
        assert!(s.http.admin_token.is_none());
        assert_eq!(s.tenant_max_pending_records, Some(10_000_000));
        let s = settings(&[("TENANT_MAX_PENDING_RECORDS", "1000000")]).unwrap();
        assert_eq!(s.tenant_max_pending_records, Some(1_000_000));
        let s = settings(&[("TENANT_MAX_PENDING_RECORDS", "none")]).unwrap();
        assert_eq!(s.tenant_max_pending_records, None);
        let s = settings(&[("HTTP_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7,fd00::/8")]).unwrap();
        let proxies = &s.http.trusted_proxies;
        assert!(proxies[0].contains("10.9.8.7".parse().unwrap()));
        assert!(proxies[0].contains("::ffff:10.9.8.7".parse().unwrap()));
        assert!(!proxies[0].contains("11.0.0.1".parse().unwrap()));
        assert!(proxies[1].contains("192.168.1.7".parse().unwrap()));
        assert!(!proxies[1].contains("192.168.1.8".parse().unwrap()));
        assert!(proxies[2].contains("fd12::1".parse().unwrap()));
        assert!(!s.secrets.is_enabled());
        let key = crate::secrets::generate_key();
        let s = settings(&[("FREIGHT_SECRET_KEY", &key)]).unwrap();
        assert!(s.secrets.is_enabled());
        assert!(
            !format!("{s:?}").contains(&key),
            "Debug never shows the key"
        );
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (var, val) in [
            ("HTTP_BODY_LIMIT", "ten"),
            ("WORKER_CONCURRENCY", "0"),
            ("DATABASE_MAX_CONNECTIONS", "1"),
            ("HTTP_REQUEST_TIMEOUT", "soon"),
            ("FREIGHT_ALLOW_PRIVATE_DESTINATIONS", "maybe"),
            ("HTTP_ADDR", "nowhere"),
            ("LOG_FORMAT", "xml"),
            ("ADMIN_TOKEN", "short"),
            ("TENANT_MAX_PENDING_RECORDS", "0"),
            ("TENANT_MAX_PENDING_RECORDS", "lots"),
            ("FREIGHT_SECRET_KEY", "not-base64!"),
            ("FREIGHT_SECRET_KEY", "dG9vIHNob3J0"),
            ("PGHOSTADDR", "127.0.0.1"),
            ("PGOPTIONS", "-c search_path=x"),
            ("PGSSLCERT", "/etc/freight/client.crt"),
            ("HTTP_TRUSTED_PROXIES", "10.0.0.0/33"),
            ("HTTP_TRUSTED_PROXIES", "proxy.local"),
            ("METRICS_TOKEN", "short"),
            ("TENANT_MAX_API_KEYS", "0"),
            ("LOG_LEVEL", "info,[bad"),
            ("RUST_LOG", "=debug=x"),
        ] {
            let err = settings(&[(var, val)]).unwrap_err();
            assert_eq!(err.var, var);
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512KiB"), Some(512 * 1024));
        assert_eq!(parse_size("10MiB"), Some(10 << 20));
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("1TB"), None);
    }
}
