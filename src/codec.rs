//! Codecs that turn OpenMLS entities into the blobs stored in SQLite.
//!
//! OpenMLS hands its storage provider values that only promise `serde`
//! support, so the codec decides the on-disk format of every group, key and
//! KeyPackage. The codec is fixed per database: open a file with the codec it
//! was written with.
//!
//! Two codecs ship:
//!
//! - [`MessagePackCodec`] (the default): MessagePack, compact and fast, and
//!   self-describing, which some OpenMLS types need to decode (for example
//!   `PastEpochDeletionPolicy` in a group's join config accepts two formats
//!   and asks the decoder what it sees).
//! - [`JsonCodec`]: JSON, the format `openmls_sqlite_storage`'s own tests and
//!   OpenMLS's in-memory storage use. Choose it to open a database an
//!   application wrote with a plain `SqliteStorageProvider` and a JSON codec.
//!
//! Non-self-describing formats such as postcard or bincode cannot decode a
//! stored `MlsGroupJoinConfig`, so they cannot serve as an OpenMLS storage
//! codec; the crate's codec tests prove this for postcard.
//!
//! Each database records the [`PoolCodec::NAME`] of the codec its entities
//! are stored with, and refuses to open with another one
//! ([`Error::CodecMismatch`](crate::Error::CodecMismatch)): read with the
//! wrong codec, every stored entity would look damaged.

pub use openmls_sqlite_storage::Codec;
use serde::{de::DeserializeOwned, Serialize};

/// The codec [`PoolStorage`](crate::PoolStorage) and
/// [`PoolProvider`](crate::PoolProvider) use when none is named.
pub type DefaultCodec = MessagePackCodec;

/// A [`Codec`] with a stable name, which a database records so that it is
/// never read with another codec.
///
/// `Codec` belongs to `openmls_sqlite_storage`; this trait adds what the
/// pool needs on top. To use a codec of your own, implement both, and give it
/// a name no other codec uses.
///
/// ```
/// use openmls_keypackage_pool::codec::{JsonCodec, MessagePackCodec, PoolCodec};
///
/// assert_eq!(JsonCodec::NAME, "json");
/// assert_eq!(MessagePackCodec::NAME, "messagepack");
/// ```
pub trait PoolCodec: Codec {
    /// The name recorded in the database. It must never change once
    /// databases written with the codec exist: a database whose recorded
    /// name differs is refused.
    const NAME: &'static str;
}

/// Stores entities as JSON text (in BLOB columns).
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonCodec;

impl PoolCodec for JsonCodec {
    const NAME: &'static str = "json";
}

impl Codec for JsonCodec {
    type Error = serde_json::Error;

    fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        serde_json::to_vec(value)
    }

    fn from_slice<T: DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        serde_json::from_slice(slice)
    }
}

/// Stores entities as MessagePack, structs as arrays.
#[derive(Debug, Default, Clone, Copy)]
pub struct MessagePackCodec;

impl PoolCodec for MessagePackCodec {
    const NAME: &'static str = "messagepack";
}

/// An error from [`MessagePackCodec`].
#[derive(Debug, thiserror::Error)]
pub enum MessagePackError {
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] rmp_serde::encode::Error),
    /// Decoding failed.
    #[error(transparent)]
    Decode(#[from] rmp_serde::decode::Error),
}

impl Codec for MessagePackCodec {
    type Error = MessagePackError;

    fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        Ok(rmp_serde::to_vec(value)?)
    }

    fn from_slice<T: DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        Ok(rmp_serde::from_slice(slice)?)
    }
}

/// Moves a value OpenMLS handed over as an opaque `serde` type into the
/// concrete OpenMLS type it is, through the codec both sides agree on.
pub(crate) fn transcode<C: Codec, T: DeserializeOwned>(
    value: &impl Serialize,
    what: &'static str,
) -> crate::Result<T> {
    let bytes = C::to_vec(value).map_err(|e| crate::Error::codec(what, e))?;
    C::from_slice(&bytes).map_err(|e| crate::Error::codec(what, e))
}
