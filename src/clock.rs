//! The wall clock, as the Unix seconds the metadata table stores.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Seconds since the Unix epoch; an error, not a panic, if the clock reads
/// earlier than 1970.
pub(crate) fn unix_now() -> Result<i64> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::ClockBeforeEpoch)?
        .as_secs();
    // A u64 of seconds passes i64::MAX only some 292 billion years from now.
    Ok(i64::try_from(secs).unwrap_or(i64::MAX))
}
