//! What a pool needs: the one rule that decides it ([`Plan`]), and the
//! [`PoolHealth`] report with the actions that follow from it.

use openmls_traits::signatures::Signer;

use super::{KeyPackagePool, PoolConfig};
use crate::{
    codec::PoolCodec,
    error::Result,
    metadata::{self, LastResortCounts, OneTimeCounts},
    provider::PoolCrypto,
    status::KeyPackageStatus,
    withdrawal,
};

/// Something a client should do to its pool.
///
/// [`PoolHealth::actions`] lists them in the order to carry them out:
/// removing what must not be advertised, then building, then uploading.
/// More may be added: match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolAction {
    /// Nothing to do: the pool is healthy.
    Nothing,
    /// Retire this many KeyPackages of the pool's signature key and
    /// ciphersuite that carry another credential, such as the certificate
    /// it renewed ([`KeyPackagePool::retire_stale_credentials`]): a peer
    /// inviting with one would present the old credential, and they take
    /// room under the hard cap.
    RetireStaleCredential(usize),
    /// Delete this many expired KeyPackages ([`KeyPackagePool::prune_expired`]).
    Prune(usize),
    /// Ask the server to stop handing out this many KeyPackages whose keys
    /// are gone or going ([`KeyPackagePool::pending_withdrawals`], then
    /// [`PoolStorage::confirm_withdrawn`](crate::PoolStorage::confirm_withdrawn)).
    /// Pruning adds the pruned ones a server may hold.
    Withdraw(usize),
    /// There is no valid last-resort KeyPackage
    /// ([`KeyPackagePool::ensure_last_resort`]).
    CreateLastResort,
    /// Make this many one-time KeyPackages pending upload
    /// ([`KeyPackagePool::replenish`]): failed ones retried first, then new
    /// ones built.
    Replenish(usize),
    /// The hard cap keeps this many KeyPackages the pool needs from being
    /// built: the KeyPackages on disk (counting `failed`, `spent` and
    /// expired-but-unpruned ones) leave no room. Prune, remove KeyPackages
    /// the server no longer needs, or raise the cap; replacing KeyPackages
    /// before they expire needs a cap of about twice the target.
    CapReached(usize),
    /// The last-resort KeyPackage expires within the horizon and has no
    /// replacement yet ([`KeyPackagePool::ensure_last_resort`]).
    ReplaceLastResort,
    /// Upload this many KeyPackages, last-resort ones included
    /// ([`KeyPackagePool::pending_upload`], then
    /// [`mark_uploaded`](KeyPackagePool::mark_uploaded)).
    Upload(usize),
}

/// A snapshot of the pool, read in one read transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHealth {
    counts: [usize; KeyPackageStatus::ALL.len()],
    /// Unexpired one-time KeyPackages waiting for upload (`created`).
    pub pending_upload: usize,
    /// Unexpired one-time KeyPackages a server can hand out (uploaded or
    /// available).
    pub usable: usize,
    /// Unexpired live one-time KeyPackages (created, uploaded, available or
    /// reserved).
    pub live: usize,
    /// One-time KeyPackages whose private keys are on disk, whatever their
    /// status or expiry, those of the pool's signature key and ciphersuite
    /// under another credential included: the figure the hard cap bounds.
    pub held: usize,
    /// KeyPackages (last-resort ones included) of the pool's signature key
    /// and ciphersuite under another credential, not yet retired: never
    /// counted, uploaded or handed out by this pool
    /// ([`KeyPackagePool::retire_stale_credentials`]). A row whose credential
    /// could not be read from its bundle (a bundle damaged before the
    /// credential was recorded, which `verify` reports) is stale for every
    /// pool of its key.
    pub stale: usize,
    /// Whether the server holds a valid last-resort KeyPackage (uploaded,
    /// available or reserved, unexpired). One that was built but not yet
    /// uploaded does not count.
    pub has_last_resort: bool,
    /// Whether a valid last-resort KeyPackage was built and waits for its
    /// upload.
    pub last_resort_pending: bool,
    /// Live KeyPackages (last-resort included) whose `not_after` falls within
    /// the configured horizon.
    pub expiring_soon: usize,
    /// The oldest `not_after` among live KeyPackages that have not expired:
    /// when the next one will.
    pub next_expiry: Option<i64>,
    /// Expired KeyPackages [`prune_expired`](KeyPackagePool::prune_expired)
    /// would delete now.
    pub prunable: usize,
    /// Withdrawals of this pool's KeyPackages the server has not yet
    /// confirmed ([`KeyPackagePool::pending_withdrawals`]), retired stale
    /// ones included.
    pub pending_withdrawals: usize,
    /// One-time KeyPackages of the pool's signature key and ciphersuite in
    /// their grace window, under any credential (retired stale ones
    /// included): out of service, keys still on disk until the window ends
    /// (see
    /// [`StorageOptions::spent_key_package_grace`](crate::StorageOptions::spent_key_package_grace)).
    /// Counted in `held`.
    pub in_grace: usize,
    /// Everything the pool needs, in the order to do it; empty when healthy.
    pub actions: Vec<PoolAction>,
    /// The first of `actions`, or [`PoolAction::Nothing`].
    pub recommended: PoolAction,
}

