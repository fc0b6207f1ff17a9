//! Destination secrets at rest: the operator's keyring and AES-256-GCM sealing.
//!
//! A sealed value is a self-describing string, `enc:v1:<key id>:<base64url(nonce ‖
//! ciphertext)>`: the key id (the first 8 hex digits of the key's SHA-256) lets any
//! process holding that key open it, so keys can be rotated without a flag day. Every
//! value gets a fresh random 96-bit nonce, and the tenant id and field name are bound as
//! associated data, so a sealed value copied into another tenant's job or another field
//! does not open.
//!
//! The keyring comes from `FREIGHT_SECRET_KEY` (sealing and opening) and
//! `FREIGHT_SECRET_KEYS_OLD` (opening only). Without a current key it is disabled:
//! values are stored as given (and the binaries warn at start-up).

use std::{fmt, sync::Arc};

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use entity::TenantId;
use rand::RngCore;
use secrecy::zeroize::Zeroizing;
use sha2::{Digest, Sha256};

/// A key setting that cannot be used; the configuration reports it under `var`.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct KeyError {
    pub var: &'static str,
    pub message: String,
}

/// What every sealed value starts with. Intake refuses secrets that start with it, so a
/// tenant cannot pass off a sealed value (from a leaked dump, say) as its own.
pub const PREFIX: &str = "enc:v1:";
const NONCE_LEN: usize = 12;

pub const KEY_VAR: &str = "FREIGHT_SECRET_KEY";
pub const OLD_KEYS_VAR: &str = "FREIGHT_SECRET_KEYS_OLD";

/// One 256-bit key, as its expanded cipher, built once: every batch opens its
/// destination's secrets. The cipher wipes its round keys on drop (aes' `zeroize`), and
/// the raw bytes are not kept.
struct Key {
    id: String,
    cipher: Aes256Gcm,
}

impl Key {
    /// Decodes a base64 key (standard or URL-safe alphabet, padding optional).
    fn from_base64(encoded: &str) -> Result<Self, String> {
        let trimmed = encoded.trim();
        let decoded = STANDARD
            .decode(trimmed)
            .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed.trim_end_matches('=')))
            .map_err(|_| "is not base64 (generate one with `freight secrets generate-key`)")?;
        let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(decoded.as_slice().try_into().map_err(|_| {
            format!(
                "must be 32 bytes, base64-encoded, but decodes to {} bytes (generate one with `freight secrets generate-key`)",
                decoded.len()
            )
        })?);
        Ok(Self {
            id: hex::encode(&Sha256::digest(*bytes)[..4]),
            cipher: Aes256Gcm::new((&*bytes).into()),
        })
    }
}

/// The current key (seals and opens) and old keys (open only). Cheap to clone.
#[derive(Clone)]
pub struct Keyring(Option<Arc<Keys>>);

struct Keys {
    current: Key,
    old: Vec<Key>,
}

impl fmt::Debug for Keyring {
    /// Key ids only, never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("Keyring(disabled)"),
            Some(k) => f
                .debug_struct("Keyring")
                .field("current", &k.current.id)
                .field("old", &k.old.iter().map(|k| &k.id).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// Why a sealed value did not open. Never holds the value, only its key id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Sealed with a key this process does not hold: an operator misconfiguration, fixed
    /// by configuring the key, so delivery waits rather than failing.
    #[error(
        "a destination secret is sealed with key `{key_id}`, which this process does not hold (set it in FREIGHT_SECRET_KEY or FREIGHT_SECRET_KEYS_OLD)"
    )]
    UnknownKey { key_id: String },
    #[error("a destination secret (`{field}`) is not a well-formed sealed value")]
    Malformed { field: String },
    /// Wrong tenant or field, or altered in the database.
    #[error(
        "a destination secret (`{field}`) sealed with key `{key_id}` failed authentication: it was altered or belongs elsewhere"
    )]
    Tampered { field: String, key_id: String },
}

/// Whether a presented token equals the expected one, in time that depends on neither
/// (their SHA-256 digests are compared in constant time, so not even the length leaks).
pub fn tokens_match(presented: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    Sha256::digest(presented.as_bytes())
        .ct_eq(&Sha256::digest(expected.as_bytes()))
        .into()
}

/// Whether `value` is sealed (whatever the key).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// A sealed value's key id and blob; `None` if it is not sealed, `Some(None)` if it is
/// but is not well formed.
fn parts(value: &str) -> Option<Option<(&str, &str)>> {
    value.strip_prefix(PREFIX).map(|rest| rest.split_once(':'))
}

/// A fresh random key, base64-encoded: a value for `FREIGHT_SECRET_KEY`.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

impl Keyring {
    /// No key: values are stored as given.
    pub fn disabled() -> Self {
        Self(None)
    }

