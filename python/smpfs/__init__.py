"""Python client of smpfs mounts: file info, integrity checks, GPU loads, and datasets.

    import smpfs
    smpfs.info("/mnt/scans/ct/volume.raw")          # size, chunk size, file id, volume shape
    smpfs.verify("/mnt/scans/ct/1.dcm")             # reads it all: every chunk authenticated
    smpfs.load_into("/mnt/scans/ct/volume.raw", t)  # DMA into a CUDA tensor, audited
    ds = smpfs.torch.SecureDataset("/mnt/scans", pattern="**/*.dcm")

Failures are typed `OSError`s (smpfs.errors): `SmpfsError` and below it `NotOnSmpfsError`,
`LockedError`, `IntegrityError`, `AuditError`, `StorageError`, `NoGpuError`.

Importing smpfs needs only the standard library; `smpfs.torch` imports PyTorch, pydicom,
nibabel and numpy only when a dataset needs them.
"""

from . import errors
from ._abi import ABI_VERSION, DETAILS, DTYPES, HANDLE_LEN, IOC_INFO, IOC_LOAD
from ._client import Info, ShmBuffer, info, load, load_into, mountpoint, verify
from .errors import *  # noqa: F401,F403 (the typed errors, errors.__all__)
# The submodule imports no torch (see smpfs/torch.py); it is left out of __all__ so that
# `from smpfs import *` cannot shadow the real torch.
from . import torch  # noqa: E402,F401

__version__ = "0.1.0"

__all__ = [
    "ABI_VERSION",
    "DETAILS",
    "DTYPES",
    "HANDLE_LEN",
    "IOC_INFO",
    "IOC_LOAD",
    "Info",
    "ShmBuffer",
    "info",
    "load",
    "load_into",
    "mountpoint",
    "verify",
    "errors",
] + errors.__all__
