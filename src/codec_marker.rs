//! The codec marker: which codec a database's OpenMLS entities are stored
//! with, recorded in `openmls_keypackage_pool_codec`.
//!
//! A database this crate created records its codec from the start. One
//! written by plain `openmls_sqlite_storage` (or by an earlier version of
//! this crate) has no record; it is probed instead, by decoding a few stored
//! entities, and gets its record only when they decode with the codec it is
//! opened with (or when it holds nothing to decode).

use openmls::prelude::{GroupId, KeyPackageBundle, KeyPackageRef};
use rusqlite::{params, Connection, OptionalExtension};
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::{
    catalog::table_exists,
    codec::{JsonCodec, MessagePackCodec, PoolCodec},
    error::{Error, Result},
};

/// What a database says about its codec, once checked against `C`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    /// The database records `C`.
    Recorded,
    /// No record yet, but nothing stored contradicts `C`: it may be
    /// recorded.
    Missing,
    /// No record, and OpenMLS entities are stored but none of a type the
    /// probe can check: `C` is neither confirmed nor refused, and is not
    /// recorded, so a later open probes again.
    Undecided,
}

/// Checks the database's codec against `C` without writing anything.
///
/// A recorded codec other than `C`, or (with no record) stored entities of
/// which none decodes with `C`, is [`Error::CodecMismatch`].
pub(crate) fn check<C: PoolCodec>(conn: &Connection) -> Result<Marker> {
    if let Some(found) = recorded(conn)? {
        return if found == C::NAME {
            Ok(Marker::Recorded)
        } else {
            Err(mismatch::<C>(found))
        };
    }
    let samples = samples(conn)?;
    if samples.is_empty() {
        return Ok(if holds_openmls_entities(conn)? {
            Marker::Undecided
        } else {
            Marker::Missing
        });
    }
    // One sample that decodes is enough: a damaged row must not make the
    // database unopenable with its own codec.
    if samples.iter().any(Sample::decodes::<C>) {
        return Ok(Marker::Missing);
    }
    // Name the codec that wrote it, if it is one of the shipped ones, so the
    // error says what to open it with.
    let found = if samples.iter().any(Sample::decodes::<JsonCodec>) {
        JsonCodec::NAME
    } else if samples.iter().any(Sample::decodes::<MessagePackCodec>) {
        MessagePackCodec::NAME
    } else {
        "unknown"
    };
    Err(mismatch::<C>(found.to_owned()))
}

/// Records `C` as the database's codec. Called under the migration lock,
/// after [`check`] returned [`Marker::Missing`] there.
pub(crate) fn record<C: PoolCodec>(conn: &Connection, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO openmls_keypackage_pool_codec (id, name, recorded_at) VALUES (1, ?1, ?2)",
        params![C::NAME, now],
    )?;
    Ok(())
}

fn mismatch<C: PoolCodec>(found: String) -> Error {
    Error::CodecMismatch {
        found,
        expected: C::NAME,
    }
}

/// The recorded codec name, if the table exists and holds one.
fn recorded(conn: &Connection) -> Result<Option<String>> {
    if !table_exists(conn, "openmls_keypackage_pool_codec")? {
        return Ok(None);
    }
    Ok(conn
        .query_row(
            "SELECT name FROM openmls_keypackage_pool_codec WHERE id = 1",
            [],
            |row| row.get(0),
        )
        .optional()?)
}

/// A stored value whose type is known from the table it sits in.
enum Sample {
    KeyPackage { key: Vec<u8>, bundle: Vec<u8> },
    GroupId(Vec<u8>),
    EncryptionKeyPair(Vec<u8>),
}

/// The shape OpenMLS stores a leaf's encryption key pair in
/// (`openmls_encryption_keys.key_pair`); only the shape is checked.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct EncryptionKeyPairShape {
    public_key: IgnoredAny,
    private_key: IgnoredAny,
}

impl Sample {
    fn decodes<C: PoolCodec>(&self) -> bool {
        fn ok<C: PoolCodec, T: DeserializeOwned>(bytes: &[u8]) -> bool {
            C::from_slice::<T>(bytes).is_ok()
        }
        match self {
            Self::KeyPackage { key, bundle } => {
                ok::<C, KeyPackageRef>(key) && ok::<C, KeyPackageBundle>(bundle)
            }
            Self::GroupId(bytes) => ok::<C, GroupId>(bytes),
            Self::EncryptionKeyPair(bytes) => ok::<C, EncryptionKeyPairShape>(bytes),
        }
    }
}

/// How many rows of each table the probe reads.
const SAMPLES_PER_TABLE: usize = 8;

/// The first rows of each `openmls_sqlite_storage` table whose stored type
/// this crate can name: KeyPackages (key and bundle), groups' ids,
/// encryption key pairs. Typed decoding matters: a MessagePack decoder reads
/// the first byte of a JSON text as a small integer and stops, so only a
/// whole value of the right type tells the codecs apart.
fn samples(conn: &Connection) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    let mut read =
        |table: &str, columns: &str, make: fn(Vec<u8>, Vec<u8>) -> Sample| -> Result<()> {
            if !table_exists(conn, table)? {
                return Ok(());
            }
            let mut stmt = conn.prepare(&format!(
                "SELECT {columns} FROM {table} ORDER BY rowid LIMIT {SAMPLES_PER_TABLE}"
            ))?;
            let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            for row in rows {
                let (a, b) = row?;
                samples.push(make(a, b));
            }
            Ok(())
        };
    read(
        "openmls_key_packages",
        "key_package_ref, key_package",
        |key, bundle| Sample::KeyPackage { key, bundle },
    )?;
    read("openmls_group_data", "group_id, group_data", |id, _| {
        Sample::GroupId(id)
    })?;
    read(
        "openmls_encryption_keys",
        "public_key, key_pair",
        |_, pair| Sample::EncryptionKeyPair(pair),
    )?;
    Ok(samples)
}

/// Whether any `openmls_sqlite_storage` table holds a row (its own
/// migration history aside).
fn holds_openmls_entities(conn: &Connection) -> Result<bool> {
    let tables: Vec<String> = {
        let mut stmt = conn.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table'
               AND name LIKE 'openmls\\_%' ESCAPE '\\'
               AND name NOT LIKE 'openmls\\_keypackage\\_pool%' ESCAPE '\\'
               AND name NOT LIKE '%migrations'",
        )?;
        let rows = stmt.query_map([], |row| row.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for table in tables {
        let any: bool = conn.query_row(
            &format!("SELECT EXISTS (SELECT 1 FROM \"{table}\")"),
            [],
            |row| row.get(0),
        )?;
        if any {
            return Ok(true);
        }
    }
    Ok(false)
}
