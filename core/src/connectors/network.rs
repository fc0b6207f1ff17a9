//! The network check a destination passes when a job is created: its host must not be,
//! or resolve to, a loopback, private, link-local or metadata address. Delivery checks
//! every address again when it connects ([`super::resolver`]), since a name can resolve
//! differently later; this check only lets a tenant hear about a bad destination at once.

use url::Url;

use super::resolver::{self, ResolveError};
use crate::domain::destination::Destination;

/// Refuses a destination whose host is forbidden, with a message for the tenant that
/// never names the address a name resolved to. A name that does not resolve now is let
/// through: delivery checks it again at connect time.
pub async fn check_destination(
    destination: &Destination,
    allow_private: bool,
) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let url = Url::parse(destination.url()).map_err(|e| e.to_string())?;
    let Some(host) = url.host_str() else {
        return Err("must name a host".into());
    };
    let port = url.port_or_known_default().unwrap_or(5432);
    match resolver::resolve_checked(host, port).await {
        Ok(_) | Err(ResolveError::Lookup(_)) => Ok(()),
        Err(ResolveError::Forbidden(forbidden)) => Err(forbidden.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::destination::DestinationInput, error::Problems};

    fn validated(kind: &str, url: &str) -> Destination {
        DestinationInput {
            kind: Some(kind.into()),
            url: Some(url.into()),
            table: (kind == "postgres").then(|| "t".into()),
            ..Default::default()
        }
        .validate(&mut Problems::default())
        .expect("a valid destination")
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
            let dest = validated("http", url);
            let refused = check_destination(&dest, false).await;
            assert!(refused.is_err(), "{url} should be refused");
            assert!(check_destination(&dest, true).await.is_ok());
        }
        let pg = validated("postgres", "postgres://u@127.0.0.1:5432/db");
        assert!(check_destination(&pg, false).await.is_err());
    }

    #[tokio::test]
    async fn a_refused_name_does_not_say_what_it_resolves_to() {
        let dest = validated("http", "http://localhost:8080/x");
        let message = check_destination(&dest, false).await.unwrap_err();
        assert!(
            message.starts_with("`localhost` is a private destination"),
            "{message}"
        );
        assert!(
            !message.contains("127.0.0.1") && !message.contains("::1"),
            "{message}"
        );
    }
}
