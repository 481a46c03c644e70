//! Conversions between OpenMLS's `KeyPackageRef` and the raw bytes this crate
//! keys its metadata by.
//!
//! The raw bytes are [`KeyPackageRef::as_slice`], the hash a delivery server
//! also sees. OpenMLS only offers the way from a ref to its bytes; the way
//! back goes through the ref's TLS encoding (a variable-length byte vector),
//! which decodes into exactly the value OpenMLS itself would compute, so a
//! lookup or delete with a rebuilt ref matches the stored bundle.

use openmls::prelude::KeyPackageRef;
use openmls_sqlite_storage::Codec;
use serde::Serialize;
use tls_codec::{DeserializeBytes, Serialize as _, VLBytes};

use crate::{
    codec::transcode,
    error::{Error, RefBytes, Result},
};

/// The longest KeyPackageRef accepted: the output size of SHA-512, the
/// largest hash any MLS ciphersuite uses.
pub const MAX_REF_LEN: usize = 64;

/// Checks that `keypackage_ref` could be a KeyPackageRef at all.
pub(crate) fn check_ref(keypackage_ref: &[u8]) -> Result<()> {
    let reason = if keypackage_ref.is_empty() {
        "it is empty"
    } else if keypackage_ref.len() > MAX_REF_LEN {
        "it is longer than 64 bytes, the largest MLS hash"
    } else {
        return Ok(());
    };
    Err(Error::InvalidRef {
        keypackage_ref: RefBytes::of(keypackage_ref),
        reason,
    })
}

/// Rebuilds OpenMLS's `KeyPackageRef` from its raw bytes.
///
/// Use it to look up, in OpenMLS storage, a KeyPackage that a server or this
/// crate's metadata names by its raw ref.
///
/// ```
/// use openmls_keypackage_pool::key_package_ref_from_bytes;
///
/// let raw = [7u8; 32];
/// let kp_ref = key_package_ref_from_bytes(&raw).unwrap();
/// assert_eq!(kp_ref.as_slice(), &raw);
/// assert!(key_package_ref_from_bytes(&[]).is_err());
/// ```
pub fn key_package_ref_from_bytes(keypackage_ref: &[u8]) -> Result<KeyPackageRef> {
    check_ref(keypackage_ref)?;
    let invalid = |_| Error::InvalidRef {
        keypackage_ref: RefBytes::of(keypackage_ref),
        reason: "it cannot be encoded as a TLS byte vector",
    };
    let encoded = VLBytes::from(keypackage_ref)
        .tls_serialize_detached()
        .map_err(invalid)?;
    let (rebuilt, rest) = KeyPackageRef::tls_deserialize_bytes(&encoded).map_err(invalid)?;
    if !rest.is_empty() || rebuilt.as_slice() != keypackage_ref {
        return Err(Error::InvalidRef {
            keypackage_ref: RefBytes::of(keypackage_ref),
            reason: "it does not survive a TLS round trip",
        });
    }
    Ok(rebuilt)
}

/// The raw bytes of a ref that OpenMLS passed to the storage provider as an
/// opaque serializable value.
///
/// OpenMLS only ever passes its own `KeyPackageRef` here; the value is moved
/// into that type through the storage codec, the one format both sides agree
/// on.
pub(crate) fn raw_ref_of<C: Codec>(hash_ref: &impl Serialize) -> Result<Vec<u8>> {
    let kp_ref: KeyPackageRef = transcode::<C, _>(hash_ref, "reading a KeyPackageRef")?;
    Ok(kp_ref.as_slice().to_vec())
}
