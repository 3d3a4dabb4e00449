"""Helpers of the package's test scripts, which tests/python.rs runs against real mounts:
`python3 python/tests/check_*.py ARGS` with python/ on PYTHONPATH. Plain asserts, no test
framework; each script ends by printing `ok: N checks`."""

import os
import sys

CHECKS = [0]


def check(condition, message=""):
    """assert that counts."""
    CHECKS[0] += 1
    if not condition:
        raise AssertionError(message)


def raises(cls, fn, *args, **kwargs):
    """Calls fn; asserts it raises exactly `cls` (or a subclass); returns the exception."""
    CHECKS[0] += 1
    try:
        fn(*args, **kwargs)
    except cls as e:
        return e
    except BaseException as e:  # noqa: BLE001
        raise AssertionError(f"{fn.__name__}{args} raised {type(e).__name__}: {e}, not {cls.__name__}")
    raise AssertionError(f"{fn.__name__}{args} did not raise {cls.__name__}")


def source_package():
    """Imports smpfs, checking it is the source tree's (SMPFS_PY_SOURCE) when that is set."""
    import smpfs

    expected = os.environ.get("SMPFS_PY_SOURCE")
    if expected:
        here = os.path.dirname(os.path.realpath(smpfs.__file__))
        check(here == os.path.realpath(expected), f"smpfs imported from {here}, not {expected}")
    return smpfs


def have_torch():
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def _item(index):
    return _DATASET[index]


_DATASET = None


def in_workers(dataset, indices):
    """dataset[i] for each index, computed by 2 forked workers: a torch DataLoader with
    num_workers=2 where torch is installed, else a multiprocessing pool of 2. Returns
    (values, how)."""
    global _DATASET
    if have_torch():
        import torch.utils.data as tud

        loader = tud.DataLoader(
            tud.Subset(dataset, list(indices)),
            batch_size=None,
            num_workers=2,
            multiprocessing_context="fork",
        )
        return list(loader), "torch DataLoader, 2 workers"
    import multiprocessing

    _DATASET = dataset
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            return pool.map(_item, list(indices), chunksize=1), "multiprocessing pool, 2 workers"
    finally:
        _DATASET = None


def done(name):
    print(f"{name} ok: {CHECKS[0]} checks")
    sys.stdout.flush()


def as_numpy(value):
    """A torch tensor (as DataLoader hands numpy arrays back) or array as a numpy array."""
    import numpy as np

    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def direct_via_host_sink(smpfs, path, fmt):
    """smpfs.torch.load_direct of `path` (the code path of device="cuda") run on the CPU:
    the tensor is allocated on the CPU and load_into goes through the host sink (a shared
    memory object, copied into the tensor), so the layout, widening, rescale and permute
    logic of the CUDA path is checked without a GPU. Needs torch."""
    import torch

    import smpfs.torch as st

    real = smpfs._client.load_into

    def through_shm(p, tensor, file_offset=0, length=None):
        nbytes = tensor.numel() * tensor.element_size()
        with smpfs.ShmBuffer(nbytes) as buf:
            loaded = real(p, buf, file_offset=file_offset, length=length)
            data = torch.frombuffer(bytearray(buf.read()), dtype=torch.uint8)
        tensor.view(-1).view(torch.uint8).copy_(data)
        return loaded

    layout = st.raw_layout(path, fmt)
    check(layout is not None, f"no direct layout for {path}")
    smpfs._client.load_into = through_shm
    try:
        return st.load_direct(path, layout, "cpu")
    finally:
        smpfs._client.load_into = real
