//! The smallest useful program: open a pool database, build a few
//! KeyPackages in one transaction, and show what the pool holds.
//!
//! `cargo run --example quickstart -- [DB_PATH]` (default `quickstart.db`).

use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_keypackage_pool::{KeyPackageStatus, PoolProvider};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "quickstart.db".to_owned());
    let provider = PoolProvider::open(&path)?;

    let ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
    let signer = SignatureKeyPair::new(ciphersuite.signature_algorithm())?;
    signer.store(provider.storage())?;
    let credential = CredentialWithKey {
        credential: BasicCredential::new(b"quickstart".to_vec()).into(),
        signature_key: signer.public().into(),
    };

    provider.storage().transaction(|_| {
        for _ in 0..5 {
            KeyPackage::builder().build(ciphersuite, &provider, &signer, credential.clone())?;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;

    for status in KeyPackageStatus::ALL {
        println!(
            "{status:>10}: {}",
            provider.storage().count_by_status(status)?
        );
    }
    println!("database: {path}");
    Ok(())
}
