"""On a CUDA machine: load a file from an smpfs mount into PyTorch tensors with
smpfs_gpu.load_into and compare with the plaintext. Usage: cuda_check.py MOUNTED PLAIN

Run by the ignored test `cuda_load_into_a_device_buffer_of_this_process` in tests/gpu.rs
when PyTorch is installed; it can also be run by hand against any mount.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smpfs_gpu  # noqa: E402

mounted, plain = sys.argv[1], sys.argv[2]
expected = torch.frombuffer(bytearray(open(plain, "rb").read()), dtype=torch.uint8)
n = expected.numel()
assert smpfs_gpu.info(mounted).plaintext_size == n

# The whole file into a fresh tensor.
whole = torch.empty(n, dtype=torch.uint8, device="cuda:0")
assert smpfs_gpu.load_into(mounted, whole) == n
assert torch.equal(whole.cpu(), expected), "whole file differs"

# A range into a view that starts inside its storage (offset handling).
big = torch.zeros(n + 4096, dtype=torch.uint8, device="cuda:0")
view = big[1000 : 1000 + 777]
assert smpfs_gpu.load_into(mounted, view, file_offset=4097) == 777
assert torch.equal(view.cpu(), expected[4097 : 4097 + 777])
assert int(big[:1000].count_nonzero()) == 0 and int(big[1777:].count_nonzero()) == 0

# A typed tensor is filled with the file's bytes in order.
floats = torch.empty((n // 4,), dtype=torch.float32, device="cuda:0")
smpfs_gpu.load_into(mounted, floats)
assert torch.equal(floats.cpu().view(torch.uint8), expected[: (n // 4) * 4])

# Errors are exceptions with a detail.
try:
    smpfs_gpu.load_into(mounted, whole, file_offset=1)
    raise SystemExit("past EOF did not raise")
except smpfs_gpu.SmpfsGpuError as e:
    assert e.detail == "past_eof", e

print("cuda_check: ok")
