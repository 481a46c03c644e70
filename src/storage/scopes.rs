//! Listing the pool scopes a database holds, and removing a scope or a
//! whole signature key.

use super::PoolStorage;
use crate::{
    codec::PoolCodec,
    error::Result,
    metadata::PoolScope,
    scope::{self, ScopeSummary},
    withdrawal::WithdrawalReason,
};

impl<C: PoolCodec> PoolStorage<C> {
    /// Every pool scope present in the database (every signature key,
    /// ciphersuite and credential with KeyPackages or pending withdrawals),
    /// with its counts at `now` (Unix seconds), in one statement.
    ///
    /// Withdrawals recorded before the database tracked credentials list
    /// under a scope with an empty credential.
    ///
    /// ```
    /// use openmls::prelude::*;
    /// use openmls_basic_credential::SignatureKeyPair;
    /// use openmls_keypackage_pool::{KeyPackagePool, PoolConfig, PoolProvider, PoolScope};
    ///
    /// let provider = PoolProvider::open_in_memory()?;
    /// let config = PoolConfig::default();
    /// let signer = SignatureKeyPair::new(config.ciphersuite.signature_algorithm())?;
    /// let credential = CredentialWithKey {
    ///     credential: BasicCredential::new(b"hal".to_vec()).into(),
    ///     signature_key: signer.public().into(),
    /// };
    /// let scope = PoolScope::new(&credential, config.ciphersuite);
    /// KeyPackagePool::new(&provider, &signer, credential, config)?.generate(3)?;
    ///
    /// let scopes = provider.storage().scopes(1_700_000_000)?;
    /// assert_eq!(scopes.len(), 1);
    /// assert_eq!(scopes[0].scope, scope);
    /// assert_eq!((scopes[0].held, scopes[0].pending, scopes[0].usable), (3, 3, 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn scopes(&self, now: i64) -> Result<Vec<ScopeSummary>> {
        scope::list(&self.connection(), now)
    }

    /// Takes every KeyPackage of `scope` (its signature key, ciphersuite and
    /// credential) out of service in one transaction:
    /// bundles and rows deleted (with a grace window, one-time KeyPackages a
    /// peer may still invite with keep theirs until it ends), and a
    /// withdrawal recorded for each one a server may hold
    /// ([`WithdrawalReason::ScopeRemoved`]). Returns all their refs.
    pub fn remove_scope(&self, scope: &PoolScope) -> Result<Vec<Vec<u8>>> {
        self.remove_where(
            &scope.signature_key,
            Some(scope),
            WithdrawalReason::ScopeRemoved,
        )
    }

    /// Takes every KeyPackage whose leaf node carries `signature_key`, in
    /// every ciphersuite and under every credential, out of service in one
    /// transaction, as
    /// [`remove_scope`](Self::remove_scope) does
    /// ([`WithdrawalReason::KeyRemoved`]); returns all their refs. For a
    /// signature key that is replaced: its KeyPackages must no longer be
    /// handed out, and the outbox keeps their withdrawals after the key is
    /// gone.
    pub fn remove_signature_key(&self, signature_key: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.remove_where(signature_key, None, WithdrawalReason::KeyRemoved)
    }

    fn remove_where(
        &self,
        signature_key: &[u8],
        scope: Option<&PoolScope>,
        reason: WithdrawalReason,
    ) -> Result<Vec<Vec<u8>>> {
        // The empty key marks rows without a scope; no pool's key is empty.
        if signature_key.is_empty() {
            return Ok(Vec::new());
        }
        self.transaction(|storage| {
            let refs = scope::refs_of(&storage.connection(), signature_key, scope)?;
            for keypackage_ref in &refs {
                storage.take_out_of_service(keypackage_ref, reason)?;
            }
            Ok(refs)
        })
    }
}
