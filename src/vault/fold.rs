//! Folded read records: a process reading a file gets one `read` record per growing run or
//! per chunk it first touches, instead of one per request.
//!
//! - **Sequential reads**: a record covers from its read on, doubling each time the reader
//!   keeps going (up to [`MAX_FOLD`]), so a 1 GiB `cat` in 128 KiB requests writes about 25
//!   read records instead of 8 192.
//! - **Random reads**: a record covers the whole chunks the read falls in (the unit smpfs
//!   decrypts), and later reads by the same process through the same handle that fall in
//!   chunks already recorded write nothing more.
//!
//! Every record is written before the first byte it covers is returned. A record that
//! reaches past its own read says so (`"folded": true`); the handle's `release` record gives
//! the bytes actually returned. Each reader (process or thread id) of a handle has its own
//! coverage, so a second reader through the same handle gets records of its own.

/// Longest range one folded record covers.
pub const MAX_FOLD: u64 = 64 << 20;

/// Readers of one handle whose coverage is remembered; a further reader evicts the one
/// that read least recently.
const MAX_READERS: usize = 8;

/// Largest number of chunks whose coverage a reader remembers (a 128 KiB bitmap, a 64 GiB
/// file at 64 KiB chunks). Beyond it, chunks are not remembered: each random read there
/// gets a record of its own, which is never less faithful, only longer.
const MAX_TRACKED_CHUNKS: u64 = 1 << 20;

/// What the read records written so far for one handle cover, per reader.
#[derive(Debug)]
pub struct Announced {
    /// Bytes per chunk of the file: the unit a random read's record covers.
    unit: u64,
    /// Most recent reader last.
    readers: Vec<Reader>,
}

/// One reader's coverage: its current sequential run and the chunks recorded for it.
#[derive(Debug)]
struct Reader {
    pid: u32,
    start: u64,
    end: u64,
    window: u64,
    /// Bit `i` set: chunk `i` lies wholly inside a range already recorded for this reader.
    chunks: Vec<u64>,
}

impl Reader {
    fn chunk_recorded(&self, index: u64) -> bool {
        let word = (index / 64) as usize;
        self.chunks
            .get(word)
            .is_some_and(|bits| bits & (1 << (index % 64)) != 0)
    }

    /// Marks every chunk of `unit` bytes that lies wholly inside `[start, end)` (the last,
    /// short chunk of a file of `size` bytes counts when the range reaches the end).
    fn mark(&mut self, start: u64, end: u64, unit: u64, size: u64) {
        let first = start.div_ceil(unit);
        let last = if end >= size {
            size.div_ceil(unit)
        } else {
            end / unit
        }
        .min(MAX_TRACKED_CHUNKS);
        for index in first..last {
            let word = (index / 64) as usize;
            if self.chunks.len() <= word {
                self.chunks.resize(word + 1, 0);
            }
            self.chunks[word] |= 1 << (index % 64);
        }
    }
}

impl Announced {
    /// Coverage for a file whose chunks hold `unit` plaintext bytes (at least 1).
    pub fn new(unit: u64) -> Self {
        Announced {
            unit: unit.max(1),
            readers: Vec::new(),
        }
    }

    /// For a read by `pid` that returned `len` bytes at `offset` of a file of `size` bytes:
    /// `None` if a record already written covers it, else the range `(offset, length)` the
    /// record to write now must cover (at least the read; more when it continues a run or
    /// the read does not fill its chunks), which counts as covered from then on. The caller
    /// must write that record before returning the read, and before anyone else asks (hold
    /// the lock around this across the write), or forget the coverage with
    /// [`Announced::forget`] if it cannot.
    pub fn record_for(&mut self, pid: u32, offset: u64, len: u64, size: u64) -> Option<(u64, u64)> {
        let unit = self.unit;
        let reader = self.reader(pid);
        let end = offset + len;
        if offset >= reader.start && end <= reader.end && reader.end > reader.start {
            return None;
        }
        if len > 0 && end <= size {
            let (first, last) = (offset / unit, (end - 1) / unit);
            if (first..=last).all(|index| reader.chunk_recorded(index)) {
                return None;
            }
        }
        let continues = reader.end > reader.start && offset >= reader.start && offset <= reader.end;
        let (start, length, window) = if continues {
            let window = (reader.window * 2).clamp(len, MAX_FOLD.max(len));
            (
                offset,
                window.min(size.saturating_sub(offset)).max(len),
                window,
            )
        } else if len == 0 {
            (offset, 0, 0)
        } else {
            let start = offset / unit * unit;
            let length = (end.div_ceil(unit) * unit).min(size).max(end) - start;
            (start, length, length)
        };
        reader.start = start;
        reader.end = start + length;
        reader.window = window;
        reader.mark(start, start + length, unit, size);
        Some((start, length))
    }