    /// From the two settings' raw values (`old` comma-separated).
    pub fn from_settings(current: Option<&str>, old: Option<&str>) -> Result<Self, KeyError> {
        let old: Vec<&str> = old
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let Some(current) = current.map(str::trim).filter(|s| !s.is_empty()) else {
            if old.is_empty() {
                return Ok(Self::disabled());
            }
            return Err(KeyError {
                var: KEY_VAR,
                message: format!("is required when {OLD_KEYS_VAR} is set"),
            });
        };
        let current = Key::from_base64(current).map_err(|message| KeyError {
            var: KEY_VAR,
            message,
        })?;
        let mut keys = Keys {
            current,
            old: Vec::new(),
        };
        for (i, raw) in old.iter().enumerate() {
            let key = Key::from_base64(raw).map_err(|m| KeyError {
                var: OLD_KEYS_VAR,
                message: format!("key {} of the list {m}", i + 1),
            })?;
            if key.id != keys.current.id && !keys.old.iter().any(|k| k.id == key.id) {
                keys.old.push(key);
            }
        }
        Ok(Self(Some(Arc::new(keys))))
    }

    /// A keyring from base64 keys, the first current (tests).
    pub fn from_keys(current: &str, old: &[&str]) -> Result<Self, KeyError> {
        Self::from_settings(Some(current), Some(&old.join(",")))
    }

    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// The id of the key new values are sealed with.
    pub fn current_id(&self) -> Option<&str> {
        self.0.as_ref().map(|k| k.current.id.as_str())
    }

    /// The ids of the keys kept for opening only.
    pub fn old_ids(&self) -> Vec<&str> {
        self.0
            .as_ref()
            .map(|k| k.old.iter().map(|k| k.id.as_str()).collect())
            .unwrap_or_default()
    }

    fn find(&self, id: &str) -> Option<&Key> {
        let keys = self.0.as_ref()?;
        std::iter::once(&keys.current)
            .chain(&keys.old)
            .find(|k| k.id == id)
    }

    /// Seals `plaintext` with the current key. A value already sealed is returned as it is
    /// (never sealed twice), and so is everything when the keyring is disabled.
    pub fn seal(&self, tenant_id: TenantId, field: &str, plaintext: &str) -> String {
        let Some(keys) = &self.0 else {
            return plaintext.to_owned();
        };
        if is_sealed(plaintext) {
            return plaintext.to_owned();
        }
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = aad(tenant_id, field);
        let ciphertext = keys
            .current
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encrypts any message under 64 GiB");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ciphertext);
        format!(
            "{PREFIX}{}:{}",
            keys.current.id,
            URL_SAFE_NO_PAD.encode(blob)
        )
    }

    /// Opens a sealed value with whichever key sealed it. A value that is not sealed
    /// (stored before a key was configured) is returned as it is.
    pub fn open(&self, tenant_id: TenantId, field: &str, value: &str) -> Result<String, OpenError> {
        let Some(parts) = parts(value) else {
            return Ok(value.to_owned());
        };
        let malformed = || OpenError::Malformed {
            field: field.to_owned(),
        };
        let (key_id, blob) = parts.ok_or_else(malformed)?;
        let key = self.find(key_id).ok_or_else(|| OpenError::UnknownKey {
            key_id: key_id.chars().take(16).collect(),
        })?;
        let blob = URL_SAFE_NO_PAD.decode(blob).map_err(|_| malformed())?;
        if blob.len() < NONCE_LEN {
            return Err(malformed());
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let aad = aad(tenant_id, field);
        let plaintext = key
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| OpenError::Tampered {
                field: field.to_owned(),
                key_id: key.id.clone(),
            })?;
        String::from_utf8(plaintext).map_err(|_| malformed())
    }

    /// Re-seals a value with the current key: opens it if it is sealed with another key
    /// (or not at all), and leaves it untouched if the current key already sealed it.
    pub fn reseal(
        &self,
        tenant_id: TenantId,
        field: &str,
        value: &str,
    ) -> Result<String, OpenError> {
        if let Some(Some((key_id, _))) = parts(value)
            && Some(key_id) == self.current_id()
        {
            return Ok(value.to_owned());
        }
        let plaintext = self.open(tenant_id, field, value)?;
        Ok(self.seal(tenant_id, field, &plaintext))
    }
}

