"""Load decrypted files from an smpfs mount straight into GPU memory.

    import torch, smpfs_gpu
    t = torch.empty(smpfs_gpu.info("/mnt/scans/vol.raw").plaintext_size,
                    dtype=torch.uint8, device="cuda:0")
    smpfs_gpu.load_into("/mnt/scans/vol.raw", t)

`load_into(path, target)` fills a contiguous CUDA PyTorch tensor or CuPy array (any dtype;
its bytes are filled in order) with the file's bytes from `file_offset`. The smpfs daemon
opens the allocation by its CUDA IPC handle and copies decrypted data into it from pinned,
locked memory; the plaintext never passes through this process. The load is checked and
audited like a read of the file; on failure an `SmpfsGpuError` (an `OSError`) says why.

Only the standard library is needed (ctypes); PyTorch or CuPy only for their targets. The
ABI is specified in docs/GPU.md of the smpfs repository; smpfs_gpu.h is the C header.
"""

import ctypes
import errno
import os
from collections import namedtuple

ABI_VERSION = 1
HANDLE_LEN = 64
_IOC_TYPE = 0xB5


class _Info(ctypes.Structure):
    _fields_ = [
        ("abi_version", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("plaintext_size", ctypes.c_uint64),
        ("chunk_size", ctypes.c_uint32),
        ("dtype", ctypes.c_uint32),
        ("file_id", ctypes.c_uint8 * 16),
        ("ndim", ctypes.c_uint32),
        ("reserved0", ctypes.c_uint32),
        ("shape", ctypes.c_uint64 * 4),
        ("reserved", ctypes.c_uint64 * 4),
    ]


class _Load(ctypes.Structure):
    _fields_ = [
        ("abi_version", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("device", ctypes.c_uint32),
        ("reserved0", ctypes.c_uint32),
        ("handle", ctypes.c_uint8 * HANDLE_LEN),
        ("dest_offset", ctypes.c_uint64),
        ("file_offset", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
        ("bytes_loaded", ctypes.c_uint64),
        ("error", ctypes.c_uint32),
        ("reserved1", ctypes.c_uint32),
    ]


def _ioc(direction, nr, size):
    """The asm-generic _IOC encoding (x86, Arm, RISC-V)."""
    return (direction << 30) | (size << 16) | (_IOC_TYPE << 8) | nr


IOC_INFO = _ioc(2, 1, ctypes.sizeof(_Info))  # _IOR
IOC_LOAD = _ioc(3, 2, ctypes.sizeof(_Load))  # _IOWR

# smpfs_gpu_load.error codes (SMPFS_GPU_E_* in smpfs_gpu.h).
DETAILS = {
    0: "none",
    1: "abi_version",
    2: "bad_argument",
    3: "overflow",
    4: "past_eof",
    5: "dest_too_small",
    6: "bad_handle",
    7: "no_driver",
    8: "bad_device",
    9: "device",
    10: "no_memory",
    11: "locked",
    12: "integrity",
    13: "audit",
    14: "io",
    15: "bad_file_handle",
}

_EXPLANATIONS = {
    "abi_version": "this client's ABI version is not the daemon's",
    "bad_argument": "unknown flags or non-zero reserved fields",
    "overflow": "an offset plus the length overflows",
    "past_eof": "the file range ends past the end of the file",
    "dest_too_small": "the destination allocation is too small for the range",
    "bad_handle": "the daemon cannot open the destination's IPC handle",
    "no_driver": "the smpfs daemon's machine has no CUDA driver",
    "bad_device": "no GPU with that device ordinal",
    "device": "a CUDA call failed while copying (see the smpfs log)",
    "no_memory": "the daemon cannot lock its staging memory (RLIMIT_MEMLOCK)",
    "locked": "the mount is locked (keys purged); run `smpfs unlock`",
    "integrity": "a chunk of the file failed authentication (tampered data)",
    "audit": "the audit log cannot be written, so nothing is served",
    "io": "the bucket could not be read",
    "bad_file_handle": "the file is not open",
}


class SmpfsGpuError(OSError):
    """A failed smpfs GPU ioctl: `errno` is the class, `detail` (a DETAILS name) which one."""

    def __init__(self, err, detail, path):
        self.detail = detail
        why = _EXPLANATIONS.get(detail, "")
        message = f"{os.strerror(err)} [{detail}]" + (f": {why}" if why else "")
        super().__init__(err, message, path)


class NoDriverError(SmpfsGpuError):
    """The daemon's machine has no CUDA driver, or no such device."""


class NotSmpfsError(SmpfsGpuError):
    """The file does not answer smpfs ioctls (not on an smpfs mount, or an older smpfs)."""


_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.ioctl.restype = ctypes.c_int


def _ioctl(fd, request, args, path):
    """Runs one ioctl; raises SmpfsGpuError with the reply's detail on failure."""
    if _libc.ioctl(fd, request, ctypes.byref(args)) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.ENOTTY:
        raise NotSmpfsError(err, "not_smpfs", path)
    detail = DETAILS.get(getattr(args, "error", 0), "unknown")
    if detail == "none":
        detail = "unknown"
    cls = NoDriverError if detail in ("no_driver", "bad_device") else SmpfsGpuError
    raise cls(err, detail, path)


def _open(path_or_fd):
    """(fd, whether we opened it, name for errors)."""
    if isinstance(path_or_fd, int):
        return path_or_fd, False, f"fd {path_or_fd}"
    return os.open(path_or_fd, os.O_RDONLY | os.O_CLOEXEC), True, os.fspath(path_or_fd)


Info = namedtuple("Info", "abi_version plaintext_size chunk_size file_id volume dtype shape")
Info.__doc__ = "What smpfs says about an open file; volume is False for ordinary files."


def info(path_or_fd):
    """Size, chunk size and file id of a file on an smpfs mount (and its volume shape)."""
    fd, close, name = _open(path_or_fd)
    try:
        args = _Info()
        _ioctl(fd, IOC_INFO, args, name)
    finally:
        if close:
            os.close(fd)
    ndim = args.ndim
    return Info(
        abi_version=args.abi_version,
        plaintext_size=args.plaintext_size,
        chunk_size=args.chunk_size,
        file_id=bytes(args.file_id).hex(),
        volume=bool(args.flags & 1),
        dtype=args.dtype,
        shape=tuple(args.shape[:ndim]),
    )


def load(path_or_fd, device, handle, dest_offset, length, file_offset=0):
    """Loads `length` bytes at `file_offset` to `dest_offset` of the allocation whose
    64-byte CUDA IPC handle is `handle`, on CUDA device `device`. Returns bytes loaded."""
    handle = bytes(handle)
    if len(handle) > HANDLE_LEN:
        raise ValueError(f"a handle is at most {HANDLE_LEN} bytes, not {len(handle)}")
    args = _Load(
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
    raise TypeError(f"cannot load into a {type(target).__name__}: use a CUDA torch tensor or cupy array")


def load_into(path, target, file_offset=0, length=None):
    """Fills `target` (a contiguous CUDA torch tensor or CuPy array) with the file's bytes
    from `file_offset`; `length` defaults to the target's size in bytes. Returns bytes
    loaded. Raises SmpfsGpuError (EINVAL) if the file ends before, nothing written."""
    device, handle, dest_offset, nbytes = _destination(target)
    if length is None:
        length = nbytes
    if length > nbytes:
        raise ValueError(f"{length} bytes do not fit in a target of {nbytes} bytes")
    if length == 0:
        return 0
    return load(path, device, handle, dest_offset, length, file_offset)


class ShmBuffer:
    """A POSIX shared memory object as a load target, for mounts with -o gpu_sink=host
    (tests without a GPU only: the daemon then writes plaintext into /dev/shm)."""

    def __init__(self, size, name=None):
        self.name = name or f"/smpfs-py-{os.getpid()}-{id(self)}"
        self.size = size
        fd = os.open("/dev/shm" + self.name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
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
