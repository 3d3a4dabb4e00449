//! The fuser adapter: turns FUSE requests into [`Vault`] calls and vault errors into errno
//! values, logging each failure once. No filesystem logic lives here. GPU ioctls are
//! decoded with [`crate::gpu::abi`] and answered from a load thread.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs,
    ReplyXattr, Request,
};

use crate::gpu::abi::{self, Command, Detail};
use crate::gpu::GpuError;
use crate::vault::{Attr, Caller, Vault, VaultError};

/// How long the kernel may cache names and attributes (the tree is fixed per mount).
const TTL: Duration = Duration::from_secs(60);
/// The block size `statfs` counts in.
const STATFS_BLOCK: u32 = 4096;

/// Answers an xattr request for `value`: its size when asked with `size` 0, ERANGE when
/// `size` is too small, else the value.
fn reply_sized(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

/// Whether a FUSE session that failed with `error` in fact ended with its unmount.
///
/// With several request threads, one may take a last request (a release, a forget) just
/// as the kernel closes the connection after an unmount, and get ECONNABORTED instead of
/// the ENODEV that fuser treats as the end. The mountpoint tells the two apart: an abort
/// under a live mount (`/sys/fs/fuse/connections/N/abort`) leaves the mount in place,
/// answering ENOTCONN, while after an unmount the directory beneath answers again.
pub fn ended_with_unmount(error: &std::io::Error, mountpoint: &Path) -> bool {
    error.raw_os_error() == Some(libc::ECONNABORTED)
        && !matches!(
            std::fs::metadata(mountpoint),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN)
        )
}

/// Directory entries fetched from the vault at a time while filling one readdir reply.
const READDIR_PAGE: usize = 128;

/// Mount-wide settings the adapter applies to every reply.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// Let the kernel page cache keep plaintext (`-o kernel_cache`); off by default.
    pub kernel_cache: bool,
    /// Owner shown for every inode.
    pub uid: u32,
    /// Group shown for every inode.
    pub gid: u32,
    /// Bits cleared from the 0444/0555 permissions.
    pub umask: u16,
    /// Largest read the kernel may send, in bytes.
    pub max_read: u32,
}

/// The filesystem handed to fuser.
pub struct SmpFs {
    vault: Arc<Vault>,
    options: FsOptions,
    mounted_at: SystemTime,
}

impl SmpFs {
    /// Wraps a vault for mounting.
    pub fn new(vault: Arc<Vault>, options: FsOptions) -> Self {
        SmpFs {
            vault,
            options,
            mounted_at: SystemTime::now(),
        }
    }

    /// Hands the entries of directory `ino` after `offset` to `add`, each with its
    /// offset, until `add` reports the reply full. Offsets: 1 is `.`, 2 is `..`, and an
    /// entry's is its inode + 2, so the next call continues after it in O(log n) however
    /// large the directory.
    fn list(
        &self,
        ino: u64,
        offset: u64,
        caller: Caller,
        mut add: impl FnMut(Attr, u64, &str) -> bool,
    ) -> Result<(), VaultError> {
        let parent = self.vault.parent(ino).unwrap_or(ino);
        for (dot_offset, dot_ino, name) in [(1, ino, "."), (2, parent, "..")] {
            let dir = Attr {
                ino: dot_ino,
                is_dir: true,
                size: 0,
            };
            if offset < dot_offset && add(dir, dot_offset, name) {
                return Ok(());
            }
        }
        let mut after = offset.checked_sub(2).filter(|&ino| ino > 0);
        loop {
            let page = self.vault.readdir(ino, after, READDIR_PAGE, caller)?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.attr.ino);
            for entry in &page {
                if add(entry.attr, entry.attr.ino + 2, &entry.name) {
                    return Ok(());
                }
            }
        }
    }

    fn file_attr(&self, attr: Attr) -> FileAttr {
        let (kind, perm, nlink) = if attr.is_dir {
            (FileType::Directory, 0o555 & !self.options.umask, 2)
        } else {
            (FileType::RegularFile, 0o444 & !self.options.umask, 1)
        };
        FileAttr {
            ino: INodeNo(attr.ino),
            size: attr.size,
            blocks: attr.size.div_ceil(512),
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind,
            perm,
            nlink,
            uid: self.options.uid,
            gid: self.options.gid,
            rdev: 0,
            blksize: 1 << 16,
            flags: 0,
        }
    }
}

