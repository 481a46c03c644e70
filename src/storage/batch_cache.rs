//! The page cache a batch of KeyPackages is written with.
//!
//! A batch inserts under random keys (KeyPackage refs) into two indexes, so
//! it keeps coming back to the same index pages while its new table pages
//! stream past them. When the page cache is too small to hold those index
//! pages across the stream, SQLite spills them to the WAL before the commit
//! and writes them again when the batch changes them later. With SQLite's
//! default 2 MiB cache, one batch of 10,000 wrote 13 of its 2,483 pages
//! twice (classical KeyPackages) and 933 of 12,096 (X-Wing, whose 5 KB
//! bundles stream past five times as many pages). [`BatchCache`] raises the
//! cache to 4 MiB for the length of a batch and puts the connection's own
//! setting back afterwards; the memory is only taken when a batch fills it.
//! That brings the classical batch to none and the X-Wing one to 50. None
//! for X-Wing took 16 MiB; at 8 MiB a process generating 10,000 already
//! peaked at 2.1x (classical) and 1.9x (X-Wing) the memory of one generating
//! 100, where 4 MiB keeps it at 1.6x and 1.4x.

use rusqlite::Connection;

use crate::error::Result;

/// The page cache a batch runs with, in KiB, unless the connection's own is
/// larger.
pub(crate) const BATCH_CACHE_KIB: i64 = 4 * 1024;

/// Holds a connection's page cache at [`BATCH_CACHE_KIB`] or more until
/// dropped, then restores the setting it found.
pub(crate) struct BatchCache<'c> {
    conn: &'c Connection,
    /// The `cache_size` setting to restore, when it was raised.
    previous: Option<i64>,
}

impl<'c> BatchCache<'c> {
    /// Raises `conn`'s page cache to [`BATCH_CACHE_KIB`] if it is smaller.
    pub(crate) fn raise(conn: &'c Connection) -> Result<Self> {
        let setting: i64 = conn.query_row("PRAGMA cache_size", [], |row| row.get(0))?;
        // A negative setting is in KiB, a positive one in pages.
        let kib = if setting < 0 {
            setting.saturating_neg()
        } else {
            let page_size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
            setting.saturating_mul(page_size) / 1024
        };
        if kib >= BATCH_CACHE_KIB {
            return Ok(Self {
                conn,
                previous: None,
            });
        }
        conn.execute_batch(&format!("PRAGMA cache_size = -{BATCH_CACHE_KIB}"))?;
        Ok(Self {
            conn,
            previous: Some(setting),
        })
    }
}

impl Drop for BatchCache<'_> {
    fn drop(&mut self) {
        if let Some(previous) = self.previous {
            // Best effort: a cache left larger than asked for costs memory,
            // never data.
            let _ = self
                .conn
                .execute_batch(&format!("PRAGMA cache_size = {previous}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_size(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA cache_size", [], |row| row.get(0))
            .expect("cache_size")
    }

    #[test]
    fn raises_a_smaller_cache_for_its_life_and_restores_it() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("PRAGMA cache_size = 100").expect("set");
        {
            let _cache = BatchCache::raise(&conn).expect("raise");
            assert_eq!(cache_size(&conn), -BATCH_CACHE_KIB);
        }
        assert_eq!(cache_size(&conn), 100);
    }

    #[test]
    fn leaves_a_larger_cache_alone() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("PRAGMA cache_size = -65536")
            .expect("set");
        {
            let _cache = BatchCache::raise(&conn).expect("raise");
            assert_eq!(cache_size(&conn), -65536);
        }
        assert_eq!(cache_size(&conn), -65536);
    }
}
