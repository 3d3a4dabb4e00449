//! Folded read records: a process reading a file sequentially gets one `read` record per
//! growing run instead of one per request. Each record is written before the first byte it
//! covers is returned, and covers from that read on, doubling each time the reader keeps
//! going (up to [`MAX_FOLD`]), so a 1 GiB `cat` in 128 KiB requests writes about 25 read
//! records instead of 8 192. A record that reaches past its own read says so
//! (`"folded": true`); the handle's `release` record gives the bytes actually returned.
//! Random reads, and a new process reading through the handle, start a new run.

/// Longest range one folded record covers.
pub const MAX_FOLD: u64 = 64 << 20;

/// What the read records written so far for one handle cover.
#[derive(Debug, Default)]
pub struct Announced {
    pid: u32,
    start: u64,
    end: u64,
    window: u64,
}

impl Announced {
    /// For a read by `pid` that returned `len` bytes at `offset` of a file of `size` bytes:
    /// `None` if a record already written covers it, else the range `(offset, length)` the
    /// record to write now must cover (at least the read; more when it continues a run),
    /// which counts as covered from then on.
    pub fn record_for(&mut self, pid: u32, offset: u64, len: u64, size: u64) -> Option<(u64, u64)> {
        let same_reader = self.end > self.start && pid == self.pid;
        if same_reader && offset >= self.start && offset + len <= self.end {
            return None;
        }
        let continues = same_reader && offset >= self.start && offset <= self.end;
        let window = if continues {
            (self.window * 2).clamp(len, MAX_FOLD.max(len))
        } else {
            len
        };
        let length = window.min(size.saturating_sub(offset)).max(len);
        *self = Announced {
            pid,
            start: offset,
            end: offset + length,
            window,
        };
        Some((offset, length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequential_reader_gets_few_records_each_written_before_its_bytes() {
        let size = 1u64 << 30;
        let read = 128u64 << 10;
        let mut announced = Announced::default();
        let mut covered_to = 0u64;
        let mut records = 0;
        for offset in (0..size).step_by(read as usize) {
            if let Some((start, length)) = announced.record_for(7, offset, read, size) {
                assert_eq!(start, offset, "a record starts at the read it precedes");
                assert!(length >= read && start + length <= size);
                covered_to = start + length;
                records += 1;
            }
            assert!(
                offset + read <= covered_to,
                "bytes at {offset} returned unrecorded"
            );
        }
        assert!(
            records < 30,
            "{records} records for a sequential 1 GiB read"
        );
    }

    #[test]
    fn random_reads_and_other_readers_start_new_records() {
        let mut announced = Announced::default();
        let size = 10 << 20;
        assert_eq!(announced.record_for(1, 0, 4096, size), Some((0, 4096)));
        assert_eq!(
            announced.record_for(1, 4096, 4096, size),
            Some((4096, 8192))
        );
        assert_eq!(announced.record_for(1, 8192, 4096, size), None);
        // Another process through the same handle: its own record.
        assert_eq!(
            announced.record_for(2, 8192, 4096, size),
            Some((8192, 4096))
        );
        // A jump elsewhere: exactly the read.
        assert_eq!(
            announced.record_for(2, 5 << 20, 4096, size),
            Some((5 << 20, 4096))
        );
        // Near the end, a record never reaches past the file.
        assert_eq!(
            announced.record_for(2, (5 << 20) + 4096, 4096, (5 << 20) + 10_000),
            Some(((5 << 20) + 4096, 10_000 - 4096))
        );
        // A zero-byte read (at EOF) is recorded too.
        let mut fresh = Announced::default();
        assert_eq!(fresh.record_for(3, 100, 0, 100), Some((100, 0)));
    }
}
