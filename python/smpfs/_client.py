"""info, load, load_into and verify: the file-level client of an smpfs mount.

Only the standard library (ctypes); PyTorch or CuPy are imported only to load into their
arrays. The ioctl ABI is docs/GPU.md's; this is the implementation that
integration/gpu/smpfs_gpu.py re-exports.
"""

import ctypes
import errno
import os
import stat
from collections import namedtuple

from ._abi import (
    ABI_VERSION,
    DETAILS,
    DTYPES,
    HANDLE_LEN,
    INFO_VOLUME,
    IOC_INFO,
    IOC_LOAD,
    InfoStruct,
    LoadStruct,
)
from .errors import _EXPLANATIONS, SmpfsError, make_error

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.ioctl.restype = ctypes.c_int

FSTYPE = "fuse.smpfs"


# --- where a path lives -----------------------------------------------------------------


def _unescape(field):
    """A mountinfo field: spaces, tabs, newlines and backslashes are octal escapes."""
    out, i = bytearray(), 0
    while i < len(field):
        if field[i : i + 1] == b"\\" and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8))
            i += 4
        else:
            out += field[i : i + 1]
            i += 1
    return os.fsdecode(bytes(out))


def _mounts():
    """[(mountpoint, fstype, super options)] of this process's mount namespace, in mount
    order."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        fields = line.split(b" ")
        try:
            sep = fields.index(b"-")
        except ValueError:
            continue
        if len(fields) > sep + 3 and len(fields) > 4:
            options = os.fsdecode(fields[sep + 3]).split(",")
            mounts.append((_unescape(fields[4]), os.fsdecode(fields[sep + 1]), options))
    return mounts


def _mount_of(path):
    """(mountpoint, super options) of the smpfs mount `path` lies on, or None."""
    path = os.path.realpath(os.fspath(path))
    best = None
    for mnt, fstype, options in _mounts():
        inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
        # Later mounts over the same or a deeper point hide earlier ones.
        if inside and (best is None or len(mnt) >= len(best[0])):
            best = (mnt, fstype, options)
    if best is not None and best[1] == FSTYPE:
        return best[0], best[2]
    return None


def mountpoint(path):
    """The smpfs mountpoint that `path` lies on, or None if it is on another filesystem.

    Read from /proc/self/mountinfo (the innermost mount containing the path counts); no
    request reaches the daemon."""
    found = _mount_of(path)
    return found[0] if found else None


def _may_read(st):
    """Whether the mode bits let this process read a file with stat `st`."""
    if os.geteuid() == 0:
        return True
    if st.st_uid == os.geteuid():
        return bool(st.st_mode & stat.S_IRUSR)
    if st.st_gid == os.getegid() or st.st_gid in os.getgroups():
        return bool(st.st_mode & stat.S_IRGRP)
    return bool(st.st_mode & stat.S_IROTH)


def _refused_by_daemon(path):
    """Whether an EACCES for `path` came from the smpfs daemon (a locked mount) rather
    than from the kernel's permission checks.

    The kernel refuses a user other than the mounting one on a mount without allow_other,
    and, since smpfs mounts with default_permissions, users whose mode bits deny reading.
    A lock refuses lookups, listings, opens and reads below the root, but the root itself
    still answers stat; every file and directory has the root's owner and the same
    umask-derived read bits. So: this process passes FUSE's check, and the root's mode
    lets it read: the refusal was the daemon's."""
    found = _mount_of(path)
    if found is None:
        return False
    mnt, options = found
    user = next((o[len("user_id="):] for o in options if o.startswith("user_id=")), None)
    if "allow_other" not in options and user is not None and str(os.geteuid()) != user:
        return False
    try:
        return _may_read(os.stat(mnt))
    except OSError:
        return False


def _translate_open(e, path):
    """An OSError of open(2) or stat(2) on `path` as the typed error, where smpfs caused it:
    EACCES from a locked mount is LockedError, EIO IntegrityError."""
    if e.errno == errno.EACCES and _refused_by_daemon(path):
        return make_error(errno.EACCES, "locked", path)
    if e.errno == errno.EIO and mountpoint(path) is not None:
        return make_error(errno.EIO, "integrity", path, _EXPLANATIONS["read_eio"])
    return e


def _translate_read(e, path, offset):
    """An OSError of read(2) on an open smpfs file as the typed error (EACCES: locked,
    since permissions are only checked at open; EIO: the chunk did not authenticate)."""
    if e.errno == errno.EACCES:
        return make_error(errno.EACCES, "locked", path)
    if e.errno == errno.EIO:
        err = make_error(errno.EIO, "integrity", path, _EXPLANATIONS["read_eio"])
        err.offset = offset
        return err
    return e


