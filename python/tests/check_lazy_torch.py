"""`import smpfs` and `smpfs.torch` import no torch (nor numpy, pydicom, nibabel); a
dataset in numpy mode is built and read without it; torch comes in only when asked for.

Usage: check_lazy_torch.py DIR   (any directory: a .npy file is written into it)
"""
import os
import sys

from _common import check, done, have_torch, raises, source_package

directory = sys.argv[1]
smpfs = source_package()
heavy = ("torch", "numpy", "pydicom", "nibabel")
check(not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules])
check(smpfs.torch.__name__ == "smpfs.torch", "smpfs.torch is the submodule")
check("torch" not in sys.modules, "smpfs.torch imported torch")
from smpfs.torch import SecureDataset  # noqa: E402

import numpy as np  # noqa: E402

np.save(os.path.join(directory, "a.npy"), np.arange(10, dtype=np.int64))
ds = SecureDataset(directory, require_smpfs=False)
check(ds.paths == ["a.npy"] and np.array_equal(ds[0], np.arange(10)), ds.paths)
check("torch" not in sys.modules, "a numpy-mode dataset imported torch")
if have_torch():
    value = SecureDataset(directory, require_smpfs=False, output="torch")[0]
    check("torch" in sys.modules and type(value).__module__.startswith("torch"), type(value))
    print("torch imported when asked for")
else:
    e = raises(ImportError, SecureDataset, directory, require_smpfs=False, output="torch")
    check("pip install torch" in str(e), str(e))
    e = raises(ImportError, SecureDataset, directory, require_smpfs=False, device="cuda")
    print("without torch: a clear ImportError")
check("torch" not in sys.modules or have_torch(), "torch")
done("lazy torch")