/// The one place vault errors become errno values (and, for GPU loads, ABI detail codes).
fn errno(error: &VaultError) -> Errno {
    use crate::format::FormatError;
    match error {
        VaultError::NotFound => Errno::ENOENT,
        VaultError::NotADirectory => Errno::ENOTDIR,
        VaultError::IsADirectory => Errno::EISDIR,
        VaultError::BadHandle => Errno::EBADF,
        VaultError::Purged | VaultError::NoPurpose => Errno::EACCES,
        VaultError::Format {
            source: FormatError::NoMatchingRecipient,
            ..
        } => Errno::EACCES,
        VaultError::Format { .. }
        | VaultError::PathMismatch { .. }
        | VaultError::SizeMismatch { .. }
        | VaultError::ManifestMismatch { .. }
        | VaultError::Backend(_)
        | VaultError::Bucket(_)
        | VaultError::Cache(_)
        | VaultError::Audit(_)
        | VaultError::Volume(_) => Errno::EIO,
        VaultError::PastEof { .. } | VaultError::NotSealed => Errno::EINVAL,
        VaultError::Interrupted => Errno::EINTR,
        VaultError::Gpu(gpu) => match gpu {
            GpuError::AbiVersion { .. }
            | GpuError::BadArgument(_)
            | GpuError::Overflow { .. }
            | GpuError::DestinationTooSmall { .. }
            | GpuError::BadHandle(_) => Errno::EINVAL,
            GpuError::NoDriver(_) | GpuError::BadDevice { .. } => Errno::ENODEV,
            GpuError::Device { .. } => Errno::EIO,
            GpuError::Staging(_) => Errno::ENOMEM,
        },
    }
}