impl PoolHealth {
    /// How many KeyPackages (last-resort and expired ones included) are in
    /// `status`.
    pub fn count(&self, status: KeyPackageStatus) -> usize {
        KeyPackageStatus::ALL
            .iter()
            .position(|s| *s == status)
            .map_or(0, |i| self.counts[i])
    }
}

/// What [`KeyPackagePool::replenish`] does for given counts: the one rule it
/// and [`KeyPackagePool::health`] follow.
///
/// Only KeyPackages still valid at the horizon's end count ("fresh"), so
/// that those about to expire are replaced while they still work. When
/// fewer than `low_watermark` fresh ones are usable, the gap to
/// `target_size` (less the fresh ones already pending) is filled by retrying
/// fresh `failed` ones first, which costs no new keys, then by building new
/// ones, as many as the hard cap leaves room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Plan {
    /// Failed KeyPackages to move back to `created`.
    pub retry: usize,
    /// New KeyPackages to build.
    pub build: usize,
    /// What the pool needs but the hard cap leaves no room for.
    pub short_by: usize,
}

impl Plan {
    pub(super) fn for_counts(config: &PoolConfig, counts: &OneTimeCounts) -> Self {
        if counts.fresh_usable >= config.low_watermark {
            return Self::default();
        }
        let gap = config
            .target_size
            .saturating_sub(counts.fresh_usable.saturating_add(counts.fresh_pending));
        let retry = gap.min(counts.fresh_failed);
        let room = config.hard_cap.saturating_sub(counts.held);
        let build = (gap - retry).min(room);
        Self {
            retry,
            build,
            short_by: gap - retry - build,
        }
    }

    /// How many KeyPackages the plan makes pending upload.
    fn total(self) -> usize {
        self.retry + self.build
    }
}

/// What must leave the pool, or the server, before anything is built.
#[derive(Debug, Clone, Copy, Default)]
struct Removals {
    stale: usize,
    prunable: usize,
    withdrawals: usize,
}

/// The actions for a pool in this state, in the order to carry them out.
fn actions(
    plan: Plan,
    counts: &OneTimeCounts,
    last_resort: &LastResortCounts,
    removals: Removals,
) -> Vec<PoolAction> {
    let Removals {
        stale,
        prunable,
        withdrawals,
    } = removals;
    let mut actions = Vec::new();
    // What the actions before the upload leave pending is uploaded with
    // what already was.
    let mut pending = counts.pending + last_resort.pending;
    if stale > 0 {
        actions.push(PoolAction::RetireStaleCredential(stale));
    }
    if prunable > 0 {
        actions.push(PoolAction::Prune(prunable));
    }
    if withdrawals > 0 {
        actions.push(PoolAction::Withdraw(withdrawals));
    }
    if last_resort.valid == 0 {
        actions.push(PoolAction::CreateLastResort);
        pending += 1;
    }
    if plan.total() > 0 {
        actions.push(PoolAction::Replenish(plan.total()));
        pending += plan.total();
    }
    if plan.short_by > 0 {
        actions.push(PoolAction::CapReached(plan.short_by));
    }
    if last_resort.valid > 0 && last_resort.fresh == 0 {
        actions.push(PoolAction::ReplaceLastResort);
        pending += 1;
    }
    if pending > 0 {
        actions.push(PoolAction::Upload(pending));
    }
    actions
}

