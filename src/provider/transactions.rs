//! One OpenMLS operation, one commit: [`PoolProvider::transaction`] and
//! [`PoolProvider::group_transaction`], and closing the provider.
//!
//! OpenMLS has no transactions of its own: it writes each entity through a
//! separate storage call, and through [`PoolStorage`](crate::PoolStorage)
//! each call outside a transaction is a commit of its own (and a sync to
//! disk). Joining from a Welcome is about a dozen commits, the first of
//! which deletes the KeyPackage; merging a commit is about fifteen, which
//! write the tree, the secrets and the epoch one by one. A crash, a kill or
//! an error between two of them leaves no group and no KeyPackage, or a
//! group whose tree is at one epoch and whose secrets are at another. Inside
//! one of these transactions the whole operation is one commit.

use std::panic::{self, AssertUnwindSafe};

use openmls::group::MlsGroup;

use super::{PoolCrypto, PoolProvider};
use crate::{
    codec::PoolCodec,
    error::{Error, RefBytes, Result},
};

impl<C: PoolCodec, P: PoolCrypto> PoolProvider<C, P> {
    /// Runs `f` with this provider in one transaction: everything written
    /// inside (OpenMLS's entities, the pool's rows and withdrawals, the
    /// application's own rows written through
    /// [`PoolStorage::connection`](crate::PoolStorage::connection)) lands in
    /// one commit, with one sync to disk; an `Err` or a panic rolls all of
    /// it back (the panic then goes on). Nested calls are savepoints.
    ///
    /// The transaction belongs to the calling thread: other threads' calls
    /// on this provider wait until it ends. Keep network I/O out of it:
    /// build a commit in one transaction, send it, and merge it in another
    /// once the delivery service has accepted it.
    ///
    /// After a rollback, an `MlsGroup` that `f` changed is ahead of the
    /// store; [`group_transaction`](Self::group_transaction) reloads it.
    ///
    /// Joining from a Welcome: the KeyPackage's deletion and the new group
    /// are one commit, so a join that fails (or a crash before it ends)
    /// keeps the KeyPackage, and the same Welcome joins later.
    ///
    /// ```
    /// use openmls::prelude::{tls_codec::*, *};
    /// use openmls_basic_credential::SignatureKeyPair;
    /// use openmls_keypackage_pool::PoolProvider;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let suite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
    /// let member = |name: &str| -> Result<_, Box<dyn std::error::Error>> {
    ///     let provider = PoolProvider::open(dir.path().join(format!("{name}.db")))?;
    ///     let signer = SignatureKeyPair::new(suite.signature_algorithm())?;
    ///     let credential = CredentialWithKey {
    ///         credential: BasicCredential::new(name.into()).into(),
    ///         signature_key: signer.public().into(),
    ///     };
    ///     Ok((provider, signer, credential))
    /// };
    /// let (alice, alice_signer, alice_credential) = member("alice")?;
    /// let (bob, bob_signer, bob_credential) = member("bob")?;
    /// let bob_key_package =
    ///     KeyPackage::builder().build(suite, &bob, &bob_signer, bob_credential)?;
    ///
    /// // Alice creates a group, and adds Bob once her commit is accepted.
    /// let config = MlsGroupCreateConfig::builder()
    ///     .ciphersuite(suite)
    ///     .use_ratchet_tree_extension(true)
    ///     .build();
    /// // OpenMLS's error types do not convert from this crate's `Error`;
    /// // a boxed error (or the application's own) takes both.
    /// type BoxError = Box<dyn std::error::Error>;
    /// let mut group = alice.transaction(|alice| -> Result<_, BoxError> {
    ///     Ok(MlsGroup::new(alice, &alice_signer, &config, alice_credential)?)
    /// })?;
    /// let (_commit, welcome, _) =
    ///     alice.group_transaction(&mut group, |group, alice| -> Result<_, BoxError> {
    ///         let bob = bob_key_package.key_package().clone();
    ///         Ok(group.add_members(alice, &alice_signer, &[bob])?)
    ///     })?;
    /// // ... the delivery service accepts the commit ...
    /// alice.group_transaction(&mut group, |group, alice| -> Result<_, BoxError> {
    ///     Ok(group.merge_pending_commit(alice)?)
    /// })?;
    ///
    /// // Bob joins: the KeyPackage's deletion and the group are one commit.
    /// let welcome = MlsMessageIn::tls_deserialize_exact(welcome.tls_serialize_detached()?)?;
    /// let MlsMessageBodyIn::Welcome(welcome) = welcome.extract() else { unreachable!() };
    /// let join_config = MlsGroupJoinConfig::builder().use_ratchet_tree_extension(true).build();
    /// let bob_group = bob.transaction(|bob| -> Result<_, BoxError> {
    ///     let staged = StagedWelcome::new_from_welcome(bob, &join_config, welcome, None)?;
    ///     Ok(staged.into_group(bob)?)
    /// })?;
    /// assert_eq!(bob_group.epoch(), group.epoch());
    /// # Ok(())
    /// # }
    /// ```
    pub fn transaction<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Self) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.storage.transaction(|_| f(self))
    }

    /// [`transaction`](Self::transaction) for an operation on an existing
    /// group, which OpenMLS keeps in memory and writes through: after a
    /// rollback (an `Err` from `f`, or a panic) `group` is loaded again from
    /// the store as the rollback left it, so the group in memory is never
    /// ahead of the disk and a redelivered message is processed again.
    ///
    /// If that reload fails, the result is [`Error::GroupReload`] (in place
    /// of `f`'s error) and `group` must not be used: load it with
    /// `MlsGroup::load`. After a panic the reload is attempted and the panic
    /// goes on.
    ///
    /// Nested in a [`transaction`](Self::transaction) it is a savepoint: a
    /// backlog of messages processed in one `transaction`, with a
    /// `group_transaction` each, is one commit, and a message that fails
    /// rolls back alone, with its group reloaded. If the outer transaction
    /// itself then rolls back, the groups changed inside it are ahead of
    /// the store: load them again.
    ///
    /// ```
    /// # use openmls::prelude::*;
    /// # use openmls_basic_credential::SignatureKeyPair;
    /// # use openmls_keypackage_pool::PoolProvider;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let alice = PoolProvider::open(dir.path().join("alice.db"))?;
    /// # let suite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
    /// # let signer = SignatureKeyPair::new(suite.signature_algorithm())?;
    /// # let credential = CredentialWithKey {
    /// #     credential: BasicCredential::new(b"alice".to_vec()).into(),
    /// #     signature_key: signer.public().into(),
    /// # };
    /// # let config = MlsGroupCreateConfig::builder().ciphersuite(suite).build();
    /// type BoxError = Box<dyn std::error::Error>;
    /// let mut group = alice.transaction(|alice| -> Result<_, BoxError> {
    ///     Ok(MlsGroup::new(alice, &signer, &config, credential)?)
    /// })?;
    ///
    /// // An update merged, then the application fails to record it: the
    /// // merge is rolled back, and the group in memory with it.
    /// let failed: Result<(), BoxError> =
    ///     alice.group_transaction(&mut group, |group, alice| {
    ///         group.self_update(alice, &signer, LeafNodeParameters::default())?;
    ///         group.merge_pending_commit(alice)?;
    ///         assert_eq!(group.epoch().as_u64(), 1);
    ///         Err("the application's own write failed".into())
    ///     });
    /// assert!(failed.is_err());
    /// assert_eq!(group.epoch().as_u64(), 0);
    /// let stored = MlsGroup::load(alice.storage(), group.group_id())?.expect("stored");
    /// assert_eq!(stored.epoch(), group.epoch());
    /// # Ok(())
    /// # }
    /// ```
    pub fn group_transaction<T, E: From<Error>>(
        &self,
        group: &mut MlsGroup,
        f: impl FnOnce(&mut MlsGroup, &Self) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            self.transaction(|provider| f(&mut *group, provider))
        }));
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                self.reload(group)?;
                Err(e)
            }
            Err(payload) => {
                // The panic matters more than a failed reload, which leaves
                // the group as the panic did.
                let _ = self.reload(group);
                panic::resume_unwind(payload)
            }
        }
    }

    /// Replaces `group` with the group as the store holds it.
    fn reload(&self, group: &mut MlsGroup) -> Result<()> {
        let group_id = group.group_id().clone();
        let failed = |reason: String| Error::GroupReload {
            group_id: RefBytes::of(group_id.as_slice()),
            reason,
        };
        match MlsGroup::load(&self.storage, &group_id) {
            Ok(Some(stored)) => {
                *group = stored;
                Ok(())
            }
            Ok(None) => Err(failed("the store holds no such group".into())),
            Err(e) => Err(failed(e.to_string())),
        }
    }

    /// Finishes what erasure is pending, closes the storage and releases
    /// its file; see [`PoolStorage::close`](crate::PoolStorage::close).
    pub fn close(self) -> Result<()> {
        self.storage.close()
    }
}
