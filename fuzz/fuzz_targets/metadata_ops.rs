//! Random sequences of metadata operations against a model of the
//! lifecycle; the database must agree with the model after every step.
//!
//! `cargo fuzz run metadata_ops` (from the repository root, with
//! cargo-fuzz installed and a nightly toolchain). The same model runs as a
//! short deterministic property test in `tests/lifecycle_model.rs`.
#![no_main]

#[path = "../../tests/common/lifecycle_model.rs"]
mod lifecycle_model;

use libfuzzer_sys::fuzz_target;
use openmls_keypackage_pool::PoolStorage;

fuzz_target!(|data: &[u8]| {
    let storage = PoolStorage::open_in_memory().expect("in-memory database");
    lifecycle_model::run(&storage, data);
});
