//! The page cache a transaction is written with.
//!
//! A batch of KeyPackages inserts under random keys (KeyPackage refs) into
//! two indexes, so it keeps coming back to the same index pages while its
//! new table pages stream past them. When the page cache cannot keep those
//! index pages between visits, SQLite spills them to the write-ahead log
//! before the commit and writes them again when the batch changes them
//! later. [`BatchCache`] raises the cache for the length of an outermost
//! transaction and puts the connection's own setting back afterwards; the
//! memory is only taken when a transaction fills it. `docs/performance.md`
//! measures what it saves and what it costs.

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

    /// Sets `conn`'s cache to `setting`, and returns the setting while a
    /// [`BatchCache`] holds it and after it is dropped.
    fn during_and_after(conn: &Connection, setting: i64) -> (i64, i64) {
        conn.execute_batch(&format!("PRAGMA cache_size = {setting}"))
            .expect("set");
        let during = {
            let _cache = BatchCache::raise(conn).expect("raise");
            cache_size(conn)
        };
        (during, cache_size(conn))
    }

    #[test]
    fn raises_a_smaller_cache_for_its_life_and_restores_it() {
        let conn = Connection::open_in_memory().expect("open");
        assert_eq!(during_and_after(&conn, 100), (-BATCH_CACHE_KIB, 100));
    }

    #[test]
    fn counts_a_setting_in_pages_at_the_database_page_size() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("PRAGMA page_size = 8192")
            .expect("page size");
        // 1,000 pages of 8 KiB: more than the batch cache, left alone.
        assert_eq!(during_and_after(&conn, 1000), (1000, 1000));
        // 400 pages of 8 KiB: less, raised and then restored.
        assert_eq!(during_and_after(&conn, 400), (-BATCH_CACHE_KIB, 400));
    }

    #[test]
    fn leaves_a_larger_cache_alone() {
        let conn = Connection::open_in_memory().expect("open");
        assert_eq!(during_and_after(&conn, -65536), (-65536, -65536));
    }
}