/// The `error` detail of a failed GPU load (see `docs/GPU.md`).
fn detail(error: &VaultError) -> Detail {
    match error {
        VaultError::BadHandle => Detail::BadFileHandle,
        VaultError::Purged => Detail::Locked,
        VaultError::Format { .. } => Detail::Integrity,
        VaultError::Audit(_) | VaultError::NoPurpose => Detail::Audit,
        VaultError::PastEof { .. } => Detail::PastEof,
        VaultError::NotSealed => Detail::BadArgument,
        VaultError::NotFound
        | VaultError::NotADirectory
        | VaultError::IsADirectory
        | VaultError::PathMismatch { .. }
        | VaultError::SizeMismatch { .. }
        | VaultError::ManifestMismatch { .. }
        | VaultError::Backend(_)
        | VaultError::Bucket(_)
        | VaultError::Cache(_)
        | VaultError::Volume(_)
        | VaultError::Interrupted => Detail::Io,
        VaultError::Gpu(gpu) => match gpu {
            GpuError::AbiVersion { .. } => Detail::AbiVersion,
            GpuError::BadArgument(_) => Detail::BadArgument,
            GpuError::Overflow { .. } => Detail::Overflow,
            GpuError::DestinationTooSmall { .. } => Detail::DestinationTooSmall,
            GpuError::BadHandle(_) => Detail::BadHandle,
            GpuError::NoDriver(_) => Detail::NoDriver,
            GpuError::BadDevice { .. } => Detail::BadDevice,
            GpuError::Device { .. } => Detail::Device,
            GpuError::Staging(_) => Detail::NoMemory,
        },
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

/// Logs a failed request once, at a level that fits, and returns its errno.
fn fail(op: &str, req: &Request, error: &VaultError) -> Errno {
    fail_for(op, caller(req), error)
}

/// [`fail`] for a request answered away from its `Request` (on a load thread).
fn fail_for(op: &str, caller: Caller, error: &VaultError) -> Errno {
    let code = errno(error);
    match error {
        VaultError::NotFound => tracing::debug!(op, "{error}"),
        _ => tracing::error!(
            op,
            pid = caller.pid,
            uid = caller.uid,
            errno = %std::io::Error::from_raw_os_error(code.code()),
            "{error}"
        ),
    }
    code
}

/// Answers a load ioctl: the request echoed with its out fields, and `-errno` on failure
/// (the kernel copies the struct back either way, so the caller sees the detail).
fn reply_load(reply: ReplyIoctl, request: &[u8], result: Result<u64, VaultError>, caller: Caller) {
    match result {
        Ok(n) => reply.ioctl(0, &abi::load_reply(request, n, Detail::None)),
        Err(e) => {
            let code = fail_for("gpu_load", caller, &e);
            reply.ioctl(-code.code(), &abi::load_reply(request, 0, detail(&e)));
        }
    }
}

impl Filesystem for SmpFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(nearest) = config.set_max_readahead(self.options.max_read) {
            let _ = config.set_max_readahead(nearest);
        }
        // max_pages (the largest request) follows max_write; the mount is read-only.
        if let Err(nearest) = config.set_max_write(self.options.max_read) {
            let _ = config.set_max_write(nearest);
        }
        if config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS)
            .is_err()
        {
            tracing::debug!("this kernel lists without attributes: each open looks its file up");
        }
        // Shared mappings of direct-I/O files (numpy.memmap, safetensors, Arrow): the
        // mapped pages go through the page cache, which lock and purge invalidate.
        if config
            .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_err()
        {
            tracing::warn!(
                "this kernel cannot map direct-I/O files (Linux 6.6 or later can): shared \
                 mappings of files here fail with ENODEV"
            );
        }
        tracing::info!("mounted {}", self.vault.describe());
        Ok(())
    }

    fn destroy(&mut self) {
        let bytes = self.vault.unmount();
        tracing::info!(
            bytes_zeroized = bytes,
            "unmounted; cache zeroized and keys dropped"
        );
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.vault.touch();
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        match self.vault.lookup(parent.0, name, caller(req)) {
            Ok(attr) => reply.entry(&TTL, &self.file_attr(attr), Generation(0)),
            Err(e) => reply.error(fail("lookup", req, &e)),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.vault.touch();
        match self.vault.getattr(ino.0, caller(req)) {
            Ok(attr) => reply.attr(&TTL, &self.file_attr(attr)),
            Err(e) => reply.error(fail("getattr", req, &e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.vault.touch();
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.vault.open(ino.0, caller(req)) {
            Ok(fh) => {
                let open_flags = if self.options.kernel_cache {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::FOPEN_DIRECT_IO
                };
                reply.opened(FileHandle(fh), open_flags)
            }
            Err(e) => reply.error(fail("open", req, &e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.vault.touch();
        let cache = self.vault.cache();
        let mut buf = cache.reply_buffer();
        let len = (size as usize).min(cache.reply_len());
        match self
            .vault
            .read(fh.0, offset, buf.prefix_mut(len), caller(req))
        {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(fail("read", req, &e)),
        }
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.vault.release(fh.0, caller(req));
        reply.ok();
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.vault.touch();
        let listed = self.list(ino.0, offset, caller(req), |attr, next, name| {
            let kind = self.file_attr(attr).kind;
            reply.add(INodeNo(attr.ino), next, kind, name)
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail("readdir", req, &e)),
        }
    }

    /// Listings with attributes (`FUSE_DO_READDIRPLUS`): the kernel caches each entry's
    /// name and attributes as a lookup would, so opening a file just listed costs no
    /// LOOKUP round trip (`find | xargs cat`, `ls` then open, a series loader).
    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.vault.touch();
        let listed = self.list(ino.0, offset, caller(req), |attr, next, name| {
            let attr = self.file_attr(attr);
            reply.add(attr.ino, next, name, &TTL, &attr, Generation(0))
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail("readdirplus", req, &e)),
        }
    }

    /// Nothing to flush on a read-only mount. ENOSYS makes the kernel stop sending FLUSH
    /// (close then succeeds at once), which saves a round trip on every close.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let value = match self.vault.xattrs(ino.0, caller(req)) {
            Ok(xattrs) => xattrs
                .into_iter()
                .find(|(key, _)| OsStr::new(key) == name)
                .map(|(_, value)| value),
            Err(e) => return reply.error(fail("getxattr", req, &e)),
        };
        match value {
            Some(value) => reply_sized(reply, size, value.as_bytes()),
            None => reply.error(Errno::ENODATA),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.vault.xattrs(ino.0, caller(req)) {
            Ok(xattrs) => {
                let names: Vec<u8> = xattrs
                    .iter()
                    .flat_map(|(key, _)| key.bytes().chain([0]))
                    .collect();
                reply_sized(reply, size, &names)
            }
            Err(e) => reply.error(fail("listxattr", req, &e)),
        }
    }

    fn ioctl(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        self.vault.touch();
        let command =
            Command::from_raw(cmd).filter(|_| !flags.contains(IoctlFlags::FUSE_IOCTL_DIR));
        match command {
            // The kernel tells the caller ENOTTY.
            None => reply.error(Errno::ENOSYS),
            Some(Command::Info) => match self.vault.file_info(fh.0, caller(req)) {
                Ok(info) => {
                    let info = abi::Info {
                        plaintext_size: info.size,
                        chunk_size: info.chunk_size,
                        file_id: info.file_id,
                        volume: info.volume,
                    };
                    reply.ioctl(0, &info.encode())
                }
                Err(e) => reply.error(fail("gpu_info", req, &e)),
            },
            Some(Command::Load) => {
                let caller = caller(req);
                let request = in_data.to_vec();
                let load = match abi::parse_load(in_data) {
                    Ok(load) => load,
                    Err(e) => return reply_load(reply, &request, Err(e.into()), caller),
                };
                let vault = Arc::clone(&self.vault);
                self.vault.gpu().spawn(move || {
                    let result = vault.gpu_load(fh.0, &load, caller);
                    reply_load(reply, &request, result, caller);
                });
            }
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (bytes, files) = self.vault.usage();
        let block = STATFS_BLOCK as u64;
        reply.statfs(
            bytes.div_ceil(block),
            0,
            0,
            files,
            0,
            STATFS_BLOCK,
            crate::backend::MAX_COMPONENT_LEN as u32,
            STATFS_BLOCK,
        );
    }
}