fn aad(tenant_id: TenantId, field: &str) -> String {
    format!("freight:{tenant_id}:{field}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn ring(keys: &[&str]) -> Keyring {
        Keyring::from_keys(keys[0], &keys[1..]).unwrap()
    }

    const TENANT: TenantId = TenantId(Uuid::from_u128(7));

    #[test]
    fn sealed_values_open_and_never_show_the_plaintext() {
        let (a, b) = (generate_key(), generate_key());
        let keyring = ring(&[&a]);
        let sealed = keyring.seal(TENANT, "headers.Authorization", "Bearer s3cr3t");
        assert!(
            sealed.starts_with(PREFIX) && !sealed.contains("s3cr3t"),
            "{sealed}"
        );
        assert!(sealed.contains(keyring.current_id().unwrap()));
        // A fresh nonce each time: the same value never seals to the same string.
        assert_ne!(
            sealed,
            keyring.seal(TENANT, "headers.Authorization", "Bearer s3cr3t")
        );
        assert_eq!(
            keyring
                .open(TENANT, "headers.Authorization", &sealed)
                .unwrap(),
            "Bearer s3cr3t"
        );
        // Not sealed twice.
        assert_eq!(
            keyring.seal(TENANT, "headers.Authorization", &sealed),
            sealed
        );
        // After rotation, the old key still opens it, and reseal moves it to the new key.
        let rotated = ring(&[&b, &a]);
        assert_eq!(
            rotated
                .open(TENANT, "headers.Authorization", &sealed)
                .unwrap(),
            "Bearer s3cr3t"
        );
        let resealed = rotated
            .reseal(TENANT, "headers.Authorization", &sealed)
            .unwrap();
        assert!(resealed.contains(rotated.current_id().unwrap()));
        assert_eq!(
            rotated
                .reseal(TENANT, "headers.Authorization", &resealed)
                .unwrap(),
            resealed,
            "resealing is idempotent"
        );
        // Plaintext (stored before a key was set) passes through open, and reseal seals it.
        assert_eq!(rotated.open(TENANT, "f", "plain").unwrap(), "plain");
        assert!(is_sealed(&rotated.reseal(TENANT, "f", "plain").unwrap()));
    }

    #[test]
    fn a_missing_key_is_named_by_id_without_the_value() {
        let (a, b) = (generate_key(), generate_key());
        let sealed = ring(&[&a]).seal(TENANT, "url.password", "hunter2");
        let other = ring(&[&b]);
        let err = other.open(TENANT, "url.password", &sealed).unwrap_err();
        let id_a = ring(&[&a]).current_id().unwrap().to_owned();
        assert_eq!(
            err,
            OpenError::UnknownKey {
                key_id: id_a.clone()
            }
        );
        assert!(err.to_string().contains(&id_a) && !err.to_string().contains("hunter2"));
        assert!(matches!(
            Keyring::disabled().open(TENANT, "url.password", &sealed),
            Err(OpenError::UnknownKey { .. })
        ));
    }

    #[test]
    fn tampered_or_misplaced_values_fail_cleanly() {
        let keyring = ring(&[&generate_key()]);
        let sealed = keyring.seal(TENANT, "url.password", "hunter2");
        // Flip one character inside the ciphertext (not the last: its low bits may be
        // base64 padding that decodes to the same bytes, or to a non-canonical error).
        let mut chars: Vec<char> = sealed.chars().collect();
        let at = chars.len() - 8;
        chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        let flipped: String = chars.into_iter().collect();
        for (tenant, field, value) in [
            (TENANT, "url.password", flipped.as_str()),
            (TENANT, "headers.X", sealed.as_str()),
            (
                TenantId(Uuid::from_u128(8)),
                "url.password",
                sealed.as_str(),
            ),
        ] {
            assert!(matches!(
                keyring.open(tenant, field, value),
                Err(OpenError::Tampered { .. })
            ));
        }
        let id = keyring.current_id().unwrap();
        for bad in [
            "enc:v1:".to_owned(),
            format!("enc:v1:{id}"),
            format!("enc:v1:{id}:!!!"),
            format!("enc:v1:{id}:AAAA"),
        ] {
            assert!(
                matches!(
                    keyring.open(TENANT, "f", &bad),
                    Err(OpenError::Malformed { .. } | OpenError::UnknownKey { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_keys_are_refused_and_debug_shows_ids_only() {
        for (current, old, var) in [
            (Some("not base64!".to_owned()), None, KEY_VAR),
            (Some("c2hvcnQ=".to_owned()), None, KEY_VAR),
            (None, Some(generate_key()), KEY_VAR),
            (
                Some(generate_key()),
                Some(format!("{},c2hvcnQ=", generate_key())),
                OLD_KEYS_VAR,
            ),
        ] {
            let err = Keyring::from_settings(current.as_deref(), old.as_deref()).unwrap_err();
            assert_eq!(err.var, var, "{}", err.message);
        }
        let key = generate_key();
        let keyring = ring(&[&key]);
        let shown = format!("{keyring:?}");
        assert!(!shown.contains(&key) && shown.contains(keyring.current_id().unwrap()));
        assert!(
            !Keyring::from_settings(None, Some(" "))
                .unwrap()
                .is_enabled()
        );
        assert!(is_sealed(&keyring.seal(TENANT, "f", "x")));
        assert_eq!(Keyring::disabled().seal(TENANT, "f", "x"), "x");
    }
}
