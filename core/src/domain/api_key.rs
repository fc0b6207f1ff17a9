//! API keys: `frk_<public id>_<secret>`.
//!
//! The public id (16 lowercase alphanumerics) locates the row; the secret (43
//! alphanumerics, about 256 random bits) is verified against its Argon2id hash. Neither
//! part contains `_`, so parsing is unambiguous. The secret never reaches a log: `Debug`
//! redacts it.

use argon2::{
    Argon2,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
};
use chrono::{DateTime, Utc};
use rand::{Rng, distributions::Alphanumeric, rngs::OsRng};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::error::Problems;

pub const KEY_PREFIX: &str = "frk_";
pub const PUBLIC_ID_LEN: usize = 16;
pub const SECRET_LEN: usize = 43;

#[derive(Clone)]
pub struct ApiKey {
    public_id: String,
    secret: SecretString,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({KEY_PREFIX}{}_[redacted])", self.public_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed API key: expected frk_<public id>_<secret>")]
pub struct MalformedKey;

impl ApiKey {
    /// Generates a new key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let public_id: String = (0..PUBLIC_ID_LEN)
            .map(|_| {
                const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
                ALPHABET[OsRng.gen_range(0..ALPHABET.len())] as char
            })
            .collect();
        let secret: String = OsRng
            .sample_iter(&Alphanumeric)
            .take(SECRET_LEN)
            .map(char::from)
            .collect();
        Self {
            public_id,
            secret: SecretString::from(secret),
        }
    }

    pub fn parse(raw: &str) -> Result<Self, MalformedKey> {
        let rest = raw.strip_prefix(KEY_PREFIX).ok_or(MalformedKey)?;
        let (public_id, secret) = rest.split_once('_').ok_or(MalformedKey)?;
        let public_ok = public_id.len() == PUBLIC_ID_LEN
            && public_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let secret_ok =
            secret.len() == SECRET_LEN && secret.bytes().all(|b| b.is_ascii_alphanumeric());
        if !(public_ok && secret_ok) {
            return Err(MalformedKey);
        }
        Ok(Self {
            public_id: public_id.to_owned(),
            secret: SecretString::from(secret.to_owned()),
        })
    }

    pub fn public_id(&self) -> &str {
        &self.public_id
    }

    /// `frk_<public id>`: the non-secret start of the key, safe to show and log.
    pub fn prefix(&self) -> String {
        format!("{KEY_PREFIX}{}", self.public_id)
    }

    /// The full plaintext key. Shown once, in the response that creates it.
    pub fn expose(&self) -> String {
        format!(
            "{KEY_PREFIX}{}_{}",
            self.public_id,
            self.secret.expose_secret()
        )
    }

    /// SHA-256 of the secret: what the in-memory auth cache compares (in constant time),
    /// so a cached key never needs Argon2 again and the plaintext is never kept.
    pub fn secret_digest(&self) -> [u8; 32] {
        Sha256::digest(self.secret.expose_secret().as_bytes()).into()
    }

    /// Argon2id PHC string of the secret. CPU-heavy (~30 ms): call from `spawn_blocking`.
    pub fn hash_secret(&self) -> String {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(self.secret.expose_secret().as_bytes(), &salt)
            .expect("Argon2 with default parameters and a generated salt cannot fail")
            .to_string()
    }

    /// Checks the secret against a stored PHC string. CPU-heavy: call from `spawn_blocking`.
    pub fn verify_secret(&self, phc: &str) -> bool {
        PasswordHash::new(phc)
            .map(|hash| {
                Argon2::default()
                    .verify_password(self.secret.expose_secret().as_bytes(), &hash)
                    .is_ok()
            })
            .unwrap_or(false)
    }
}

