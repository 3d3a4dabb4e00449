"""Typed errors. Every one is an `OSError` with the `errno` the kernel returned, the
`filename`, and `detail`: which check failed, by name (`past_eof`, `locked`, ...; for the
GPU load these are the `SMPFS_GPU_E_*` names of docs/GPU.md in lower case).

    SmpfsError                  base (also: an EINVAL load refusal, with its detail)
    ├── NotOnSmpfsError         ENOTTY: not a file of an smpfs mount (or an smpfs without the ioctl)
    ├── LockedError             EACCES: the mount is locked (`smpfs lock`); `smpfs unlock` it
    ├── IntegrityError          EIO: a chunk failed authentication (tampered or corrupt data)
    ├── AuditError              EIO: the audit log cannot be written, so nothing is served
    ├── StorageError            EIO: the bucket could not be read (network, backend)
    └── NoGpuError              ENODEV: the daemon's machine has no CUDA driver, or no such GPU

A plain read(2) that fails with EIO does not say which of the three EIO causes it was (the
daemon's log does); `read`-based functions raise `IntegrityError` for it, saying so.
Errors that are not smpfs's (no such file, a directory) stay the standard `OSError`s.

The errors pickle (for DataLoader and multiprocessing workers) and can be built from a
message alone.
"""

import errno
import os

__all__ = [
    "SmpfsError",
    "NotOnSmpfsError",
    "LockedError",
    "IntegrityError",
    "AuditError",
    "StorageError",
    "NoGpuError",
]


class SmpfsError(OSError):
    """An smpfs operation failed: `errno`, `filename`, and `detail` (which check)."""

    detail = "unknown"


class NotOnSmpfsError(SmpfsError):
    """The file does not answer smpfs's ioctls (ENOTTY): it is not on an smpfs mount (or
    it is a directory, or the daemon predates the ioctl)."""

    detail = "not_smpfs"


class LockedError(SmpfsError):
    """The mount is locked (EACCES): keys purged by `smpfs lock`; run `smpfs unlock`."""

    detail = "locked"


class IntegrityError(SmpfsError):
    """A chunk failed authentication (EIO): the sealed object was tampered with or is
    corrupt. `offset`, where known, is the count of bytes that authenticated before it."""

    detail = "integrity"
    offset = None


class AuditError(SmpfsError):
    """The audit log cannot be written (EIO), so the daemon serves nothing (fail closed)."""

    detail = "audit"


class StorageError(SmpfsError):
    """The bucket could not be read (EIO): a backend or network failure."""

    detail = "io"


class NoGpuError(SmpfsError):
    """The daemon's machine has no CUDA driver (ENODEV), or no GPU with that ordinal."""

    detail = "no_driver"


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
    "locked": "the mount is locked (keys purged); run `smpfs unlock MOUNTPOINT`",
    "integrity": "a chunk of the file failed authentication (tampered or corrupt data)",
    "read_eio": "the file could not be read: a chunk failed authentication (tampered or "
    "corrupt data), or the bucket or the audit log could not be used; the smpfs log says which",
    "audit": "the audit log cannot be written, so nothing is served",
    "io": "the bucket could not be read",
    "bad_file_handle": "the file is not open (opened before a lock?)",
    "not_smpfs": "not a file on an smpfs mount",
    "not_loadable": "smpfs has nothing to load from this file (a .nii.error file?)",
    "short_read": "the file ended before its size: it changed or was cut while being read",
}

# The class for each load detail; details not named here are plain SmpfsError.
_BY_DETAIL = {
    "locked": LockedError,
    "integrity": IntegrityError,
    "short_read": IntegrityError,
    "audit": AuditError,
    "io": StorageError,
    "no_driver": NoGpuError,
    "bad_device": NoGpuError,
    "not_smpfs": NotOnSmpfsError,
}

# When the daemon gave no detail: the class by errno.
_BY_ERRNO = {
    errno.ENOTTY: "not_smpfs",
    errno.EACCES: "locked",
    errno.EIO: "integrity",
    errno.ENODEV: "no_driver",
}


def make_error(err, detail, path, why=None):
    """The typed error for `err` (an errno) and `detail` (a name of _EXPLANATIONS)."""
    if detail in (None, "none", "unknown"):
        detail = _BY_ERRNO.get(err, "unknown")
    cls = _BY_DETAIL.get(detail, SmpfsError)
    why = why or _EXPLANATIONS.get(detail, "")
    message = f"{os.strerror(err)} [{detail}]" + (f": {why}" if why else "")
    e = cls(err, message, os.fspath(path) if path is not None else None)
    e.detail = detail
    return e
