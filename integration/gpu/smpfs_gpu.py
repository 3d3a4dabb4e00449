"""Compatibility shim: `smpfs_gpu` is now the `smpfs` package (python/ in the smpfs
repository; `pip install ./python`). This module re-exports its GPU client under the old
names, so `import smpfs_gpu` with this directory on the path keeps working:

    import torch, smpfs_gpu
    t = torch.empty(smpfs_gpu.info("/mnt/scans/vol.raw").plaintext_size,
                    dtype=torch.uint8, device="cuda:0")
    smpfs_gpu.load_into("/mnt/scans/vol.raw", t)

The package of this checkout (../../python) is used when it is there, an installed one
otherwise. Old names: SmpfsGpuError is smpfs.SmpfsError, NoDriverError smpfs.NoGpuError,
NotSmpfsError smpfs.NotOnSmpfsError (the package's errors are finer-grained subclasses).
"""

import os
import sys

_source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python")
if os.path.isfile(os.path.join(_source, "smpfs", "__init__.py")):
    _source = os.path.normpath(_source)
    if _source not in sys.path:
        sys.path.insert(0, _source)

from smpfs import (  # noqa: E402
    ABI_VERSION,
    DETAILS,
    HANDLE_LEN,
    IOC_INFO,
    IOC_LOAD,
    Info,
    ShmBuffer,
    info,
    load,
    load_into,
)
from smpfs import NoGpuError as NoDriverError  # noqa: E402
from smpfs import NotOnSmpfsError as NotSmpfsError  # noqa: E402
from smpfs import SmpfsError as SmpfsGpuError  # noqa: E402

__all__ = [
    "ABI_VERSION",
    "DETAILS",
    "HANDLE_LEN",
    "IOC_INFO",
    "IOC_LOAD",
    "Info",
    "ShmBuffer",
    "info",
    "load",
    "load_into",
    "SmpfsGpuError",
    "NoDriverError",
    "NotSmpfsError",
]