def _open(path_or_fd):
    """(fd, whether we opened it, name for errors)."""
    if isinstance(path_or_fd, int):
        return path_or_fd, False, f"fd {path_or_fd}"
    path = os.fspath(path_or_fd)
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC), True, path
    except OSError as e:
        raise _translate_open(e, path) from None


# --- the ioctls -------------------------------------------------------------------------


def _ioctl(fd, request, args, name):
    """Runs one ioctl; raises the typed error with the reply's detail on failure."""
    if _libc.ioctl(fd, request, ctypes.byref(args)) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.ENOTTY:
        why = None
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode) and mountpoint(f"/proc/self/fd/{fd}"):
                why = "a directory: smpfs answers its ioctls on regular files only"
        except OSError:
            pass
        raise make_error(err, "not_smpfs", name, why)
    if isinstance(args, LoadStruct):
        detail = DETAILS.get(args.error, "unknown")
    else:
        detail = {
            errno.EACCES: "locked",
            errno.EBADF: "bad_file_handle",
            errno.EINVAL: "not_loadable",
        }.get(err, "unknown")
    raise make_error(err, detail, name)


class Info(namedtuple("Info", "abi_version plaintext_size chunk_size file_id volume dtype shape")):
    """What smpfs says about an open file. For an ordinary file `volume` is False, `dtype`
    0 and `shape` (); for a `.volumes/*.nii` volume, the voxels' type code and shape
    (slices, rows, columns), and `plaintext_size` the voxel bytes."""

    __slots__ = ()

    @property
    def dtype_name(self):
        """The volume's element type as numpy names it ("int16", ...), or None."""
        return DTYPES.get(self.dtype)


def info(path_or_fd):
    """Size, chunk size and file id of a file on an smpfs mount (and its volume shape).

    Raises NotOnSmpfsError for a file elsewhere, LockedError while the mount is locked."""
    fd, close, name = _open(path_or_fd)
    try:
        args = InfoStruct()
        _ioctl(fd, IOC_INFO, args, name)
    finally:
        if close:
            os.close(fd)
    ndim = min(args.ndim, 4)
    return Info(
        abi_version=args.abi_version,
        plaintext_size=args.plaintext_size,
        chunk_size=args.chunk_size,
        file_id=bytes(args.file_id).hex(),
        volume=bool(args.flags & INFO_VOLUME),
        dtype=args.dtype,
        shape=tuple(args.shape[:ndim]),
    )


def load(path_or_fd, device, handle, dest_offset, length, file_offset=0):
    """Loads `length` bytes at `file_offset` to `dest_offset` of the allocation whose
    64-byte CUDA IPC handle is `handle`, on CUDA device `device`. Returns bytes loaded."""
    handle = bytes(handle)
    if len(handle) > HANDLE_LEN:
        raise ValueError(f"a handle is at most {HANDLE_LEN} bytes, not {len(handle)}")
    args = LoadStruct(
        abi_version=ABI_VERSION,
        device=device,
        dest_offset=dest_offset,
        file_offset=file_offset,
        length=length,
    )
    ctypes.memmove(args.handle, handle, len(handle))
    fd, close, name = _open(path_or_fd)
    try:
        _ioctl(fd, IOC_LOAD, args, name)
    finally:
        if close:
            os.close(fd)
    return args.bytes_loaded


def _torch_destination(tensor):
    """(device, handle, dest_offset, nbytes) of a contiguous CUDA torch tensor."""
    if not tensor.is_cuda:
        raise ValueError("load_into needs a CUDA tensor (use .cuda() or device='cuda')")
    if not tensor.is_contiguous():
        raise ValueError("load_into needs a contiguous tensor")
    storage = tensor.untyped_storage()
    shared = storage._share_cuda_()
    handle, storage_offset = shared[1], shared[3]
    if len(handle) == HANDLE_LEN + 2:
        # Recent PyTorch: a version byte, a type byte, then the handle.
        if handle[1:2] != b"c":
            raise ValueError(
                "this tensor's memory cannot be shared by CUDA IPC handle "
                "(PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True?); allocate it without "
                "expandable segments"
            )
        handle = handle[2:]
    elif len(handle) != HANDLE_LEN:
        raise ValueError(f"unexpected CUDA IPC handle of {len(handle)} bytes from PyTorch")
    offset = storage_offset + tensor.storage_offset() * tensor.element_size()
    # Work queued on the tensor must not race with the copy the daemon makes.
    import torch

    torch.cuda.synchronize(tensor.device)
    return tensor.device.index, handle, offset, tensor.numel() * tensor.element_size()


