"""SecureDataset over a mount's `.volumes` (-o volumes): a CT series built by
tests/dicom/make_series.py, as a NIfTI volume and as its DICOM slices.

Usage: check_volumes.py MOUNT PLAIN   (-o volumes,gpu_sink=host; PLAIN/ct/ has the slices)
"""
import os
import sys

from _common import (
    as_numpy, check, direct_via_host_sink, done, have_torch, in_workers, open_fds,
    source_package,
)

smpfs = source_package()
import nibabel  # noqa: E402
import numpy as np  # noqa: E402
import pydicom  # noqa: E402

from smpfs.torch import SecureDataset, raw_layout  # noqa: E402

mount, plain = sys.argv[1], sys.argv[2]
slices = sorted(os.listdir(os.path.join(plain, "ct")))
vols = SecureDataset(mount, pattern=".volumes/*.nii", return_path=True)
check(len(vols) == 1, vols.paths)
volume, rel = vols[0]
path = os.path.join(mount, rel)
uid = pydicom.dcmread(os.path.join(plain, "ct", slices[0])).SeriesInstanceUID
check(rel == f".volumes/{uid}.nii", rel)

# The same values nibabel reads from the mount (scl_slope/scl_inter applied, float32), in
# nibabel's axis order (columns, rows, slices).
img = nibabel.load(path)
check(volume.dtype.name == "float32" and volume.shape == (128, 128, len(slices)), volume.shape)
check(np.array_equal(volume, img.get_fdata(dtype=np.float32)), "volume vs nibabel")
stored = SecureDataset(mount, pattern=".volumes/*.nii", rescale=False)[0]
check(stored.dtype.name == "int16" and np.array_equal(stored, np.asarray(img.dataobj.get_unscaled())), "stored")

# ...and slice k is the k-th DICOM slice (files slice000.. lie in order along the normal),
# rescaled the same way, transposed from (rows, columns).
dcm = SecureDataset(mount, pattern="ct/*.dcm")
check(dcm.paths == [f"ct/{s}" for s in slices], dcm.paths)
for k in range(len(dcm)):
    check(np.array_equal(dcm[k].T, volume[:, :, k]), f"slice {k} vs the volume")

# smpfs's own view of the volume, and its direct-load layout through the host sink.
info = smpfs.info(path)
check(info.volume and info.shape == (len(slices), 128, 128) and info.dtype_name == "int16", info)
layout = raw_layout(path, "nifti")
check(layout.file_offset == 0 and layout.shape == info.shape and layout.permute == (2, 1, 0), layout)
check((layout.slope, layout.inter) == (1.0, -1024.0), layout)
check(raw_layout(path, "raw") is None, "a volume's raw bytes are not its voxels")
with smpfs.ShmBuffer(info.plaintext_size) as buf:
    check(smpfs.load_into(path, buf) == info.plaintext_size, "voxel load")
    voxels = np.frombuffer(buf.read(), dtype=layout.dtype).reshape(layout.shape)
loaded = (voxels.astype(np.float32) * np.float32(layout.slope) + np.float32(layout.inter))
check(np.array_equal(loaded.transpose(layout.permute), volume), "loaded voxels vs the volume")
check(smpfs.verify(path) == os.path.getsize(path) == 352 + info.plaintext_size, "verify volume")

# No descriptor stays open after items; then the same items in forked workers.
fds = open_fds()
for k in range(len(dcm)):
    dcm[k]
vols[0]
check(open_fds() == fds, "descriptors left open")
got, how = in_workers(dcm, range(len(dcm)))
for k, value in enumerate(got):
    check(np.array_equal(as_numpy(value), dcm[k]), f"worker slice {k}")
got, _ = in_workers(vols, [0])
check(np.array_equal(as_numpy(got[0][0]), volume) and got[0][1] == rel, "worker volume")
print("workers:", how)

if have_torch():
    import torch

    t = SecureDataset(mount, pattern=".volumes/*.nii", output="torch")[0]
    check(torch.equal(t, torch.from_numpy(volume)), "torch volume")
    # The CUDA path's direct load (voxels from offset 0, rescale, permute) on the CPU.
    d = direct_via_host_sink(smpfs, path, "nifti")
    check(d.dtype == t.dtype and d.shape == t.shape and torch.equal(d, t), "direct volume")
    if torch.cuda.is_available():
        c = SecureDataset(mount, pattern=".volumes/*.nii", device="cuda")[0]
        check(c.is_cuda and torch.equal(c.cpu(), t), "cuda volume (direct load)")
    else:
        print("no CUDA device: the CUDA dataset path is not run")
done("volumes")