    /// Drops all coverage: the record [`Announced::record_for`] asked for was not written.
    pub fn forget(&mut self) {
        self.readers.clear();
    }

    /// `pid`'s coverage, made the most recent; a new reader starts with none.
    fn reader(&mut self, pid: u32) -> &mut Reader {
        match self.readers.iter().position(|r| r.pid == pid) {
            Some(at) => {
                let reader = self.readers.remove(at);
                self.readers.push(reader);
            }
            None => {
                if self.readers.len() == MAX_READERS {
                    self.readers.remove(0);
                }
                self.readers.push(Reader {
                    pid,
                    start: 0,
                    end: 0,
                    window: 0,
                    chunks: Vec::new(),
                });
            }
        }
        self.readers.last_mut().expect("just pushed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CHUNK: u64 = 64 << 10;

    #[test]
    fn a_sequential_reader_gets_few_records_each_written_before_its_bytes() {
        let size = 1u64 << 30;
        let read = 128u64 << 10;
        let mut announced = Announced::new(CHUNK);
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
    fn random_reads_record_their_chunks_once_per_reader() {
        let size = 10 << 20;
        let mut announced = Announced::new(CHUNK);
        // A read inside chunk 3: the record covers chunk 3.
        assert_eq!(
            announced.record_for(1, 3 * CHUNK + 100, 4096, size),
            Some((3 * CHUNK, CHUNK))
        );
        // Elsewhere, then back in chunk 3: nothing new to record.
        assert_eq!(
            announced.record_for(1, 9 * CHUNK, 4096, size),
            Some((9 * CHUNK, CHUNK))
        );
        assert_eq!(announced.record_for(1, 3 * CHUNK + 8192, 4096, size), None);
        // A read across chunks 4 and 5: both, in one record.
        assert_eq!(
            announced.record_for(1, 5 * CHUNK - 10, 20, size),
            Some((4 * CHUNK, 2 * CHUNK))
        );
        // Another process through the same handle: its own records.
        assert_eq!(
            announced.record_for(2, 3 * CHUNK, 4096, size),
            Some((3 * CHUNK, CHUNK))
        );
        assert_eq!(announced.record_for(1, 4 * CHUNK + 7, 4096, size), None);
        // Near the end, a record never reaches past the file.
        let short = 3 * CHUNK + 100;
        assert_eq!(
            announced.record_for(3, 3 * CHUNK, 50, short),
            Some((3 * CHUNK, 100))
        );
        assert_eq!(announced.record_for(3, 3 * CHUNK + 60, 40, short), None);
        // A zero-byte read (at EOF) is recorded too.
        let mut fresh = Announced::new(CHUNK);
        assert_eq!(fresh.record_for(3, 100, 0, 100), Some((100, 0)));
        // Forgotten coverage is recorded again.
        announced.forget();
        assert_eq!(
            announced.record_for(1, 3 * CHUNK, 4096, size),
            Some((3 * CHUNK, CHUNK))
        );
    }

    #[test]
    fn a_ninth_reader_evicts_the_least_recent() {
        let size = 1 << 20;
        let mut announced = Announced::new(CHUNK);
        for pid in 0..=MAX_READERS as u32 {
            assert!(announced.record_for(pid, 0, 10, size).is_some());
        }
        assert!(announced
            .record_for(MAX_READERS as u32, 5, 10, size)
            .is_none());
        assert!(announced.record_for(0, 5, 10, size).is_some(), "evicted");
    }

    proptest! {
        /// Whatever the readers and reads, every byte returned lies in a range recorded
        /// earlier for the same reader.
        #[test]
        fn every_byte_returned_was_recorded_for_its_reader(
            size in 1u64..(2 << 20),
            unit_log2 in 12u32..=16,
            reads in proptest::collection::vec((0u32..3, 0u64..(2 << 20), 0u64..(300 << 10)), 1..200),
        ) {
            let unit = 1u64 << unit_log2;
            let mut announced = Announced::new(unit);
            let mut recorded: Vec<(u32, u64, u64)> = Vec::new();
            for (pid, offset, len) in reads {
                let offset = offset % size;
                let len = len.min(size - offset);
                if let Some((start, length)) = announced.record_for(pid, offset, len, size) {
                    prop_assert!(start <= offset && offset + len <= start + length);
                    prop_assert!(start + length <= size);
                    recorded.push((pid, start, start + length));
                }
                let mut mine: Vec<_> = recorded.iter().filter(|r| r.0 == pid).collect();
                mine.sort_by_key(|r| r.1);
                let mut reached = offset;
                for &&(_, start, end) in &mine {
                    if start <= reached {
                        reached = reached.max(end);
                    }
                }
                let covered = len == 0 || reached >= offset + len;
                prop_assert!(covered, "pid {} read {}+{} unrecorded", pid, offset, len);
            }
        }
    }
}
