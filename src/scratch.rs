//! A provider that builds KeyPackages and keeps nothing, for building
//! outside the pool's database.
//!
//! The pool builds each KeyPackage with this provider, then writes the bundle
//! and its metadata row itself through [`PoolStorage`](crate::PoolStorage)'s
//! `store_bundle`. That keeps the crypto off the write path's error
//! handling (OpenMLS would report any storage failure as a bare
//! `StorageError`) and lets worker threads build without a database.

use std::{cell::RefCell, convert::Infallible};

use openmls::prelude::KeyPackageRef;
use openmls_traits::{
    storage::{traits, StorageProvider, CURRENT_VERSION as V},
    OpenMlsProvider,
};

use crate::{
    codec::{transcode, MessagePackCodec},
    provider::PoolCrypto,
};

/// A storage that drops every write and finds nothing, but notes the ref of
/// the last KeyPackage written: OpenMLS computes it while building, and
/// hashing the KeyPackage again would cost more than reading it here.
#[derive(Debug, Default)]
pub(crate) struct DiscardStorage {
    last_ref: RefCell<Option<KeyPackageRef>>,
}

/// Writes trait methods that accept anything and return the empty value.
macro_rules! discard {
    ($(
        $(#[$attr:meta])*
        $mode:ident fn $name:ident<$($generic:ident: $bound:path),+ $(,)?>(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
    )*) => {$(
        $(#[$attr])*
        fn $name<$($generic: $bound),+>(&self $(, $arg: $ty)*) -> Result<$ret, Infallible> {
            $(let _ = $arg;)*
            Ok(Default::default())
        }
    )*};
}

impl StorageProvider<V> for DiscardStorage {
    type Error = Infallible;

    fn write_key_package<
        HashReference: traits::HashReference<V>,
        KeyPackage: traits::KeyPackage<V>,
    >(
        &self,
        hash_ref: &HashReference,
        _key_package: &KeyPackage,
    ) -> Result<(), Infallible> {
        // A ref that does not read back leaves None; the caller then hashes.
        *self.last_ref.borrow_mut() =
            transcode::<MessagePackCodec, _>(hash_ref, "reading a KeyPackageRef").ok();
        Ok(())
    }

    fn delete_key_package<KeyPackageRef: traits::HashReference<V>>(
        &self,
        _hash_ref: &KeyPackageRef,
    ) -> Result<(), Infallible> {
        Ok(())
    }

    crate::storage_methods::storage_methods!(discard);
}

/// A pool's crypto provider, borrowed, with a [`DiscardStorage`].
#[derive(Debug)]
pub(crate) struct ScratchProvider<'a, P> {
    crypto: &'a P,
    storage: DiscardStorage,
}

impl<'a, P: PoolCrypto> ScratchProvider<'a, P> {
    /// Builds with `crypto`, which may be shared with other threads' scratch
    /// providers.
    pub(crate) fn new(crypto: &'a P) -> Self {
        Self {
            crypto,
            storage: DiscardStorage::default(),
        }
    }

    /// The ref of the KeyPackage built last, as OpenMLS computed it.
    pub(crate) fn take_last_ref(&self) -> Option<KeyPackageRef> {
        self.storage.last_ref.borrow_mut().take()
    }
}

impl<P: PoolCrypto> OpenMlsProvider for ScratchProvider<'_, P> {
    type CryptoProvider = P;
    type RandProvider = P;
    type StorageProvider = DiscardStorage;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        self.crypto
    }
}
