//! The metadata store agrees with a model of the lifecycle after every step
//! of random operation sequences. Deterministic: the same cases every run.
//! `fuzz/` drives the same model with `cargo fuzz` for longer searches.

mod common;

use common::lifecycle_model::{run, Model, Op};
use openmls_keypackage_pool::{KeyPackageStatus, PoolStorage};
use proptest::{
    collection::vec,
    prelude::any,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};

#[test]
fn random_operation_sequences_agree_with_the_model() {
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 64,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    runner
        .run(&vec(any::<u8>(), 0..300), |bytes| {
            let storage = PoolStorage::open_in_memory().unwrap();
            run(&storage, &bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_model_catches_a_store_that_disagrees() {
    // A row changed behind the model's back must make the next step fail,
    // or the property above could not fail either.
    let storage = PoolStorage::open_in_memory().unwrap();
    let mut model = Model::default();
    model.step(&storage, Op::Create { r: 0, not_after: 5 });
    storage
        .update_pool_metadata_status(&[1; 32], KeyPackageStatus::Uploaded)
        .unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.step(&storage, Op::ExpiredAt { now: 0 })
    }));
    assert!(caught.is_err());
}
