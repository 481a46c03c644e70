//! Criterion benchmarks of bulk KeyPackage creation: the in-memory floor,
//! `openmls_sqlite_storage` the usual way, the two-store design this crate
//! replaces, this crate's hook, `generate` and `generate_parallel`; and
//! `generate`'s cost per KeyPackage by batch size. Built with
//! `--features libcrux,draft-ietf-mls-pq-ciphersuites`, the X-Wing scenarios
//! on `openmls_libcrux_crypto` too.
//!
//! `cargo bench --bench keypackage_creation`. For a table of the same
//! comparisons: `cargo run --release --example bench_report`.

mod scenarios;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use scenarios::{Env, Scenario};

/// KeyPackages per measured run in the scenario comparison.
const N: usize = 200;

fn scenarios(c: &mut Criterion) {
    let env = Env::new();
    let mut group = c.benchmark_group("create_keypackages");
    group.sample_size(10);
    group.throughput(Throughput::Elements(N as u64));
    for scenario in Scenario::ALL {
        group.bench_function(BenchmarkId::new(scenario.id(), N), |b| {
            // Each iteration gets a fresh database file; only the building
            // and storing is timed.
            b.iter_custom(|iters| (0..iters).map(|_| scenario.run(&env, N)).sum::<Duration>())
        });
    }
    #[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
    for scenario in scenarios::x_wing::XWingScenario::ALL {
        group.bench_function(BenchmarkId::new(scenario.id(), N), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| scenario.run(&env, N)).sum::<Duration>())
        });
    }
    group.finish();
}

fn batch_sizes(c: &mut Criterion) {
    let env = Env::new();
    let mut group = c.benchmark_group("generate_by_batch_size");
    group.sample_size(10);
    for n in [100usize, 1_000, 10_000] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| Scenario::Generate.run(&env, n))
                    .sum::<Duration>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, scenarios, batch_sizes);
criterion_main!(benches);
