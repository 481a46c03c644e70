//! The row types of the pool table: what a row holds
//! ([`KeyPackageMetadata`]), what a bundle tells the pool when it enters it
//! ([`PoolEntry`], read in one place), and which pool a row belongs to
//! ([`PoolScope`]).

use std::cell::RefCell;

use openmls::prelude::{
    Ciphersuite, Credential, CredentialWithKey, KeyPackageBundle, KeyPackageRef,
};
use sha2::{Digest, Sha256};

use crate::{
    error::{Error, RefBytes, Result},
    status::KeyPackageStatus,
};

/// Everything the pool knows about one KeyPackage.
///
/// Timestamps are Unix seconds. The private keys are not here: they stay in
/// OpenMLS's own table, and are deleted from it in the same transaction as
/// this row.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyPackageMetadata {
    /// The raw KeyPackageRef ([`KeyPackageRef::as_slice`]), as a server sees it.
    pub keypackage_ref: Vec<u8>,
    /// Where the KeyPackage is in its lifecycle.
    pub status: KeyPackageStatus,
    /// When the row was created.
    pub created_at: i64,
    /// When it was last marked uploaded.
    pub uploaded_at: Option<i64>,
    /// When it was last reserved.
    pub reserved_at: Option<i64>,
    /// When it was marked spent.
    pub spent_at: Option<i64>,
    /// The end of the KeyPackage's lifetime.
    pub not_after: i64,
    /// The server's id for the latest reservation.
    pub reservation_id: Option<String>,
    /// When the latest reservation lapses.
    pub reservation_expires_at: Option<i64>,
    /// Who holds the latest reservation.
    pub reserved_by: Option<String>,
    /// The group the KeyPackage was used to join.
    pub spent_group_id: Option<Vec<u8>>,
    /// Who used it.
    pub spent_by: Option<String>,
    /// Whether it carries the last-resort extension (OpenMLS never deletes
    /// those on join).
    pub last_resort: bool,
    /// The pool it belongs to: its leaf node's signature key and
    /// credential, and its ciphersuite. `None` for rows made by hand without
    /// a bundle, and for rows whose bundle could not be read when the
    /// database first recorded scopes or credentials.
    pub scope: Option<PoolScope>,
    /// Its leaf node's credential type (the u16 code point), when known.
    pub credential_type: Option<u16>,
    /// When [`KeyPackagePool::pending_upload`](crate::KeyPackagePool::pending_upload)
    /// first handed it to the application: from then on a server may hold
    /// it, even before it is marked uploaded.
    pub offered_at: Option<i64>,
    /// The end (Unix seconds) of its grace window, if it left service while
    /// a peer may still invite with it (see
    /// [`StorageOptions::spent_key_package_grace`](crate::StorageOptions::spent_key_package_grace)).
    pub retired_until: Option<i64>,
}

/// What a stored KeyPackageBundle tells the pool: the facts its metadata
/// row is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolEntry {
    /// The raw KeyPackageRef.
    pub keypackage_ref: Vec<u8>,
    /// The end of the KeyPackage's lifetime, in Unix seconds.
    pub not_after: i64,
    /// Whether it carries the last-resort extension.
    pub last_resort: bool,
    /// The ciphersuite's code point (0 when unknown).
    pub ciphersuite: u16,
    /// The leaf node's signature public key (empty when unknown).
    pub signature_key: Vec<u8>,
    /// The leaf node's credential type code point (0 when unknown).
    pub credential_type: u16,
    /// The leaf node's credential fingerprint
    /// ([`PoolScope::credential_fingerprint`]; empty when unknown).
    pub credential: Vec<u8>,
}

impl PoolEntry {
    /// A row for a ref with no bundle to read from (bookkeeping by hand):
    /// no scope, no credential type.
    pub(crate) fn by_hand(keypackage_ref: Vec<u8>, not_after: i64) -> Self {
        Self {
            keypackage_ref,
            not_after,
            last_resort: false,
            ciphersuite: 0,
            signature_key: Vec::new(),
            credential_type: 0,
            credential: Vec::new(),
        }
    }

    /// Reads a bundle's expiry, last-resort flag, scope (credential
    /// included) and credential type;
    /// `keypackage_ref` is the ref OpenMLS stores it under.
    pub(crate) fn from_bundle(keypackage_ref: Vec<u8>, bundle: &KeyPackageBundle) -> Result<Self> {
        let key_package = bundle.key_package();
        let not_after = key_package.life_time().not_after();
        let not_after = i64::try_from(not_after).map_err(|_| Error::TimestampOverflow {
            keypackage_ref: RefBytes::of(&keypackage_ref),
            value: not_after,
        })?;
        let leaf_node = key_package.leaf_node();
        Ok(Self {
            keypackage_ref,
            not_after,
            last_resort: key_package.last_resort(),
            ciphersuite: u16::from(key_package.ciphersuite()),
            signature_key: leaf_node.signature_key().as_slice().to_vec(),
            credential_type: u16::from(leaf_node.credential().credential_type()),
            credential: PoolScope::credential_fingerprint(leaf_node.credential()),
        })
    }

