//! An application with OpenMLS's post-quantum ciphersuites enabled: it
//! compiles only when `openmls_keypackage_pool` forwards the feature to every
//! OpenMLS crate it depends on.

use openmls::prelude::Ciphersuite;
use openmls_keypackage_pool::{Error, KeyPackageStatus, PoolProvider};

fn main() -> Result<(), Error> {
    let provider = PoolProvider::open_in_memory()?;
    let x_wing = Ciphersuite::MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519;
    println!(
        "{x_wing:?} is 0x{:04X}; {} KeyPackages pending upload",
        u16::from(x_wing),
        provider.storage().count_by_status(KeyPackageStatus::Created)?
    );
    Ok(())
}
