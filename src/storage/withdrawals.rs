//! The withdrawal outbox: KeyPackages the server should stop handing out,
//! kept until the application confirms it has.

use super::PoolStorage;
use crate::{
    clock::unix_now,
    codec::PoolCodec,
    error::Result,
    withdrawal::{self, Withdrawal},
};

impl<C: PoolCodec> PoolStorage<C> {
    /// Every KeyPackage of every scope that a server may still hand out
    /// although its private keys are deleted (or will be, when its grace
    /// window ends), oldest first.
    ///
    /// Each was recorded in the transaction that deleted or retired its
    /// keys, by whichever path did it (pruning, last-resort surplus, removal
    /// of a scope, a signature key or a KeyPackage, a Welcome consuming it),
    /// for every KeyPackage that was uploaded, available, reserved or failed,
    /// or that [`pending_upload`](crate::KeyPackagePool::pending_upload)
    /// had already handed out. They survive crashes, reopening, and the
    /// removal of their scope or signature key, and leave only through
    /// [`confirm_withdrawn`](Self::confirm_withdrawn) or
    /// [`abandon_withdrawals`](Self::abandon_withdrawals).
    ///
    /// The loop an application runs: upload, withdraw, confirm.
    ///
    /// ```
    /// use openmls::prelude::*;
    /// use openmls_basic_credential::SignatureKeyPair;
    /// use openmls_keypackage_pool::{KeyPackagePool, PoolConfig, PoolProvider, WithdrawalReason};
    ///
    /// let provider = PoolProvider::open_in_memory()?;
    /// let config = PoolConfig { target_size: 2, low_watermark: 1, hard_cap: 4, ..Default::default() };
    /// let signer = SignatureKeyPair::new(config.ciphersuite.signature_algorithm())?;
    /// let credential = CredentialWithKey {
    ///     credential: BasicCredential::new(b"jo".to_vec()).into(),
    ///     signature_key: signer.public().into(),
    /// };
    /// let pool = KeyPackagePool::new(&provider, &signer, credential, config)?;
    /// let storage = provider.storage();
    ///
    /// // Upload.
    /// pool.replenish()?;
    /// let pending = pool.pending_upload()?;
    /// // ... send each `pending.ready[i].key_package` to the server, then:
    /// pool.mark_uploaded(&pending.ready_refs())?;
    ///
    /// // A KeyPackage leaves service (here the application removes it;
    /// // pruning, a Welcome or a scope's removal do the same).
    /// let gone = pending.ready[0].keypackage_ref.clone();
    /// storage.remove_key_package(&gone)?;
    ///
    /// // Withdraw: the outbox holds it until the server has dropped it.
    /// let due = storage.pending_withdrawals()?;
    /// assert_eq!(due.len(), 1);
    /// assert_eq!((&due[0].keypackage_ref, due[0].reason), (&gone, WithdrawalReason::Removed));
    /// // ... ask the server to delete it; when the request fails:
    /// storage.withdrawal_failed(&[&gone], "server unreachable")?;
    /// assert_eq!(storage.pending_withdrawals()?[0].attempts, 1);
    ///
    /// // Confirm once it succeeded.
    /// storage.confirm_withdrawn(&[&gone])?;
    /// assert!(storage.pending_withdrawals()?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pending_withdrawals(&self) -> Result<Vec<Withdrawal>> {
        withdrawal::pending(&self.connection(), None)
    }

    /// Removes the withdrawals of `refs` from the outbox: the server has
    /// dropped those KeyPackages. All or none: a ref with no withdrawal is
    /// [`Error::NotFound`](crate::Error::NotFound) naming it, and nothing is
    /// removed.
    pub fn confirm_withdrawn<R: AsRef<[u8]>>(&self, refs: &[R]) -> Result<()> {
        let note = self.commit_note();
        self.transaction(|storage| withdrawal::remove(&storage.connection(), refs))?;
        log::info!("confirmed {} withdrawals{note}", refs.len());
        Ok(())
    }

    /// Counts a failed attempt at withdrawing each of `refs`, with what
    /// went wrong; they stay in the outbox. All or none, as
    /// [`confirm_withdrawn`](Self::confirm_withdrawn).
    pub fn withdrawal_failed<R: AsRef<[u8]>>(&self, refs: &[R], error: &str) -> Result<()> {
        let note = self.commit_note();
        self.transaction(|storage| {
            withdrawal::attempt_failed(&storage.connection(), refs, error, unix_now()?)
        })?;
        log::info!(
            "{} withdrawals failed and stay in the outbox{note}: {error}",
            refs.len()
        );
        Ok(())
    }

    /// Gives up on withdrawing `refs`: they leave the outbox unconfirmed
    /// (the server is gone, or the account was deleted there). All or none,
    /// as [`confirm_withdrawn`](Self::confirm_withdrawn).
    pub fn abandon_withdrawals<R: AsRef<[u8]>>(&self, refs: &[R]) -> Result<()> {
        let note = self.commit_note();
        self.transaction(|storage| withdrawal::remove(&storage.connection(), refs))?;
        log::warn!(
            "abandoned {} withdrawals unconfirmed{note}: a server may still hand those \
             KeyPackages out",
            refs.len()
        );
        Ok(())
    }
}
