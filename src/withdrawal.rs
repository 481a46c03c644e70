//! The withdrawal outbox, `keypackage_pool_withdrawals`: KeyPackages a
//! server may still hand out whose private keys this client has deleted
//! (or will delete when their grace window ends).
//!
//! Every path that takes a KeyPackage out of service calls [`record`] in
//! the transaction that deletes or retires its keys, so the record and the
//! deletion land together or not at all. A withdrawal stays until the
//! application confirms the server has dropped the KeyPackage, or abandons
//! it; it outlives its KeyPackage, scope and signature key.

use std::{fmt, str::FromStr};

use rusqlite::{params, Connection, Row};

use crate::{
    error::{Error, RefBytes, Result},
    keypackage_ref::check_ref,
    metadata::PoolScope,
};

/// Why a KeyPackage left service, as its [`Withdrawal`] records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WithdrawalReason {
    /// Pruned after its lifetime ended
    /// ([`KeyPackagePool::prune_expired`](crate::KeyPackagePool::prune_expired)).
    Expired,
    /// A last-resort KeyPackage beyond the ones kept
    /// ([`KeyPackagePool::ensure_last_resort`](crate::KeyPackagePool::ensure_last_resort)).
    SurplusLastResort,
    /// Its scope was removed
    /// ([`PoolStorage::remove_scope`](crate::PoolStorage::remove_scope)).
    ScopeRemoved,
    /// Its signature key was removed
    /// ([`PoolStorage::remove_signature_key`](crate::PoolStorage::remove_signature_key)).
    KeyRemoved,
    /// A Welcome consumed it. A server that deletes a KeyPackage when it
    /// hands it out no longer has it: confirm these at once. A relay, or a
    /// server without atomic hand-out, may give it to the next inviter too.
    Consumed,
    /// The application removed it
    /// ([`PoolStorage::remove_key_package`](crate::PoolStorage::remove_key_package)).
    Removed,
    /// Its bundle was missing, and
    /// [`PoolStorage::repair`](crate::PoolStorage::repair) removed its row.
    Repaired,
    /// It carries a credential its signature key no longer presents
    /// ([`KeyPackagePool::retire_stale_credentials`](crate::KeyPackagePool::retire_stale_credentials)).
    CredentialReplaced,
}

impl WithdrawalReason {
    /// Every reason, in declaration order.
    pub const ALL: [WithdrawalReason; 8] = [
        Self::Expired,
        Self::SurplusLastResort,
        Self::ScopeRemoved,
        Self::KeyRemoved,
        Self::Consumed,
        Self::Removed,
        Self::Repaired,
        Self::CredentialReplaced,
    ];

    /// The name stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::SurplusLastResort => "surplus_last_resort",
            Self::ScopeRemoved => "scope_removed",
            Self::KeyRemoved => "key_removed",
            Self::Consumed => "consumed",
            Self::Removed => "removed",
            Self::Repaired => "repaired",
            Self::CredentialReplaced => "credential_replaced",
        }
    }
}

impl fmt::Display for WithdrawalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WithdrawalReason {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|reason| reason.as_str() == text)
            .ok_or_else(|| Error::InvalidWithdrawalReason {
                text: text.to_owned(),
            })
    }
}

/// A KeyPackage the server should stop handing out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Withdrawal {
    /// The raw KeyPackageRef, as the server knows it.
    pub keypackage_ref: Vec<u8>,
    /// The pool it belonged to; `None` for a row made by hand without a
    /// bundle, and for withdrawals recorded before the database tracked
    /// credentials.
    pub scope: Option<PoolScope>,
    /// Why it left service.
    pub reason: WithdrawalReason,
    /// When the withdrawal was recorded (Unix seconds).
    pub recorded_at: i64,
    /// How many attempts [`PoolStorage::withdrawal_failed`](crate::PoolStorage::withdrawal_failed)
    /// has counted.
    pub attempts: u32,
    /// What the last failed attempt reported.
    pub last_error: Option<String>,
}

/// The statuses of a KeyPackage a server may hold: uploaded, handed out,
/// or whose upload may have reached the server before it failed. A
/// `created` one may be held too once `pending_upload` has returned it
/// (`offered_at` is set).
const MAY_BE_HELD: &str = "status IN ('uploaded', 'available', 'reserved', 'failed')
                           OR (status = 'created' AND offered_at IS NOT NULL)";

