//! Criterion benchmarks of the pool's queries on a database of a million
//! metadata rows plus ten thousand real, expired KeyPackages.
//!
//! `cargo bench --bench metadata_queries` (the set-up builds the database
//! once, in about ten seconds).

mod scenarios;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use openmls_keypackage_pool::{
    KeyPackagePool, KeyPackageStatus, PoolConfig, PoolProvider, PoolStorage,
};
use scenarios::{large_pool, Env};

const ROWS: usize = 1_000_000;
const EXPIRED: usize = 10_000;

fn queries(c: &mut Criterion) {
    let env = Env::new();
    let template = env.fresh_path("template");
    let (storage, now) = large_pool(&env, &template, ROWS, EXPIRED);
    let provider = PoolProvider::new(storage);
    let pool = scenarios::unbounded_pool(&env, &provider);

    let mut group = c.benchmark_group("queries_1m_rows");
    group.bench_function("count_by_status", |b| {
        b.iter(|| {
            provider
                .storage()
                .count_by_status(KeyPackageStatus::Available)
                .expect("count")
        })
    });
    group.bench_function("health", |b| b.iter(|| pool.health(now).expect("health")));
    group.bench_function("get_expired_refs_10k", |b| {
        b.iter(|| provider.storage().get_expired_refs(now).expect("expired"))
    });
    group.sample_size(10);
    group.bench_function("prune_expired_10k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Every run prunes its own copy of the database.
                let copy = env.fresh_path("prune");
                std::fs::copy(&template, &copy).expect("copy");
                let provider = PoolProvider::new(PoolStorage::open(&copy).expect("open"));
                let pool = KeyPackagePool::new(
                    &provider,
                    &env.signer,
                    env.credential.clone(),
                    PoolConfig::default(),
                )
                .expect("pool");
                let start = Instant::now();
                let pruned = pool.prune_expired(now).expect("prune");
                total += start.elapsed();
                assert_eq!(pruned.len(), EXPIRED);
                drop(provider);
                let _ = std::fs::remove_file(&copy);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, queries);
criterion_main!(benches);