def _cupy_destination(array):
    """(device, handle, dest_offset, nbytes) of a C-contiguous CuPy array."""
    import cupy

    if not array.flags.c_contiguous:
        raise ValueError("load_into needs a C-contiguous array")
    ptr = array.data.ptr
    # The IPC handle names the whole cudaMalloc allocation; find where the array starts.
    base = ctypes.c_uint64()
    size = ctypes.c_size_t()
    with array.device:
        cuda = ctypes.CDLL("libcuda.so.1")
        rc = cuda.cuMemGetAddressRange_v2(ctypes.byref(base), ctypes.byref(size), ctypes.c_uint64(ptr))
        if rc != 0:
            raise OSError(errno.EINVAL, f"cuMemGetAddressRange failed with CUDA error {rc}")
        handle = cupy.cuda.runtime.ipcGetMemHandle(ptr)
        array.device.synchronize()
    return array.device.id, bytes(handle), ptr - base.value, array.nbytes


def _destination(target):
    if hasattr(target, "__smpfs_destination__"):
        return target.__smpfs_destination__()
    module = type(target).__module__.split(".")[0]
    if module == "torch":
        return _torch_destination(target)
    if module == "cupy":
        return _cupy_destination(target)
    raise TypeError(
        f"cannot load into a {type(target).__name__}: use a CUDA torch tensor or cupy array"
    )


def load_into(path, target, file_offset=0, length=None):
    """Fills `target` (a contiguous CUDA torch tensor or CuPy array, any dtype: its bytes
    in order) with the file's decrypted bytes from `file_offset`, by DMA from the daemon's
    locked memory: the plaintext never passes through this process. `length` defaults to
    the target's size in bytes. Returns bytes loaded.

    Raises SmpfsError (EINVAL, detail `past_eof`) if the file ends first, with nothing
    written; LockedError, IntegrityError, NoGpuError, NotOnSmpfsError as their names say."""
    device, handle, dest_offset, nbytes = _destination(target)
    if length is None:
        length = nbytes
    if length > nbytes:
        raise ValueError(f"{length} bytes do not fit in a target of {nbytes} bytes")
    if length == 0:
        return 0
    return load(path, device, handle, dest_offset, length, file_offset)


# --- verify -----------------------------------------------------------------------------


def verify(path, buffer_size=1 << 20):
    """Reads the whole file through its smpfs mount, so that every chunk is decrypted
    and authenticated by the daemon (and the read audited). Returns the byte count.

    Raises IntegrityError (EIO) if a chunk fails (its `offset` is the byte count that
    authenticated before it), LockedError if the mount is locked, NotOnSmpfsError if the
    file is not on an smpfs mount (nothing is read then), IsADirectoryError for a
    directory. The bytes pass through one reused buffer, zeroed before returning."""
    path = os.fspath(path)
    fd, _, name = _open(path)
    buf = bytearray(buffer_size)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        try:
            _ioctl(fd, IOC_INFO, InfoStruct(), name)
        except SmpfsError as e:
            # A `.volumes/*.nii.error` file is smpfs's own, but has nothing to load.
            if e.detail != "not_loadable":
                raise
        view, total = memoryview(buf), 0
        with open(fd, "rb", buffering=0, closefd=False) as f:
            while True:
                try:
                    n = f.readinto(view)
                except OSError as e:
                    raise _translate_read(e, path, total) from None
                if not n:
                    break
                total += n
        if total != st.st_size:
            err = make_error(errno.EIO, "short_read", path)
            err.offset = total
            raise err
        return total
    finally:
        buf[:] = bytes(len(buf))
        os.close(fd)


# --- the host test sink -----------------------------------------------------------------


class ShmBuffer:
    """A POSIX shared memory object as a load target, for mounts with -o gpu_sink=host
    (tests without a GPU only: the daemon then writes plaintext into /dev/shm)."""

    def __init__(self, size, name=None):
        self.name = name or f"/smpfs-py-{os.getpid()}-{id(self)}"
        self.size = size
        fd = os.open(
            "/dev/shm" + self.name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)

    def __smpfs_destination__(self):
        return 0, self.name.encode() + b"\0", 0, self.size

    def read(self):
        with open("/dev/shm" + self.name, "rb") as f:
            return f.read()

    def close(self):
        try:
            os.unlink("/dev/shm" + self.name)
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