    /// Like [`from_bundle`](Self::from_bundle), with the ref as OpenMLS's type.
    pub(crate) fn from_ref_and_bundle(
        kp_ref: &KeyPackageRef,
        bundle: &KeyPackageBundle,
    ) -> Result<Self> {
        Self::from_bundle(kp_ref.as_slice().to_vec(), bundle)
    }
}

/// A credential's type and content, with its fingerprint.
struct Fingerprinted {
    credential_type: u16,
    content: Vec<u8>,
    fingerprint: Vec<u8>,
}

thread_local! {
    /// The credential last fingerprinted on this thread: a batch reads one
    /// credential from every bundle it writes, and comparing it costs a
    /// fraction of hashing it again.
    static LAST_FINGERPRINT: RefCell<Option<Fingerprinted>> = const { RefCell::new(None) };
}

/// The KeyPackages one pool manages: those whose leaf node carries
/// `signature_key` and the credential of fingerprint `credential`, and whose
/// ciphersuite is `ciphersuite`.
///
/// The credential is part of the scope because it changes while the key
/// stays: a renewed certificate, a new identity string. KeyPackages of the
/// same key and ciphersuite under another credential are *stale* for a
/// pool: it never counts, uploads or hands them out, and retires them
/// ([`KeyPackagePool::retire_stale_credentials`](crate::KeyPackagePool::retire_stale_credentials)).
///
/// ```
/// use openmls::prelude::*;
/// use openmls_basic_credential::SignatureKeyPair;
/// use openmls_keypackage_pool::PoolScope;
///
/// let suite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
/// let signer = SignatureKeyPair::new(suite.signature_algorithm())?;
/// let credential = CredentialWithKey {
///     credential: BasicCredential::new(b"ivy".to_vec()).into(),
///     signature_key: signer.public().into(),
/// };
/// let scope = PoolScope::new(&credential, suite);
/// assert_eq!(scope.signature_key, signer.public());
/// assert_eq!(scope.ciphersuite, 0x0001);
/// assert_eq!(scope.ciphersuite(), Some(suite));
/// assert_eq!(scope.credential, PoolScope::credential_fingerprint(&credential.credential));
///
/// // A new identity on the same key is another pool.
/// let renewed = CredentialWithKey {
///     credential: BasicCredential::new(b"ivy@2027".to_vec()).into(),
///     signature_key: signer.public().into(),
/// };
/// assert_ne!(PoolScope::new(&renewed, suite), scope);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolScope {
    /// The leaf node's signature public key, as raw bytes.
    pub signature_key: Vec<u8>,
    /// The ciphersuite's code point.
    pub ciphersuite: u16,
    /// The fingerprint of the leaf node's credential
    /// ([`credential_fingerprint`](Self::credential_fingerprint)).
    pub credential: Vec<u8>,
}

impl PoolScope {
    /// The scope of a pool signing for `credential` in `ciphersuite`.
    pub fn new(credential: &CredentialWithKey, ciphersuite: Ciphersuite) -> Self {
        Self {
            signature_key: credential.signature_key.as_slice().to_vec(),
            ciphersuite: u16::from(ciphersuite),
            credential: Self::credential_fingerprint(&credential.credential),
        }
    }

    /// The 32-byte fingerprint a scope records for `credential`: SHA-256
    /// over its type's code point (2 bytes, big-endian), its content's
    /// length (8 bytes, big-endian) and its content. Two credentials have
    /// the same fingerprint exactly when they are the same credential.
    pub fn credential_fingerprint(credential: &Credential) -> Vec<u8> {
        let credential_type = u16::from(credential.credential_type());
        let content = credential.serialized_content();
        LAST_FINGERPRINT.with_borrow_mut(|last| match last {
            Some(seen) if seen.credential_type == credential_type && seen.content == content => {
                seen.fingerprint.clone()
            }
            _ => {
                let length = u64::try_from(content.len()).unwrap_or(u64::MAX);
                let fingerprint = Sha256::new()
                    .chain_update(credential_type.to_be_bytes())
                    .chain_update(length.to_be_bytes())
                    .chain_update(content)
                    .finalize()
                    .to_vec();
                *last = Some(Fingerprinted {
                    credential_type,
                    content: content.to_vec(),
                    fingerprint: fingerprint.clone(),
                });
                fingerprint
            }
        })
    }

    /// The ciphersuite as OpenMLS's type, if this build knows its code point
    /// (the post-quantum ones need the `draft-ietf-mls-pq-ciphersuites`
    /// feature).
    pub fn ciphersuite(&self) -> Option<Ciphersuite> {
        Ciphersuite::try_from(self.ciphersuite).ok()
    }

    /// The scope stored in a row: `None` for 0, the empty key or the empty
    /// credential, which mark rows made by hand without a bundle, or whose
    /// bundle could not be read.
    pub(crate) fn from_columns(
        signature_key: Vec<u8>,
        ciphersuite: u16,
        credential: Vec<u8>,
    ) -> Option<Self> {
        (!signature_key.is_empty() && ciphersuite != 0 && !credential.is_empty()).then_some(Self {
            signature_key,
            ciphersuite,
            credential,
        })
    }
}
