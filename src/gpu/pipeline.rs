//! The load pipeline: a pool of locked staging buffers, the [`Transfer`] that streams
//! plaintext through them into a destination, and the threads loads run on.
//!
//! A transfer owns a set of two staging buffers. Plaintext pushed into it fills the current
//! buffer; a full buffer is handed to an asynchronous copy and filling moves to the other
//! buffer, after waiting for that buffer's previous copy. So while one buffer is being
//! copied to the device, the caller decrypts and stages the next bytes.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};

use parking_lot::{Condvar, Mutex};
use zeroize::Zeroize;

use super::{sink, Destination, DeviceSink, GpuError, SinkKind, Target};
use crate::cache::{LockedBuf, LockedRegion};
use crate::workers::Workers;

/// Bytes of one staging buffer.
pub const STAGING_BUF_LEN: usize = 4 << 20;
/// Loads that run at the same time (one thread and one staging set each).
pub const LOADERS: usize = 2;

/// Two staging buffers: one is filled while the other is copied.
type StagingSet = [LockedBuf; 2];

/// The staging sets, allocated and locked on the first load.
#[derive(Default)]
struct Pool {
    region: Option<Arc<LockedRegion>>,
    free: Vec<StagingSet>,
}

/// Runs a mount's GPU loads: owns the sink, the staging memory and the load threads.
pub struct Loader {
    sink: Box<dyn DeviceSink>,
    pool: Mutex<Pool>,
    returned: Condvar,
    workers: OnceLock<Workers>,
}

impl Loader {
    /// A loader into `kind`'s sink. Allocates nothing and touches no driver until the first
    /// load.
    pub fn new(kind: SinkKind) -> Self {
        Loader {
            sink: sink(kind),
            pool: Mutex::new(Pool::default()),
            returned: Condvar::new(),
            workers: OnceLock::new(),
        }
    }

    /// The sink's name (`cuda`, `host`), for logs and audit records.
    pub fn sink_name(&self) -> &'static str {
        self.sink.name()
    }

    /// Runs `job` on one of the [`LOADERS`] load threads, which start on first use. A job
    /// that panics is dropped (its captured reply then answers EIO); the thread lives on.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let workers = self
            .workers
            .get_or_init(|| Workers::new(LOADERS, "smpfs-gpu", 0));
        workers.spawn(move || {
            if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                tracing::error!("a GPU load panicked; its request was answered with EIO");
            }
        });
    }

    /// Opens `target` for `length` bytes on behalf of user `uid` and takes a staging set
    /// (waiting while all are in use). Nothing is copied yet.
    pub fn begin(&self, target: &Target, length: u64, uid: u32) -> Result<Transfer<'_>, GpuError> {
        let (region, set) = self.take_set()?;
        let mut transfer = Transfer {
            loader: self,
            destination: None,
            set: Some(set),
            slot: 0,
            filled: 0,
            in_flight: [false; 2],
            used: [0; 2],
            sent: 0,
            length,
        };
        transfer.destination = Some(self.sink.open(target, length, uid, &region)?);
        Ok(transfer)
    }

    fn take_set(&self) -> Result<(Arc<LockedRegion>, StagingSet), GpuError> {
        let mut pool = self.pool.lock();
        if pool.region.is_none() {
            let region = Arc::new(LockedRegion::new(LOADERS * 2 * STAGING_BUF_LEN)?);
            let mut bufs = LockedRegion::carve(&region, STAGING_BUF_LEN, 2 * LOADERS, 0, 0);
            while let (Some(a), Some(b)) = (bufs.pop(), bufs.pop()) {
                pool.free.push([a, b]);
            }
            pool.region = Some(region);
        }
        loop {
            if let Some(set) = pool.free.pop() {
                let region = Arc::clone(pool.region.as_ref().expect("allocated above"));
                return Ok((region, set));
            }
            self.returned.wait(&mut pool);
        }
    }

    fn give_back(&self, set: StagingSet) {
        self.pool.lock().free.push(set);
        self.returned.notify_one();
    }

    /// Zeroizes every staging set not in use (those in use are zeroized when their load
    /// ends); returns the bytes zeroized.
    pub fn purge(&self) -> usize {
        let mut pool = self.pool.lock();
        let mut bytes = 0;
        for buf in pool.free.iter_mut().flatten() {
            buf.zeroize();
            bytes += buf.len();
        }
        bytes
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        if let Some(region) = &self.pool.get_mut().region {
            self.sink.release(region);
        }
    }
}

/// One load in progress: plaintext pushed in order is staged and copied to the
/// destination. Dropping it unfinished waits for the copies in flight; either way its
/// staging set is zeroized and returned.
pub struct Transfer<'a> {
    loader: &'a Loader,
    /// `None` only while [`Loader::begin`] opens it.
    destination: Option<Box<dyn Destination>>,
    /// `None` once returned to the pool.
    set: Option<StagingSet>,
    /// The buffer being filled.
    slot: usize,
    /// Bytes staged in it.
    filled: usize,
    /// Whether a copy out of each buffer may still be running.
    in_flight: [bool; 2],
    /// How much of each buffer held plaintext, for zeroizing.
    used: [usize; 2],
    /// Bytes handed to copies so far (their destination offset grows with it).
    sent: u64,
    /// Bytes the destination was checked to hold.
    length: u64,
}

