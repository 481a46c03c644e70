//! Which signature public key belongs to which local user.

use super::PoolStorage;
use crate::{clock::unix_now, codec::PoolCodec, error::Result, identity};

impl<C: PoolCodec> PoolStorage<C> {
    /// Records `signature_public_key` as `username`'s, replacing any earlier
    /// one.
    pub fn save_identity(&self, username: &str, signature_public_key: &[u8]) -> Result<()> {
        self.write_alone(|| {
            identity::save(
                &self.connection(),
                username,
                signature_public_key,
                unix_now()?,
            )
        })
    }

    /// The signature public key saved for `username`, if any.
    pub fn load_public_key(&self, username: &str) -> Result<Option<Vec<u8>>> {
        identity::load_public_key(&self.connection(), username)
    }
}
