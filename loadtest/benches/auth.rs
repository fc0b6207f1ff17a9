//! API-key authentication: the cached path against an Argon2id verify.
//!
//! `freight_api::auth::Authenticator` is public, but filling its cache takes a database
//! (the first verify reads the key's row), so this benchmarks what it runs, using
//! Freight's own functions from `freight_core::domain::api_key` (so the Argon2 parameters
//! are the project's):
//!
//! - `cached_path`: what `Authenticator::authenticate` does on a cache hit — parse the
//!   key, SHA-256 of the secret (`ApiKey::secret_digest`), a `moka::future::Cache` lookup
//!   by public id, and a constant-time compare of the digests;
//! - `sha256_ct_compare`: the digest and compare alone;
//! - `argon2id_verify`: `ApiKey::verify_secret` against a PHC hash made by
//!   `ApiKey::hash_secret` (what a cache miss costs, besides its database read).
//!
//! Run: `cargo bench -p freight-loadtest --bench auth`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use freight_core::domain::api_key::ApiKey;
use moka::future::Cache;
use subtle::ConstantTimeEq;

fn auth(c: &mut Criterion) {
    let key = ApiKey::generate();
    let raw = key.expose();
    let phc = key.hash_secret();
    let digest = key.secret_digest();

    let cache: Cache<String, [u8; 32]> = Cache::builder().max_capacity(10_000).build();
    futures::executor::block_on(cache.insert(key.public_id().to_owned(), digest));
    // A few thousand other keys, as a busy replica would hold.
    for _ in 0..5_000 {
        let other = ApiKey::generate();
        futures::executor::block_on(
            cache.insert(other.public_id().to_owned(), other.secret_digest()),
        );
    }

    let mut group = c.benchmark_group("api_key_auth");
    group.bench_function("cached_path", |b| {
        b.iter(|| {
            let presented = ApiKey::parse(black_box(&raw)).expect("a valid key");
            let d = presented.secret_digest();
            let hit =
                futures::executor::block_on(cache.get(presented.public_id())).expect("cached");
            assert!(bool::from(hit.ct_eq(&d)));
        })
    });
    group.bench_function("sha256_ct_compare", |b| {
        b.iter(|| bool::from(black_box(&key).secret_digest().ct_eq(black_box(&digest))))
    });
    group.sample_size(20);
    group.bench_function("argon2id_verify", |b| {
        b.iter(|| assert!(black_box(&key).verify_secret(black_box(&phc))))
    });
    group.finish();
}

criterion_group!(benches, auth);
criterion_main!(benches);