impl Transfer<'_> {
    /// Appends `bytes` (the next plaintext of the range); copies every buffer that fills up.
    /// Fails, copying nothing more, if the load would exceed its length.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), GpuError> {
        let total = self.sent + self.filled as u64 + bytes.len() as u64;
        if total > self.length {
            return Err(GpuError::BadArgument("more bytes than the load's length"));
        }
        while !bytes.is_empty() {
            let buf = &mut self.set.as_mut().expect("present until drop")[self.slot];
            let n = bytes.len().min(buf.len() - self.filled);
            buf[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            self.used[self.slot] = self.used[self.slot].max(self.filled);
            bytes = &bytes[n..];
            if self.filled == buf.len() {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Starts copying the current buffer, then makes the other buffer current once its
    /// previous copy completed.
    fn flush(&mut self) -> Result<(), GpuError> {
        if self.filled == 0 {
            return Ok(());
        }
        let staged = &self.set.as_ref().expect("present until drop")[self.slot][..self.filled];
        let destination = self.destination.as_mut().expect("opened in begin");
        // SAFETY: this buffer is written again only after `wait(slot)` below (once the
        // other buffer filled up) and freed or zeroized only after `finish`.
        unsafe { destination.copy_async(self.slot, staged, self.sent)? };
        self.in_flight[self.slot] = true;
        self.sent += self.filled as u64;
        self.filled = 0;
        self.slot ^= 1;
        if self.in_flight[self.slot] {
            destination.wait(self.slot)?;
            self.in_flight[self.slot] = false;
        }
        Ok(())
    }

    /// Copies what is staged, waits until every copy completed and closes the destination;
    /// returns the bytes loaded.
    pub fn finish(mut self) -> Result<u64, GpuError> {
        self.flush()?;
        self.destination
            .as_mut()
            .expect("opened in begin")
            .finish()?;
        Ok(self.sent)
    }
}

impl Drop for Transfer<'_> {
    fn drop(&mut self) {
        if let Some(destination) = &mut self.destination {
            if let Err(e) = destination.finish() {
                tracing::warn!("closing an unfinished GPU load: {e}");
            }
        }
        if let Some(mut set) = self.set.take() {
            for (buf, used) in set.iter_mut().zip(self.used) {
                buf[..used].zeroize();
            }
            self.loader.give_back(set);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a recording destination saw: (call, slot, offset, bytes).
    type Log = Arc<Mutex<Vec<(&'static str, usize, u64, Vec<u8>)>>>;

    struct Recorder(Log);

    impl Destination for Recorder {
        unsafe fn copy_async(
            &mut self,
            slot: usize,
            src: &[u8],
            offset: u64,
        ) -> Result<(), GpuError> {
            self.0.lock().push(("copy", slot, offset, src.to_vec()));
            Ok(())
        }
        fn wait(&mut self, slot: usize) -> Result<(), GpuError> {
            self.0.lock().push(("wait", slot, 0, Vec::new()));
            Ok(())
        }
        fn finish(&mut self) -> Result<(), GpuError> {
            self.0.lock().push(("finish", 0, 0, Vec::new()));
            Ok(())
        }
    }

    fn transfer<'a>(loader: &'a Loader, length: u64, log: &Log) -> Transfer<'a> {
        let (_, set) = loader.take_set().unwrap();
        Transfer {
            loader,
            destination: Some(Box::new(Recorder(Arc::clone(log)))),
            set: Some(set),
            slot: 0,
            filled: 0,
            in_flight: [false; 2],
            used: [0; 2],
            sent: 0,
            length,
        }
    }

    fn staged_bytes(loader: &Loader) -> usize {
        let pool = loader.pool.lock();
        pool.free
            .iter()
            .flatten()
            .map(|b| b.iter().filter(|&&x| x != 0).count())
            .sum()
    }

    #[test]
    fn buffers_alternate_and_are_reused_only_after_their_copy() {
        let loader = Loader::new(SinkKind::Host);
        let log = Log::default();
        let len = 2 * STAGING_BUF_LEN + 100;
        let data: Vec<u8> = (0..len + 1).map(|i| (i % 251) as u8 + 1).collect();
        let mut t = transfer(&loader, len as u64, &log);
        for piece in data[..len].chunks(65536 + 7) {
            t.push(piece).unwrap();
        }
        assert!(t.push(&data[len..]).is_err(), "past the length");
        assert_eq!(t.finish().unwrap(), len as u64);
        let calls: Vec<(&str, usize, u64)> = log.lock().iter().map(|c| (c.0, c.1, c.2)).collect();
        let buf = STAGING_BUF_LEN as u64;
        assert_eq!(
            calls,
            [
                ("copy", 0, 0),
                ("copy", 1, buf),
                ("wait", 0, 0),
                ("copy", 0, 2 * buf),
                ("wait", 1, 0),
                ("finish", 0, 0),
                ("finish", 0, 0),
            ]
        );
        let copied: Vec<u8> = log.lock().iter().flat_map(|c| c.3.clone()).collect();
        assert_eq!(copied, data[..len]);
        assert_eq!(staged_bytes(&loader), 0, "staging zeroized");
        assert_eq!(loader.pool.lock().free.len(), LOADERS, "set returned");
    }

    #[test]
    fn an_abandoned_transfer_waits_zeroizes_and_returns_its_set() {
        let loader = Loader::new(SinkKind::Host);
        let log = Log::default();
        let mut t = transfer(&loader, 1000, &log);
        t.push(&[9; 500]).unwrap();
        drop(t);
        assert_eq!(log.lock().last().unwrap().0, "finish");
        assert_eq!(staged_bytes(&loader), 0);
        assert_eq!(loader.pool.lock().free.len(), LOADERS);
        assert_eq!(loader.purge(), LOADERS * 2 * STAGING_BUF_LEN);
    }
}