/// What a key may do. A key is created with any non-empty set (all three by default), so
/// a tenant can hand a dashboard a key that only reads, and a key leaked from a job
/// runner cannot mint new keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Read jobs, their logs, dead letters, stats and policies.
    JobsRead,
    /// Create, upload to, start, cancel and retry jobs; change policies.
    JobsWrite,
    /// Create, list and revoke the tenant's API keys.
    KeysManage,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::JobsRead, Scope::JobsWrite, Scope::KeysManage];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::JobsRead => "jobs:read",
            Scope::JobsWrite => "jobs:write",
            Scope::KeysManage => "keys:manage",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`Scope`]s.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Self {
        Self::from_iter(Scope::ALL)
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes' names, in [`Scope::ALL`] order (as stored and shown).
    pub fn names(self) -> Vec<String> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(|s| s.as_str().to_owned())
            .collect()
    }

    /// From stored names; names Freight does not know are ignored (they grant nothing).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Self {
        names
            .iter()
            .filter_map(|n| Scope::parse(n.as_ref()))
            .collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |bits, s| bits | s.bit()))
    }
}

impl std::fmt::Debug for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// `POST /api/v1/api-keys` and the operator's form of it.
#[derive(Debug, Default, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateApiKeyRequest {
    /// A label, up to 200 characters.
    pub name: Option<String>,
    /// When the key stops working (RFC 3339, in the future). Never, if absent.
    pub expires_at: Option<DateTime<Utc>>,
    /// What the key may do: any of `jobs:read`, `jobs:write`, `keys:manage` (default:
    /// all three). A dashboard's key needs only `jobs:read`.
    pub scopes: Option<Vec<String>>,
}

/// A validated key request.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub name: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Scopes,
}

impl CreateApiKeyRequest {
    pub fn validate(self, now: DateTime<Utc>) -> Result<KeySpec, crate::Error> {
        let mut problems = Problems::default();
        if self
            .name
            .as_ref()
            .is_some_and(|n| n.trim().is_empty() || n.chars().count() > 200)
        {
            problems.push("name", "must be 1 to 200 characters");
        }
        if self.expires_at.is_some_and(|at| at <= now) {
            problems.push("expires_at", "must be in the future");
        }
        let scopes = match &self.scopes {
            None => Scopes::all(),
            Some(names) => {
                for (i, name) in names.iter().enumerate() {
                    if Scope::parse(name).is_none() {
                        problems.push(
                            format!("scopes[{i}]"),
                            "is not a scope: use `jobs:read`, `jobs:write` or `keys:manage`",
                        );
                    }
                }
                let scopes = Scopes::from_names(names);
                if scopes.is_empty() && problems.is_empty() {
                    problems.push("scopes", "must name at least one scope");
                }
                scopes
            }
        };
        problems.into_result(|| KeySpec {
            name: self.name,
            expires_at: self.expires_at,
            scopes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_and_verify() {
        let key = ApiKey::generate();
        let plain = key.expose();
        assert!(plain.starts_with("frk_"));
        let parsed = ApiKey::parse(&plain).unwrap();
        assert_eq!(parsed.public_id(), key.public_id());
        let phc = key.hash_secret();
        assert!(phc.starts_with("$argon2id$"));
        assert!(parsed.verify_secret(&phc));
        assert!(!ApiKey::generate().verify_secret(&phc));
        assert_ne!(ApiKey::generate().expose(), plain);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = ApiKey::generate();
        let plain = key.expose();
        let secret = plain.rsplit('_').next().unwrap();
        assert!(!format!("{key:?}").contains(secret));
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = ApiKey::generate().expose();
        for bad in [
            "",
            "frk_",
            "frk__",
            "abc",
            &good[..good.len() - 1],
            &format!("{good}x"),
            &good.replacen("frk_", "frx_", 1),
            &good.to_uppercase(),
            &format!("{good}_extra"),
        ] {
            assert_eq!(ApiKey::parse(bad).unwrap_err(), MalformedKey, "{bad}");
        }
    }

    #[test]
    fn scopes_round_trip_by_name() {
        let all = Scopes::all();
        assert_eq!(all.names(), ["jobs:read", "jobs:write", "keys:manage"]);
        assert_eq!(Scopes::from_names(&all.names()), all);
        let read = Scopes::from_names(&["jobs:read", "made:up"]);
        assert!(read.contains(Scope::JobsRead) && !read.contains(Scope::JobsWrite));
        assert!(Scopes::from_names::<&str>(&[]).is_empty());
        assert_eq!(Scope::parse("keys:manage"), Some(Scope::KeysManage));
    }
}
