//! What one batch writes to SQLite's write-ahead log, read off the log file
//! and off Linux's I/O counters for the calling thread. Shared by the tests
//! and `examples/bench_report.rs`.
#![allow(dead_code)]

/// What the calling thread has written, where Linux tells
/// (`/proc/thread-self/io`): bytes passed to `write` and its kin (`wchar`),
/// and how many such calls (`syscw`).
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub bytes: u64,
    pub calls: u64,
}

impl Written {
    pub fn now() -> Option<Written> {
        let io = std::fs::read_to_string("/proc/thread-self/io").ok()?;
        let field = |name: &str| -> Option<u64> {
            io.lines()
                .find_map(|l| l.strip_prefix(name))?
                .trim()
                .parse()
                .ok()
        };
        Some(Written {
            bytes: field("wchar:")?,
            calls: field("syscw:")?,
        })
    }

    /// What was written between `before` and `self`.
    pub fn since(self, before: Written) -> Written {
        Written {
            bytes: self.bytes - before.bytes,
            calls: self.calls - before.calls,
        }
    }
}

/// One batch's log: frames, the distinct pages among them, its size, and
/// how many page writes went over a page the batch had already written (a
/// page written three times counts twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalBatch {
    pub frames: usize,
    pub distinct_pages: usize,
    pub bytes: usize,
    pub pages_written_again: i64,
}

impl WalBatch {
    /// Reads a log that held nothing before the batch (`wal`, the file's
    /// bytes), given what the batch's thread wrote meanwhile, with no
    /// checkpoint in between.
    ///
    /// SQLite's WAL format: a 32-byte header holding the page size at bytes
    /// 8..12, then frames of a 24-byte header, page number first, and a
    /// page. SQLite writes the header once, then each new frame in two
    /// calls, its header and its page. A page the cache spilled before the
    /// commit and the batch changed again is written over its frame: one
    /// more call of a page's bytes, and once any is, the commit rewrites
    /// the checksums of the frames after it, one 24-byte call each. So the
    /// calls and bytes beyond a plain append of the frames are
    /// `again + headers` and `again × page + headers × 24`, which gives
    /// `again`; a page appended twice adds frames beyond the distinct pages.
    pub fn read(wal: &[u8], written: Written) -> Option<WalBatch> {
        let page_size = u32::from_be_bytes(wal.get(8..12)?.try_into().ok()?) as usize;
        let frame = 24 + page_size;
        let mut pages = std::collections::HashSet::new();
        let mut frames = 0;
        for start in (32..wal.len()).step_by(frame) {
            let page = wal.get(start..start + 4)?;
            // A frame of zeros past the end of what this batch wrote.
            if page == [0, 0, 0, 0] {
                break;
            }
            frames += 1;
            pages.insert(page.to_vec());
        }
        let extra_bytes = written.bytes as i64 - wal.len() as i64;
        let extra_calls = written.calls as i64 - (1 + 2 * frames as i64);
        let per_page = page_size as i64 - 24;
        // Rounded: a stray small write moves this by a fraction, not a page.
        let over_frames = (extra_bytes - 24 * extra_calls + per_page / 2).div_euclid(per_page);
        Some(WalBatch {
            frames,
            distinct_pages: pages.len(),
            bytes: wal.len(),
            pages_written_again: over_frames + (frames - pages.len()) as i64,
        })
    }
}
