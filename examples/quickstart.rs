//! The smallest useful program: open a pool database, build a few
//! KeyPackages in one transaction, show what the pool holds, then use one of
//! them the way an application does, each OpenMLS operation in a
//! transaction of its own: a peer creates a group and invites us, we join,
//! and read the peer's first message.
//!
//! `cargo run --example quickstart -- [DB_PATH]` (default `quickstart.db`).

use openmls::prelude::{tls_codec::*, *};
use openmls_basic_credential::SignatureKeyPair;
use openmls_keypackage_pool::{KeyPackageStatus, PoolProvider};

/// OpenMLS's error types do not convert from this crate's `Error`; a boxed
/// error takes both.
type BoxError = Box<dyn std::error::Error>;

/// A signer and a credential for `name`.
fn identity(
    ciphersuite: Ciphersuite,
    name: &str,
) -> Result<(SignatureKeyPair, CredentialWithKey), BoxError> {
    let signer = SignatureKeyPair::new(ciphersuite.signature_algorithm())?;
    let credential = CredentialWithKey {
        credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
        signature_key: signer.public().into(),
    };
    Ok((signer, credential))
}

/// What a server would carry: the bytes of a message, read back.
fn over_the_wire(message: &MlsMessageOut) -> Result<MlsMessageIn, BoxError> {
    Ok(MlsMessageIn::tls_deserialize_exact(
        message.tls_serialize_detached()?,
    )?)
}

fn main() -> Result<(), BoxError> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "quickstart.db".to_owned());
    let provider = PoolProvider::open(&path)?;

    let ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
    let (signer, credential) = identity(ciphersuite, "quickstart")?;
    signer.store(provider.storage())?;

    // Five KeyPackages, one commit.
    let bundles = provider.transaction(|provider| -> Result<_, BoxError> {
        let mut bundles = Vec::new();
        for _ in 0..5 {
            bundles.push(KeyPackage::builder().build(
                ciphersuite,
                provider,
                &signer,
                credential.clone(),
            )?);
        }
        Ok(bundles)
    })?;
    for status in KeyPackageStatus::ALL {
        println!(
            "{status:>10}: {}",
            provider.storage().count_by_status(status)?
        );
    }

    // A peer (in memory here) creates a group and invites us with the first
    // KeyPackage.
    let peer = PoolProvider::open_in_memory()?;
    let (peer_signer, peer_credential) = identity(ciphersuite, "peer")?;
    let config = MlsGroupCreateConfig::builder()
        .ciphersuite(ciphersuite)
        .use_ratchet_tree_extension(true)
        .build();
    let mut peer_group = peer.transaction(|peer| -> Result<_, BoxError> {
        Ok(MlsGroup::new(peer, &peer_signer, &config, peer_credential)?)
    })?;
    let invited = bundles[0].key_package().clone();
    let (_commit, welcome, _) =
        peer.group_transaction(&mut peer_group, |group, peer| -> Result<_, BoxError> {
            Ok(group.add_members(peer, &peer_signer, &[invited])?)
        })?;
    // ... the delivery service accepts the commit ...
    peer.group_transaction(&mut peer_group, |group, peer| -> Result<_, BoxError> {
        Ok(group.merge_pending_commit(peer)?)
    })?;

    // We join: the KeyPackage's deletion and the new group are one commit,
    // so a crash or an error in between cannot lose the invitation.
    let MlsMessageBodyIn::Welcome(welcome) = over_the_wire(&welcome)?.extract() else {
        return Err("the peer did not send a Welcome".into());
    };
    let join_config = MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .build();
    let mut group = provider.transaction(|provider| -> Result<_, BoxError> {
        let staged = StagedWelcome::new_from_welcome(provider, &join_config, welcome, None)?;
        Ok(staged.into_group(provider)?)
    })?;
    println!(
        "joined the group at epoch {}; KeyPackages left: {}",
        group.epoch().as_u64(),
        provider
            .storage()
            .count_by_status(KeyPackageStatus::Created)?
    );

    // The peer's first message, decrypted in a group transaction: if the
    // application failed to record it, the group would be reloaded as
    // stored and the message could be processed again.
    let hello = peer.group_transaction(&mut peer_group, |group, peer| -> Result<_, BoxError> {
        Ok(group.create_message(peer, &peer_signer, b"hello from the peer")?)
    })?;
    let message = over_the_wire(&hello)?.try_into_protocol_message()?;
    let text =
        provider.group_transaction(&mut group, |group, provider| -> Result<_, BoxError> {
            match group.process_message(provider, message)?.into_content() {
                ProcessedMessageContent::ApplicationMessage(text) => Ok(text.into_bytes()),
                _ => Err("not an application message".into()),
            }
        })?;
    println!("read: {}", String::from_utf8_lossy(&text));

    provider.close()?;
    println!("database: {path}");
    Ok(())
}
