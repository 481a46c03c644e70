//! Handing KeyPackages to the server, and recording what the server said.

use openmls_traits::signatures::Signer;
use tls_codec::Serialize as _;

use super::KeyPackagePool;
use crate::{
    clock::unix_now,
    codec::PoolCodec,
    error::{Error, RefBytes, Result},
    metadata::{self, KeyPackageMetadata},
    provider::PoolCrypto,
    status::KeyPackageStatus,
};

/// A KeyPackage waiting to be uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The raw KeyPackageRef.
    pub keypackage_ref: Vec<u8>,
    /// The TLS-encoded `KeyPackage` (public part only), as a server takes it.
    pub key_package: Vec<u8>,
    /// The end of its lifetime, in Unix seconds.
    pub not_after: i64,
    /// Whether it is a last-resort KeyPackage (servers hand those out only
    /// when no one-time KeyPackage is left).
    pub last_resort: bool,
}

/// A pending KeyPackage that cannot be uploaded: its bundle is missing,
/// does not decode, or cannot be TLS-encoded.
#[derive(Debug)]
pub struct UnreadableKeyPackage {
    /// The raw KeyPackageRef.
    pub keypackage_ref: Vec<u8>,
    /// Why: [`Error::MissingBundle`], [`Error::CorruptBundle`] or
    /// [`Error::KeyPackageEncode`], each naming the ref.
    pub error: Error,
}

/// What [`KeyPackagePool::pending_upload`] found: the KeyPackages ready to
/// upload, and those whose stored bundle could not be read.
#[derive(Debug, Default)]
pub struct PendingUploads {
    /// Ready to send, oldest first.
    pub ready: Vec<PendingUpload>,
    /// Could not be read. They stay `created`, so they count as pending
    /// (and in [`PoolAction::Upload`](crate::PoolAction::Upload)) until they
    /// are removed: remove each with
    /// [`PoolStorage::remove_key_package`](crate::PoolStorage::remove_key_package),
    /// which works for a corrupt bundle too (where
    /// [`PoolStorage::repair`](crate::PoolStorage::repair) refuses to act).
    pub unreadable: Vec<UnreadableKeyPackage>,
}

impl PendingUploads {
    /// The refs of the ready KeyPackages, for
    /// [`mark_uploaded`](KeyPackagePool::mark_uploaded) once the server has
    /// them.
    pub fn ready_refs(&self) -> Vec<Vec<u8>> {
        self.ready
            .iter()
            .map(|p| p.keypackage_ref.clone())
            .collect()
    }
}

impl<S: Signer, C: PoolCodec, P: PoolCrypto> KeyPackagePool<'_, S, C, P> {
    /// The unexpired `created` KeyPackages (last-resort ones included),
    /// oldest first, TLS-encoded for the server.
    ///
    /// Expired ones are left out: they must never be uploaded. A KeyPackage
    /// whose bundle is missing, corrupt or cannot be encoded is listed in
    /// [`unreadable`](PendingUploads::unreadable) with its error, and the
    /// others are still returned. Any other failure (the database busy, an
    /// I/O error) fails the call: it says nothing about one KeyPackage.
    ///
    /// Each KeyPackage it returns ready is noted as handed out: an upload
    /// may reach the server before the application records it, so from
    /// then on, if the KeyPackage leaves service, its withdrawal is recorded
    /// (see [`PoolStorage::pending_withdrawals`](crate::PoolStorage::pending_withdrawals)).
    /// Rows and bundles are read, and the notes written, in one
    /// transaction, so a KeyPackage deleted meanwhile by another connection
    /// is either listed whole or not at all.
    pub fn pending_upload(&self) -> Result<PendingUploads> {
        self.provider.storage().transaction(|storage| {
            let conn = &*storage.connection();
            let now = unix_now()?;
            let mut pending = PendingUploads::default();
            for row in metadata::uploadable(conn, &self.scope, now)? {
                match self.encode_for_upload(&row) {
                    Ok(key_package) => {
                        metadata::mark_offered(conn, &row.keypackage_ref, now)?;
                        pending.ready.push(PendingUpload {
                            keypackage_ref: row.keypackage_ref,
                            key_package,
                            not_after: row.not_after,
                            last_resort: row.last_resort,
                        });
                    }
                    Err(
                        error @ (Error::CorruptBundle { .. }
                        | Error::MissingBundle { .. }
                        | Error::KeyPackageEncode { .. }),
                    ) => pending.unreadable.push(UnreadableKeyPackage {
                        keypackage_ref: row.keypackage_ref,
                        error,
                    }),
                    Err(other) => return Err(other),
                }
            }
            Ok(pending)
        })
    }

    /// The TLS encoding of the KeyPackage in `row`'s stored bundle.
    fn encode_for_upload(&self, row: &KeyPackageMetadata) -> Result<Vec<u8>> {
        let keypackage_ref = &row.keypackage_ref;
        let bundle = self
            .provider
            .storage()
            .key_package_bundle(keypackage_ref)?
            .ok_or_else(|| Error::MissingBundle {
                keypackage_ref: RefBytes::of(keypackage_ref),
            })?;
        bundle
            .key_package()
            .tls_serialize_detached()
            .map_err(|e| Error::KeyPackageEncode {
                keypackage_ref: RefBytes::of(keypackage_ref),
                source: e,
            })
    }

    /// Marks KeyPackages `uploaded`, all or none.
    pub fn mark_uploaded<R: AsRef<[u8]>>(&self, refs: &[R]) -> Result<()> {
        self.move_all(refs, KeyPackageStatus::Uploaded)
    }

    /// Marks uploaded KeyPackages `available` (the server confirmed them as
    /// published and claimable), all or none. Servers without that step can
    /// skip it: `uploaded` ones may be reserved or spent directly.
    pub fn mark_available<R: AsRef<[u8]>>(&self, refs: &[R]) -> Result<()> {
        self.move_all(refs, KeyPackageStatus::Available)
    }

    /// Marks KeyPackages `failed` (their upload did not go through), all or
    /// none. They keep their keys and count against the hard cap;
    /// [`replenish`](Self::replenish) and
    /// [`ensure_last_resort`](Self::ensure_last_resort) retry them before
    /// building new ones.
    pub fn mark_failed<R: AsRef<[u8]>>(&self, refs: &[R]) -> Result<()> {
        self.move_all(refs, KeyPackageStatus::Failed)
    }

    fn move_all<R: AsRef<[u8]>>(&self, refs: &[R], to: KeyPackageStatus) -> Result<()> {
        self.provider.storage().transaction(|storage| {
            let now = unix_now()?;
            refs.iter().try_for_each(|r| {
                metadata::transition_in_scope(
                    &storage.connection(),
                    &self.scope,
                    r.as_ref(),
                    to,
                    now,
                )
            })
        })
    }
}
