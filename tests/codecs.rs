//! Why the shipped codecs are the ones they are.

mod common;

use common::{build_key_package, Identity};
use openmls::prelude::*;
use openmls_keypackage_pool::codec::{Codec, JsonCodec, MessagePackCodec};

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .build()
}

#[test]
fn shipped_codecs_round_trip_a_join_config() {
    let config = join_config();
    let json: MlsGroupJoinConfig =
        JsonCodec::from_slice(&JsonCodec::to_vec(&config).unwrap()).unwrap();
    let msgpack: MlsGroupJoinConfig =
        MessagePackCodec::from_slice(&MessagePackCodec::to_vec(&config).unwrap()).unwrap();
    assert_eq!(json, config);
    assert_eq!(msgpack, config);
}

#[test]
fn postcard_cannot_decode_a_join_config_so_it_is_not_shipped() {
    // OpenMLS decodes PastEpochDeletionPolicy as an untagged enum, which asks
    // the format what it holds; postcard cannot say.
    let bytes = postcard::to_stdvec(&join_config()).unwrap();
    assert!(postcard::from_bytes::<MlsGroupJoinConfig>(&bytes).is_err());
}

#[test]
fn messagepack_stores_a_bundle_in_less_space_than_json() {
    let provider = openmls_rust_crypto::OpenMlsRustCrypto::default();
    let bundle = build_key_package(&provider, &Identity::new("bob"), false);
    let json = JsonCodec::to_vec(&bundle).unwrap().len();
    let msgpack = MessagePackCodec::to_vec(&bundle).unwrap().len();
    assert!(
        msgpack * 2 < json,
        "msgpack {msgpack} bytes, json {json} bytes"
    );
}
