//! A model of the metadata store's lifecycle, and a driver that applies the
//! same operations to the model and to a real `PoolStorage`, checking after
//! each step that the two agree. Used by the deterministic property test in
//! `cargo test` and by the `cargo fuzz` target under `fuzz/`.
#![allow(dead_code)]

use std::collections::BTreeMap;

use openmls_keypackage_pool::{Error, KeyPackageStatus, PoolStorage};
use KeyPackageStatus::*;

/// How many distinct refs the operations touch: few, so that they collide.
pub const REFS: u8 = 3;

/// One operation on the store.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Create { r: u8, not_after: i64 },
    Move { r: u8, to: KeyPackageStatus },
    Reserve { r: u8, expires_at: i64 },
    Spend { r: u8 },
    Delete { r: u8 },
    ExpiredAt { now: i64 },
}

/// Decodes operations from raw bytes, three per operation, so that a fuzzer
/// and a property test can share one input format.
pub fn ops_from_bytes(data: &[u8]) -> Vec<Op> {
    data.chunks_exact(3)
        .map(|c| {
            let r = c[1] % REFS;
            let small = i64::from(c[2]) - 128;
            match c[0] % 6 {
                0 => Op::Create {
                    r,
                    not_after: small,
                },
                1 => Op::Move {
                    r,
                    to: KeyPackageStatus::ALL[usize::from(c[2]) % KeyPackageStatus::ALL.len()],
                },
                2 => Op::Reserve {
                    r,
                    expires_at: small,
                },
                3 => Op::Spend { r },
                4 => Op::Delete { r },
                _ => Op::ExpiredAt { now: small },
            }
        })
        .collect()
}

fn ref_bytes(r: u8) -> Vec<u8> {
    vec![r + 1; 32]
}

/// What the model keeps per ref.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    status: KeyPackageStatus,
    not_after: i64,
    reserved_until: Option<i64>,
}

/// The lifecycle as the crate documents it, written independently of the
/// crate's own table.
fn allowed(from: KeyPackageStatus, to: KeyPackageStatus) -> bool {
    matches!(
        (from, to),
        (Created, Uploaded | Failed | Expired)
            | (Uploaded, Available | Reserved | Spent | Failed | Expired)
            | (Available, Reserved | Spent | Expired)
            | (Reserved, Spent | Available | Expired)
            | (Failed, Created | Expired)
    )
}

/// The outcome the model expects, by kind.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    NotFound,
    Duplicate,
    InvalidTransition,
}

fn outcome_of(result: Result<(), Error>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok,
        Err(Error::NotFound { .. }) => Outcome::NotFound,
        Err(Error::DuplicateRef { .. }) => Outcome::Duplicate,
        Err(Error::InvalidTransition { .. }) => Outcome::InvalidTransition,
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[derive(Debug, Default)]
pub struct Model {
    rows: BTreeMap<u8, Row>,
}

impl Model {
    /// Applies a status move to the model; returns the expected outcome.
    fn apply_move(&mut self, r: u8, to: KeyPackageStatus, reserved_until: Option<i64>) -> Outcome {
        match self.rows.get_mut(&r) {
            None => Outcome::NotFound,
            Some(row) if row.status == to => Outcome::Ok,
            Some(row) if allowed(row.status, to) => {
                row.status = to;
                if to == Reserved {
                    row.reserved_until = reserved_until;
                }
                Outcome::Ok
            }
            Some(_) => Outcome::InvalidTransition,
        }
    }

    /// Applies `op` to both, then checks they agree on every ref and count.
    pub fn step(&mut self, storage: &PoolStorage, op: Op) {
        let (expected, actual) = match op {
            Op::Create { r, not_after } => {
                let expected = match self.rows.entry(r) {
                    std::collections::btree_map::Entry::Occupied(_) => Outcome::Duplicate,
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(Row {
                            status: Created,
                            not_after,
                            reserved_until: None,
                        });
                        Outcome::Ok
                    }
                };
                (
                    expected,
                    storage.create_pool_metadata(&ref_bytes(r), not_after),
                )
            }
            Op::Move { r, to } => (
                self.apply_move(r, to, None),
                storage.update_pool_metadata_status(&ref_bytes(r), to),
            ),
            Op::Reserve { r, expires_at } => (
                self.apply_move(r, Reserved, Some(expires_at)),
                storage.update_reservation_info(&ref_bytes(r), "res", "peer", expires_at),
            ),
            Op::Spend { r } => (
                self.apply_move(r, Spent, None),
                storage.mark_spent(&ref_bytes(r), "peer", b"group"),
            ),
            Op::Delete { r } => (
                if self.rows.remove(&r).is_some() {
                    Outcome::Ok
                } else {
                    Outcome::NotFound
                },
                storage.delete_pool_metadata(&ref_bytes(r)),
            ),
            Op::ExpiredAt { now } => {
                let returned = storage.get_expired_refs(now).unwrap();
                // Soonest expired first.
                let not_afters: Vec<i64> = returned
                    .iter()
                    .map(|r| self.rows[&(r[0] - 1)].not_after)
                    .collect();
                assert!(not_afters.windows(2).all(|w| w[0] <= w[1]), "{op:?}");
                let mut actual = returned;
                actual.sort();
                let expected: Vec<Vec<u8>> = self
                    .rows
                    .iter()
                    .filter(|(_, row)| row.not_after < now)
                    .map(|(r, _)| ref_bytes(*r))
                    .collect();
                assert_eq!(actual, expected, "{op:?}");
                (Outcome::Ok, Ok(()))
            }
        };
        assert_eq!(outcome_of(actual), expected, "{op:?}");
        self.check(storage);
    }

    /// The store holds exactly what the model holds.
    fn check(&self, storage: &PoolStorage) {
        for r in 0..REFS {
            let row = storage.get_metadata(&ref_bytes(r)).unwrap();
            match (self.rows.get(&r), row) {
                (None, None) => {}
                (Some(model), Some(real)) => {
                    assert_eq!(real.status, model.status, "ref {r}");
                    assert_eq!(real.not_after, model.not_after, "ref {r}");
                    if model.status == Reserved {
                        assert_eq!(real.reservation_expires_at, model.reserved_until, "ref {r}");
                    }
                }
                (model, real) => panic!("ref {r}: model {model:?}, store {real:?}"),
            }
        }
        for status in KeyPackageStatus::ALL {
            let expected = self
                .rows
                .values()
                .filter(|row| row.status == status)
                .count();
            assert_eq!(
                storage.count_by_status(status).unwrap(),
                expected,
                "{status}"
            );
        }
    }
}

/// Runs a whole byte string of operations against a fresh store.
pub fn run(storage: &PoolStorage, data: &[u8]) {
    let mut model = Model::default();
    for op in ops_from_bytes(data) {
        model.step(storage, op);
    }
}
