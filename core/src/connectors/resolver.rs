//! The SSRF guard at connect time.
//!
//! Intake ([`super::network::check_destination`]) refuses private
//! destinations when a job is created, but a name can resolve differently a minute later
//! (DNS rebinding). So when private destinations are not allowed, every connection a
//! connector opens is checked again here, on the addresses it actually connects to:
//!
//! - HTTP: the shared `reqwest` client resolves names through [`SsrfResolver`], which
//!   refuses a name when **any** of its addresses is forbidden. IP literals never reach a
//!   resolver, so [`check_url_host`] refuses them before a request is sent.
//! - Postgres: [`resolve_checked`] resolves the host once, refuses forbidden addresses, and
//!   the pool connects to the checked address itself.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

use crate::domain::ssrf;

/// How long a name may take to resolve before the attempt counts as a network failure.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A destination address the SSRF guard refuses. Retrying will not help: permanent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForbiddenAddress {
    /// The name as written in the destination, when it was a name and not a literal.
    pub host: Option<String>,
    pub ip: IpAddr,
    pub reason: &'static str,
}

impl fmt::Display for ForbiddenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A name's addresses are never quoted: which internal address a name resolves to
        // is exactly what a tenant probing the operator's DNS wants to learn.
        match &self.host {
            Some(host) => write!(f, "`{host}` is a private destination")?,
            None => write!(f, "{} is a {}", self.ip, self.reason)?,
        }
        f.write_str(
            "; private destinations are refused unless the operator sets FREIGHT_ALLOW_PRIVATE_DESTINATIONS=true",
        )
    }
}

impl std::error::Error for ForbiddenAddress {}

/// Why a name could not be turned into connectable addresses.
#[derive(Debug)]
pub enum ResolveError {
    /// An address is forbidden: permanent.
    Forbidden(ForbiddenAddress),
    /// The lookup failed, timed out or returned nothing: transient.
    Lookup(String),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Forbidden(forbidden) => forbidden.fmt(f),
            ResolveError::Lookup(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ResolveError {}

/// Refuses a forbidden address. `host` is the name it came from, if any (for the message).
pub fn check_ip(ip: IpAddr, host: Option<&str>) -> Result<(), ForbiddenAddress> {
    match ssrf::forbidden_reason(ip) {
        None => Ok(()),
        Some(reason) => Err(ForbiddenAddress {
            host: host.map(str::to_owned),
            ip,
            reason,
        }),
    }
}

/// Refuses a URL whose host is a forbidden IP literal. Names pass: they are checked by
/// [`SsrfResolver`] when the connection is made.
pub fn check_url_host(url: &Url) -> Result<(), ForbiddenAddress> {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), None),
        Some(url::Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), None),
        Some(url::Host::Domain(name)) => match name.parse::<IpAddr>() {
            Ok(ip) => check_ip(ip, None),
            Err(_) => Ok(()),
        },
        None => Ok(()),
    }
}

/// Resolves `host` (a name or an IP literal) and refuses it when any address is forbidden.
/// Returns every address, in resolver order.
pub async fn resolve_checked(host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        check_ip(ip, None).map_err(ResolveError::Forbidden)?;
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((bare, port))).await {
            Err(_) => {
                return Err(ResolveError::Lookup(format!(
                    "resolving `{bare}` timed out after {} s",
                    LOOKUP_TIMEOUT.as_secs()
                )));
            }
            Ok(Err(e)) => {
                return Err(ResolveError::Lookup(format!(
                    "could not resolve `{bare}`: {e}"
                )));
            }
            Ok(Ok(addrs)) => addrs.collect(),
        };
    if addrs.is_empty() {
        return Err(ResolveError::Lookup(format!(
            "`{bare}` resolves to no address"
        )));
    }
    for addr in &addrs {
        check_ip(addr.ip(), Some(bare)).map_err(ResolveError::Forbidden)?;
    }
    Ok(addrs)
}

/// A `reqwest` DNS resolver that refuses names resolving to any forbidden address.
#[derive(Debug, Clone, Copy, Default)]
pub struct SsrfResolver;

impl Resolve for SsrfResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest substitutes the URL's (or the scheme's default) port.
            match resolve_checked(&host, 0).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                Err(ResolveError::Forbidden(forbidden)) => Err(Box::new(forbidden) as _),
                Err(ResolveError::Lookup(message)) => Err(message.into()),
            }
        })
    }
}

/// The [`ForbiddenAddress`] somewhere in an error's source chain, if the SSRF guard is
/// why it failed.
pub fn find_forbidden<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a ForbiddenAddress> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(forbidden) = e.downcast_ref::<ForbiddenAddress>() {
            return Some(forbidden);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_loopback_names_and_literals() {
        let err = resolve_checked("localhost", 80).await.unwrap_err();
        assert!(matches!(err, ResolveError::Forbidden(_)), "{err}");
        assert!(err.to_string().contains("private destination"), "{err}");
        assert!(!err.to_string().contains("127.0.0.1"), "{err}");
        assert!(matches!(
            resolve_checked("127.0.0.1", 80).await,
            Err(ResolveError::Forbidden(_))
        ));
        assert!(matches!(
            resolve_checked("[::1]", 80).await,
            Err(ResolveError::Forbidden(_))
        ));
        assert!(resolve_checked("93.184.216.34", 80).await.is_ok());
    }

    #[test]
    fn url_literals() {
        for url in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/x",
            "http://2130706433/x",
            "http://169.254.169.254/latest",
        ] {
            let url = Url::parse(url).unwrap();
            assert!(check_url_host(&url).is_err(), "{url}");
        }
        assert!(check_url_host(&Url::parse("http://localhost/x").unwrap()).is_ok());
        assert!(check_url_host(&Url::parse("http://8.8.8.8/x").unwrap()).is_ok());
    }
}
