//! The `identities` table: which signature public key belongs to which local
//! user.
//!
//! OpenMLS stores a signature key pair under its public key, so after a
//! restart an application needs the public key to read the pair back. This
//! table keeps that one pointer per user name.

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::Result;

/// Records `signature_public_key` as `username`'s, replacing any earlier one.
pub(crate) fn save(
    conn: &Connection,
    username: &str,
    signature_public_key: &[u8],
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO identities (username, signature_public_key, created_at)
         VALUES (?1, ?2, ?3)
         ON CONFLICT (username) DO UPDATE SET
             signature_public_key = excluded.signature_public_key,
             created_at = excluded.created_at",
    )?
    .execute(params![username, signature_public_key, now])?;
    Ok(())
}

/// `username`'s signature public key, if one was saved.
pub(crate) fn load_public_key(conn: &Connection, username: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached("SELECT signature_public_key FROM identities WHERE username = ?1")?
        .query_row([username], |row| row.get(0))
        .optional()?)
}