impl<S: Signer, C: PoolCodec, P: PoolCrypto> KeyPackagePool<'_, S, C, P> {
    /// Counts, expiry, and what the pool needs, read in one snapshot.
    ///
    /// [`actions`](PoolHealth::actions) lists, in the order to carry them
    /// out: [`RetireStaleCredential`](PoolAction::RetireStaleCredential)
    /// for KeyPackages of the pool's key under another credential;
    /// [`Prune`](PoolAction::Prune) expired KeyPackages (they must not
    /// be advertised); [`Withdraw`](PoolAction::Withdraw) the KeyPackages
    /// the server may hand out although their keys are gone;
    /// [`CreateLastResort`](PoolAction::CreateLastResort)
    /// when none is valid; [`Replenish`](PoolAction::Replenish) with what
    /// [`replenish`](Self::replenish) would make pending (the rule is
    /// [`replenish`](Self::replenish)'s, KeyPackages expiring within the
    /// horizon included); [`CapReached`](PoolAction::CapReached) when the
    /// hard cap keeps it from building all it needs;
    /// [`ReplaceLastResort`](PoolAction::ReplaceLastResort)
    /// when the last-resort one expires within the horizon; and
    /// [`Upload`](PoolAction::Upload) for everything then waiting for the
    /// server. A pool whose KeyPackages are all built but none uploaded is
    /// not healthy: it needs the upload.
    ///
    /// `now` (Unix seconds) decides what has expired and what falls within
    /// the horizon; pass the current time. (At another time it answers what the rule
    /// would call for then, while [`replenish`](Self::replenish) always
    /// acts on the system clock.)
    ///
    /// ```
    /// # use openmls_basic_credential::SignatureKeyPair;
    /// # use openmls::prelude::*;
    /// use openmls_keypackage_pool::{KeyPackagePool, PoolAction, PoolConfig, PoolProvider};
    /// # let provider = PoolProvider::open_in_memory()?;
    /// # let config = PoolConfig { target_size: 4, low_watermark: 2, hard_cap: 8, ..Default::default() };
    /// # let signer = SignatureKeyPair::new(config.ciphersuite.signature_algorithm())?;
    /// # let credential = CredentialWithKey {
    /// #     credential: BasicCredential::new(b"erin".to_vec()).into(),
    /// #     signature_key: signer.public().into(),
    /// # };
    /// let pool = KeyPackagePool::new(&provider, &signer, credential, config)?;
    /// let now = 1_900_000_000;
    /// assert_eq!(
    ///     pool.health(now)?.actions,
    ///     [PoolAction::CreateLastResort, PoolAction::Replenish(4), PoolAction::Upload(5)]
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn health(&self, now: i64) -> Result<PoolHealth> {
        let conn = &*self.provider.storage().connection();
        // One snapshot for the three reads; dropping it rolls back nothing.
        let _snapshot = if conn.is_autocommit() {
            Some(conn.unchecked_transaction()?)
        } else {
            None
        };
        let summary = metadata::summary(conn, &self.scope, now, self.config.horizon_end(now))?;
        let pending_withdrawals = withdrawal::count(conn, &self.scope)?;
        let plan = Plan::for_counts(&self.config, &summary.counts);
        let actions = actions(
            plan,
            &summary.counts,
            &summary.last_resort,
            Removals {
                stale: summary.stale,
                prunable: summary.prunable,
                withdrawals: pending_withdrawals,
            },
        );
        Ok(PoolHealth {
            counts: summary.by_status,
            pending_upload: summary.counts.pending,
            usable: summary.counts.usable,
            live: summary.counts.live,
            held: summary.counts.held,
            stale: summary.stale,
            has_last_resort: summary.last_resort.published > 0,
            last_resort_pending: summary.last_resort.pending > 0,
            expiring_soon: summary.expiring_soon,
            next_expiry: summary.next_expiry,
            prunable: summary.prunable,
            pending_withdrawals,
            in_grace: metadata::in_grace(conn, &self.scope)?,
            recommended: actions.first().copied().unwrap_or(PoolAction::Nothing),
            actions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PoolConfig {
        PoolConfig {
            target_size: 10,
            low_watermark: 4,
            hard_cap: 16,
            ..PoolConfig::default()
        }
    }

    #[test]
    fn a_pool_at_or_above_the_watermark_needs_nothing() {
        let counts = OneTimeCounts {
            fresh_usable: 4,
            held: 40,
            ..Default::default()
        };
        assert_eq!(Plan::for_counts(&config(), &counts), Plan::default());
    }

    #[test]
    fn failed_ones_are_retried_before_new_ones_are_built() {
        let counts = OneTimeCounts {
            fresh_usable: 1,
            fresh_pending: 2,
            fresh_failed: 3,
            held: 6,
            ..Default::default()
        };
        assert_eq!(
            Plan::for_counts(&config(), &counts),
            Plan {
                retry: 3,
                build: 4,
                short_by: 0
            }
        );
    }

    #[test]
    fn the_cap_limits_what_is_built_but_not_what_is_retried() {
        let counts = OneTimeCounts {
            fresh_failed: 5,
            held: 15,
            ..Default::default()
        };
        assert_eq!(
            Plan::for_counts(&config(), &counts),
            Plan {
                retry: 5,
                build: 1,
                short_by: 4
            }
        );
        let far_above = OneTimeCounts {
            held: 100,
            ..Default::default()
        };
        assert_eq!(
            Plan::for_counts(&config(), &far_above),
            Plan {
                retry: 0,
                build: 0,
                short_by: 10
            }
        );
    }
}
