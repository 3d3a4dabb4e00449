//! A remote backend behind a ciphertext disk cache ([`crate::diskcache`]): reads of a
//! version the cache holds are served from disk, the others go to the store and are kept.
//!
//! A read is cached only when its bytes are pinned to one version: the ETag or Drive
//! revision the backend pinned from its listing ([`Backend::version`]), or, in a
//! zero-knowledge bucket, an object under a random name the layout never rewrites (files,
//! detached headers, manifest segments; never the head hint). An object replaced in the
//! store has another version (or, in a v2 bucket, another name), so it is fetched again.

use std::sync::Arc;

use rayon::prelude::*;

use super::{Arrival, Backend, BackendError, ObjectInfo, ObjectWriter, ReadProfile};
use crate::diskcache::DiskCache;

/// The version the layout itself guarantees for v2 objects: their names are never reused.
const WRITTEN_ONCE: &str = "written-once";

/// `inner` with its reads cached in `cache`.
pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    cache: Arc<DiskCache>,
}

impl CachedBackend {
    /// Wraps `inner`; `cache` must be held by this mount alone.
    pub fn new(inner: Arc<dyn Backend>, cache: Arc<DiskCache>) -> CachedBackend {
        CachedBackend { inner, cache }
    }

    /// The version a read of `key` is cached under, if it may be cached.
    fn cache_version(&self, key: &str) -> Option<String> {
        self.inner.version(key).or_else(|| {
            (crate::bucket::is_v2_object(key) && key != crate::bucket::HEAD_KEY)
                .then(|| WRITTEN_ONCE.to_owned())
        })
    }

    fn read_through(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
        fetch: impl FnOnce(&mut [&mut [u8]]) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let Some(version) = self.cache_version(key) else {
            return fetch(bufs);
        };
        if self.cache.read(key, &version, offset, bufs) {
            return Ok(());
        }
        tracing::debug!(key, offset, "disk cache miss");
        fetch(bufs)?;
        self.cache.write(key, &version, offset, bufs);
        Ok(())
    }
}

impl Backend for CachedBackend {
    fn list(&self) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list()
    }

    fn read_range(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
    ) -> Result<(), BackendError> {
        self.read_through(key, offset, bufs, |bufs| {
            self.inner.read_range(key, offset, bufs)
        })
    }

    /// Served from the cache, each buffer handed to `arrival` from the bytes as read (see
    /// [`DiskCache::read_each`]); or, on a miss, read in place from the store (the cache
    /// needs the ciphertext in `bufs`), stored, and every buffer then completed in place,
    /// in parallel, so that no buffer keeps an outcome of the failed attempt.
    fn read_range_arriving(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
        arrival: &dyn Arrival,
    ) -> Result<(), BackendError> {
        let Some(version) = self.cache_version(key) else {
            return self.inner.read_range_arriving(key, offset, bufs, arrival);
        };
        let complete =
            |index: usize, bytes: &[u8], buf: &mut [u8]| arrival.complete(index, Some(bytes), buf);
        if self.cache.read_each(key, &version, offset, bufs, complete) {
            return Ok(());
        }
        tracing::debug!(key, offset, "disk cache miss");
        self.inner.read_range(key, offset, bufs)?;
        self.cache.write(key, &version, offset, bufs);
        bufs.par_iter_mut()
            .enumerate()
            .for_each(|(index, buf)| arrival.complete(index, None, buf));
        Ok(())
    }

    fn stat(&self, key: &str) -> Result<Option<u64>, BackendError> {
        self.inner.stat(key)
    }

    fn create(&self, key: &str, overwrite: bool) -> Result<Box<dyn ObjectWriter>, BackendError> {
        self.inner.create(key, overwrite)
    }

    fn create_sized(
        &self,
        key: &str,
        overwrite: bool,
        len: u64,
    ) -> Result<Box<dyn ObjectWriter>, BackendError> {
        self.inner.create_sized(key, overwrite, len)
    }

    fn location(&self, key: &str) -> Result<String, BackendError> {
        self.inner.location(key)
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.inner.delete(key)
    }

    fn version(&self, key: &str) -> Option<String> {
        self.inner.version(key)
    }

    fn read_profile(&self) -> ReadProfile {
        self.inner.read_profile()
    }

    fn describe(&self) -> String {
        format!(
            "{} (disk cache {})",
            self.inner.describe(),
            self.cache.dir().display()
        )
    }
}
