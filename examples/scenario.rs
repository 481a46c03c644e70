//! Runs one benchmark scenario once, for a profiler or an instruction count.
//!
//! ```sh
//! cargo build --release --example scenario
//! valgrind --tool=callgrind target/release/examples/scenario generate 600
//! perf stat target/release/examples/scenario generate_parallel_2 3000
//! ```
//!
//! The first argument is a scenario id (`in_memory`, `sqlite_per_commit`,
//! `sqlite_plus_metadata_file`, `hook_per_commit`, `generate`,
//! `generate_parallel_2`), the second how many KeyPackages to build. The
//! difference between two counts cancels the fixed set-up cost.

#[path = "../benches/scenarios/mod.rs"]
mod scenarios;

use std::process::ExitCode;

use scenarios::{Env, Scenario};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let id = args.next().unwrap_or_else(|| "generate".to_owned());
    let Some(scenario) = Scenario::ALL.into_iter().find(|s| s.id() == id) else {
        let ids: Vec<_> = Scenario::ALL.iter().map(|s| s.id()).collect();
        eprintln!("unknown scenario {id:?}; one of {}", ids.join(", "));
        return ExitCode::from(2);
    };
    let n: usize = match args.next().map(|a| a.parse()) {
        None => 1000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("invalid count: {e}");
            return ExitCode::from(2);
        }
    };
    let env = Env::new();
    let took = scenario.run(&env, n);
    println!(
        "{}: {n} KeyPackages, {:.1} µs each",
        scenario.name().trim(),
        took.as_secs_f64() * 1e6 / n.max(1) as f64
    );
    ExitCode::SUCCESS
}
