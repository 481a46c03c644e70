//! An application on plain `openmls_sqlite_storage`, as it would be before
//! adopting this crate: the same crypto, a codec of its choice.

use std::path::Path;

use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::{Codec, Connection, SqliteStorageProvider};
use openmls_traits::OpenMlsProvider;

pub struct PlainSqliteProvider<C: Codec> {
    crypto: RustCrypto,
    storage: SqliteStorageProvider<C, Connection>,
}

impl<C: Codec> PlainSqliteProvider<C> {
    /// Opens the file and runs `openmls_sqlite_storage`'s migrations.
    pub fn open(path: &Path) -> Self {
        let mut storage = SqliteStorageProvider::new(Connection::open(path).expect("open"));
        storage.run_migrations().expect("migrations");
        Self {
            crypto: RustCrypto::default(),
            storage,
        }
    }
}

impl<C: Codec> OpenMlsProvider for PlainSqliteProvider<C> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = SqliteStorageProvider<C, Connection>;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }
    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }
    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}
