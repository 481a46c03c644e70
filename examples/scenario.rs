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
//! `generate_parallel_2`, `in_memory_two_threads`, and built with
//! `--features libcrux,draft-ietf-mls-pq-ciphersuites` the X-Wing ones:
//! `x_wing_in_memory`, `x_wing_generate`, `x_wing_generate_parallel_2`,
//! `x_wing_in_memory_two_threads`), or a receiver of messages
//! (`message_in_memory`, `message_pool_deletions`, `message_pool_default`,
//! ...: see `benches/scenarios/messages.rs`), the second how many KeyPackages
//! to build or messages to decrypt. The difference between two counts
//! cancels the fixed set-up cost; `message_pool_deletions` runs no background
//! eraser, so its count does not depend on timing.

#[path = "../benches/scenarios/mod.rs"]
mod scenarios;

use std::{process::ExitCode, time::Duration};

use scenarios::{messages::Receiver, Env, Scenario};

/// A scenario of either suite this build knows, or a message receiver.
#[derive(Clone, Copy)]
enum Any {
    Classical(Scenario),
    Message(Receiver),
    #[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
    XWing(scenarios::x_wing::XWingScenario),
}

impl Any {
    fn all() -> Vec<Any> {
        #[allow(unused_mut)]
        let mut all: Vec<Any> = Scenario::ALL.into_iter().map(Any::Classical).collect();
        all.extend(Receiver::ALL.into_iter().map(Any::Message));
        #[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
        all.extend(
            scenarios::x_wing::XWingScenario::ALL
                .into_iter()
                .map(Any::XWing),
        );
        all
    }

    fn id(self) -> &'static str {
        match self {
            Any::Classical(s) => s.id(),
            Any::Message(r) => r.scenario_id(),
            #[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
            Any::XWing(s) => s.id(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Any::Classical(s) => s.name(),
            Any::Message(r) => r.name(),
            #[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
            Any::XWing(s) => s.name(),
        }
    }

    fn run(self, env: &Env, n: usize) -> Duration {
        match self {
            Any::Classical(s) => s.run(env, n),
            Any::Message(r) => r.run(env, n),
            #[cfg(all(feature = "libcrux", feature = "draft-ietf-mls-pq-ciphersuites"))]
            Any::XWing(s) => s.run(env, n),
        }
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let id = args.next().unwrap_or_else(|| "generate".to_owned());
    let all = Any::all();
    let Some(scenario) = all.iter().copied().find(|s| s.id() == id) else {
        let ids: Vec<_> = all.iter().map(|s| s.id()).collect();
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
        "{}: {n} {}, {:.1} µs each",
        scenario.name().trim(),
        if matches!(scenario, Any::Message(_)) {
            "messages"
        } else {
            "KeyPackages"
        },
        took.as_secs_f64() * 1e6 / n.max(1) as f64
    );
    ExitCode::SUCCESS
}