/// Records, in the open transaction, the withdrawal of the KeyPackage whose
/// metadata row is `keypackage_ref`, if a server may hold it; reads the row,
/// so call it before the row goes. Returns whether one was recorded (a
/// withdrawal already recorded for the ref is kept as it is).
pub(crate) fn record(
    conn: &Connection,
    keypackage_ref: &[u8],
    reason: WithdrawalReason,
    now: i64,
) -> Result<bool> {
    let recorded = conn
        .prepare_cached(&format!(
            "INSERT INTO keypackage_pool_withdrawals
                 (keypackage_ref, signature_key, ciphersuite, credential, reason, recorded_at)
             SELECT keypackage_ref, signature_key, ciphersuite, credential, ?2, ?3
             FROM keypackage_pool_metadata
             WHERE keypackage_ref = ?1 AND ({MAY_BE_HELD})
             ON CONFLICT (keypackage_ref) DO NOTHING"
        ))?
        .execute(params![keypackage_ref, reason.as_str(), now])?;
    Ok(recorded > 0)
}

const COLUMNS: &str =
    "keypackage_ref, signature_key, ciphersuite, reason, recorded_at, attempts, last_error, \
     credential";

fn read(row: &Row<'_>) -> rusqlite::Result<(Withdrawal, String)> {
    Ok((
        Withdrawal {
            keypackage_ref: row.get(0)?,
            scope: PoolScope::from_columns(row.get(1)?, row.get(2)?, row.get(7)?),
            // Replaced by the parsed text.
            reason: WithdrawalReason::Removed,
            recorded_at: row.get(4)?,
            attempts: row.get(5)?,
            last_error: row.get(6)?,
        },
        row.get(3)?,
    ))
}

/// Every withdrawal not yet confirmed, of `scope`'s signature key and
/// ciphersuite (whatever the credential: retiring a stale credential's
/// KeyPackages is the renewed pool's to withdraw) or of every scope, oldest
/// first.
pub(crate) fn pending(conn: &Connection, scope: Option<&PoolScope>) -> Result<Vec<Withdrawal>> {
    let (key, suite) = scope.map_or((None, None), |s| {
        (Some(s.signature_key.as_slice()), Some(s.ciphersuite))
    });
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM keypackage_pool_withdrawals
         WHERE (?1 IS NULL OR (signature_key = ?1 AND ciphersuite = ?2))
         ORDER BY recorded_at, keypackage_ref"
    ))?;
    let rows = stmt.query_map(params![key, suite], read)?;
    rows.map(|row| {
        let (withdrawal, reason) = row?;
        Ok(Withdrawal {
            reason: reason.parse()?,
            ..withdrawal
        })
    })
    .collect()
}

/// How many withdrawals of `scope`'s signature key and ciphersuite (whatever
/// the credential) are not yet confirmed.
pub(crate) fn count(conn: &Connection, scope: &PoolScope) -> Result<usize> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM keypackage_pool_withdrawals
             WHERE signature_key = ?1 AND ciphersuite = ?2",
        )?
        .query_row(params![scope.signature_key, scope.ciphersuite], |row| {
            row.get(0)
        })?;
    Ok(usize::try_from(n).unwrap_or_default())
}

/// Refuses the whole list, before anything changes, when a ref is not
/// valid or has no withdrawal (the first such is named).
fn check_all_known<R: AsRef<[u8]>>(conn: &Connection, refs: &[R]) -> Result<()> {
    let mut stmt =
        conn.prepare_cached("SELECT 1 FROM keypackage_pool_withdrawals WHERE keypackage_ref = ?1")?;
    for keypackage_ref in refs {
        let keypackage_ref = keypackage_ref.as_ref();
        check_ref(keypackage_ref)?;
        if !stmt.exists([keypackage_ref])? {
            return Err(Error::NotFound {
                keypackage_ref: RefBytes::of(keypackage_ref),
            });
        }
    }
    Ok(())
}

/// Removes the withdrawals of `refs`, all or none (in the caller's
/// transaction): the server has dropped them, or the application gives up.
pub(crate) fn remove<R: AsRef<[u8]>>(conn: &Connection, refs: &[R]) -> Result<()> {
    check_all_known(conn, refs)?;
    let mut stmt =
        conn.prepare_cached("DELETE FROM keypackage_pool_withdrawals WHERE keypackage_ref = ?1")?;
    for keypackage_ref in refs {
        stmt.execute([keypackage_ref.as_ref()])?;
    }
    Ok(())
}

/// Counts a failed attempt at withdrawing each of `refs`, all or none.
pub(crate) fn attempt_failed<R: AsRef<[u8]>>(
    conn: &Connection,
    refs: &[R],
    error: &str,
    now: i64,
) -> Result<()> {
    check_all_known(conn, refs)?;
    let mut stmt = conn.prepare_cached(
        "UPDATE keypackage_pool_withdrawals
         SET attempts = attempts + 1, last_attempt_at = ?2, last_error = ?3
         WHERE keypackage_ref = ?1",
    )?;
    for keypackage_ref in refs {
        stmt.execute(params![keypackage_ref.as_ref(), now, error])?;
    }
    Ok(())
}
