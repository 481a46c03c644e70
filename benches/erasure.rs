//! What erasing overwritten secrets costs: a member on a database file
//! decrypts 1,000 application messages in one epoch (each one rewrites its
//! stored secret tree in a commit of its own), under each erasure policy.
//!
//! `cargo bench --bench erasure`. `examples/bench_report.rs --erasure-only`
//! measures the same with the in-memory floor, `openmls_sqlite_storage` and
//! the cost of one durable commit beside them.

mod scenarios;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use scenarios::{messages::Receiver, Env};

const MESSAGES: usize = 1_000;

fn policies(c: &mut Criterion) {
    let env = Env::new();
    let mut group = c.benchmark_group("process_1000_messages");
    group.sample_size(10);
    group.throughput(Throughput::Elements(MESSAGES as u64));
    for receiver in [
        Receiver::PoolDeletions,
        Receiver::PoolDefault,
        Receiver::PoolEveryCommit,
    ] {
        group.bench_function(BenchmarkId::new(receiver.id(), MESSAGES), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| receiver.run(&env, MESSAGES))
                    .sum::<Duration>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, policies);
criterion_main!(benches);
