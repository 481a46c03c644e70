//! The wall clock: Unix seconds, as the metadata table stores them, and Unix
//! milliseconds, as the erasure record does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Time since the Unix epoch; an error, not a panic, if the clock reads
/// earlier than 1970.
fn since_epoch() -> Result<Duration> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::ClockBeforeEpoch)
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> Result<i64> {
    // A u64 of seconds passes i64::MAX only some 292 billion years from now.
    Ok(i64::try_from(since_epoch()?.as_secs()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_now_ms() -> Result<i64> {
    Ok(i64::try_from(since_epoch()?.as_millis()).unwrap_or(i64::MAX))
}

/// The end, in Unix seconds, of a window of `secs` seconds that starts now.
/// The start is rounded up to the next whole second, so the window is never
/// shorter than `secs` (it may be up to a second longer): a window that ends
/// once the clock reads its end second would otherwise lose the fraction of
/// the second it started in.
pub(crate) fn window_end(secs: i64) -> Result<i64> {
    let start = since_epoch()?.as_nanos().div_ceil(1_000_000_000);
    Ok(i64::try_from(start)
        .unwrap_or(i64::MAX)
        .saturating_add(secs))
}
