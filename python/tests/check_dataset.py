"""SecureDataset over pydicom's bundled test files, numpy and NIfTI files of a mount:
auto-detection, values equal to decoding the plaintext with pydicom/nibabel/numpy, the
direct-load layouts checked through the host sink, and forked workers.

Usage: check_dataset.py prepare PLAIN         (writes the files to seal under PLAIN)
       check_dataset.py check MOUNT PLAIN     (MOUNT has PLAIN sealed, -o gpu_sink=host)
"""
import os
import shutil
import sys

from _common import (
    as_numpy, check, direct_via_host_sink, done, have_torch, in_workers, open_fds, raises,
    source_package,
)

DICOM = ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "rtdose.dcm"]


def prepare(plain):
    import nibabel
    import numpy as np
    import pydicom

    files = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    os.makedirs(os.path.join(plain, "dicom", "series"), exist_ok=True)
    for name in DICOM:
        shutil.copy(os.path.join(files, name), os.path.join(plain, "dicom", name))
    # A DICOM file without an extension is found by its preamble.
    shutil.copy(os.path.join(files, "CT_small.dcm"), os.path.join(plain, "dicom", "series", "IM0001"))
    os.makedirs(os.path.join(plain, "arrays"), exist_ok=True)
    rng = np.random.default_rng(5)
    np.save(os.path.join(plain, "arrays", "u16.npy"), rng.integers(0, 65535, (3, 70, 50), dtype=np.uint16))
    np.save(os.path.join(plain, "arrays", "fortran.npy"),
            np.asfortranarray(rng.standard_normal((40, 30, 7)).astype(np.float32)))
    np.save(os.path.join(plain, "arrays", "empty.npy"), np.zeros((0, 4), dtype=np.int32))
    os.makedirs(os.path.join(plain, "nifti"), exist_ok=True)
    img = nibabel.Nifti1Image(rng.integers(-500, 500, (20, 16, 9), dtype=np.int16), np.eye(4))
    img.header.set_slope_inter(0.5, -100.0)  # nibabel keeps given scaling for int data
    img.set_data_dtype(np.int16)
    nibabel.save(img, os.path.join(plain, "nifti", "scaled.nii"))
    nibabel.save(img, os.path.join(plain, "nifti", "scaled.nii.gz"))
    with open(os.path.join(plain, "notes.txt"), "w") as f:
        f.write("not an image\n")


def expected_dicom(path, rescale):
    import numpy as np
    import pydicom

    try:
        from pydicom.pixels import apply_modality_lut
    except ImportError:  # pydicom 2
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if not rescale:
        return arr
    out = apply_modality_lut(arr, ds)
    return out.astype(np.float32) if out.dtype == np.float64 else out


def expected_of(plain, rel, rescale=True):
    import nibabel
    import numpy as np

    path = os.path.join(plain, rel)
    if rel.endswith(".npy"):
        return np.load(path)
    if ".nii" in rel:
        img = nibabel.load(path)
        if not rescale:
            return np.asarray(img.dataobj.get_unscaled())
        return img.get_fdata(dtype=np.float32)
    return expected_dicom(path, rescale)


def equal(a, b):
    import numpy as np

    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


def main_check(mount, plain):
    smpfs = source_package()
    import smpfs.torch as st

    ds = st.SecureDataset(mount, return_path=True)
    expected_paths = sorted(["dicom/" + n for n in DICOM] + [
        "dicom/series/IM0001", "arrays/u16.npy", "arrays/fortran.npy", "arrays/empty.npy",
        "nifti/scaled.nii", "nifti/scaled.nii.gz"])
    check(ds.paths == expected_paths, ds.paths)
    check(len(ds) == len(expected_paths) and ds.output == "numpy", repr(ds))
    check(dict(zip(ds.paths, ds.formats))["dicom/series/IM0001"] == "dicom", ds.formats)

    # Every item equals the plaintext decoded by the libraries themselves; rescaled values
    # are float32, stored values as stored. No descriptor stays open after an item.
    fds = open_fds()
    for rescale in (True, False):
        d = st.SecureDataset(mount, rescale=rescale, return_path=True)
        for value, rel in d:
            want = expected_of(plain, rel, rescale)
            if ".nii" in rel and rescale:
                check(value.dtype.name == "float32", (rel, value.dtype))
            check(equal(value, want), f"{rel} (rescale={rescale}): {value.dtype}{value.shape} "
                                      f"vs {want.dtype}{want.shape}")
    check(open_fds() == fds, f"descriptors left open: {open_fds()} vs {fds}")
    ct = ds[ds.paths.index("dicom/CT_small.dcm")][0]
    check(ct.dtype.name == "float32" and ct.min() < -800, "CT in Hounsfield units")
    check(ds[-1][1] == ds.paths[-1], "negative index")
    raises(IndexError, ds.__getitem__, len(ds))

    # Patterns, explicit decoders, a callable, transform.
    dcm = st.SecureDataset(mount, pattern="dicom/*.dcm")
    check(len(dcm) == len(DICOM), dcm.paths)
    raw = st.SecureDataset(mount, pattern="**/*.txt", decode="raw")
    check(raw.paths == ["notes.txt"] and raw[0].tobytes() == b"not an image\n", raw.paths)
    sizes = st.SecureDataset(mount, pattern="arrays/*", decode=lambda p: os.path.getsize(p))
    check(sizes[0] == os.path.getsize(os.path.join(plain, sizes.paths[0])), "callable decode")
    shapes = st.SecureDataset(mount, pattern="arrays/*.npy", transform=lambda a: a.shape)
    check(shapes[2] == (3, 70, 50), shapes[2])
    raises(ValueError, st.SecureDataset, mount, decode="jpeg")
    raises(ValueError, st.SecureDataset, mount, device="tpu")
    raises(ValueError, st.SecureDataset, mount, device="cuda", output="numpy")
    e = raises(smpfs.NotOnSmpfsError, st.SecureDataset, plain)
    check("require_smpfs=False" in str(e), str(e))
    check(len(st.SecureDataset(plain, require_smpfs=False)) == len(expected_paths), "plain dir")
    check(ds.verify() == sum(os.path.getsize(os.path.join(plain, p)) for p in ds.paths), "verify")

    # The direct-load layouts (what device="cuda" loads with load_into), checked by loading
    # through the host sink and rebuilding the array as the CUDA path does.
    import numpy as np

    for rel in ["arrays/u16.npy", "arrays/fortran.npy", "nifti/scaled.nii"]:
        fmt = st.format_of(rel)
        layout = st.raw_layout(os.path.join(mount, rel), fmt)
        check(layout is not None, rel)
        count = int(np.prod(layout.shape))
        nbytes = count * np.dtype(layout.dtype).itemsize
        with smpfs.ShmBuffer(nbytes) as buf:
            smpfs.load_into(os.path.join(mount, rel), buf, file_offset=layout.file_offset)
            arr = np.frombuffer(buf.read(), dtype=layout.dtype).reshape(layout.shape)
        if layout.slope is not None:
            arr = arr.astype(np.float32) * np.float32(layout.slope) + np.float32(layout.inter)
        if layout.permute is not None:
            arr = arr.transpose(layout.permute)
        check(equal(arr, expected_of(plain, rel)), f"{rel} through its layout")
    check(st.raw_layout(os.path.join(mount, "nifti/scaled.nii.gz"), "nifti") is None, "gz")
    check(st.raw_layout(os.path.join(mount, "dicom/MR_small.dcm"), "dicom") is None, "dicom")
    check(st.raw_layout(os.path.join(plain, "arrays/u16.npy"), "npy") is None, "not smpfs")
    nii = st.raw_layout(os.path.join(mount, "nifti/scaled.nii"), "nifti")
    check(nii.file_offset == 352 and nii.shape == (9, 16, 20) and nii.permute == (2, 1, 0), nii)
    check((nii.slope, nii.inter) == (0.5, -100.0), nii)

    # Forked workers give what this process gives.
    indices = list(range(len(ds)))
    got, how = in_workers(st.SecureDataset(mount), indices)
    plain_ds = st.SecureDataset(mount)
    for i, value in zip(indices, got):
        check(equal(as_numpy(value), plain_ds[i]), f"worker item {ds.paths[i]}")
    print("workers:", how)

    if have_torch():
        import torch

        t = st.SecureDataset(mount, output="torch")
        for i in range(len(t)):
            value, want = t[i], plain_ds[i]
            check(isinstance(value, torch.Tensor), type(value))
            if want.dtype == np.uint16:
                want = want.astype(np.int32)
            elif want.dtype == np.uint32:
                want = want.astype(np.int64)
            check(equal(value.numpy(), want), f"torch item {t.paths[i]}: {value.dtype}")
        # The CUDA path's direct loads, run on the CPU through the host sink.
        for rel in ["arrays/u16.npy", "arrays/fortran.npy", "arrays/empty.npy", "nifti/scaled.nii"]:
            value = direct_via_host_sink(smpfs, os.path.join(mount, rel), st.format_of(rel))
            want = t[t.paths.index(rel)]
            check(value.dtype == want.dtype and torch.equal(value, want), f"direct {rel}")
        raw_t = st.SecureDataset(mount, pattern="*.txt", decode="raw", output="torch")[0]
        value = direct_via_host_sink(smpfs, os.path.join(mount, "notes.txt"), "raw")
        check(torch.equal(value, raw_t), "direct raw")
        if torch.cuda.is_available():
            for direct in (True, False):
                c = st.SecureDataset(mount, device="cuda", direct=direct)
                for i in range(len(c)):
                    value = c[i]
                    check(value.is_cuda, value.device)
                    check(torch.equal(value.cpu(), t[i]), f"cuda (direct={direct}) {c.paths[i]}")
        else:
            print("no CUDA device: the CUDA dataset path is not run")
    else:
        e = raises(ImportError, st.SecureDataset, mount, output="torch")
        check("pip install torch" in str(e), str(e))
        check("torch" not in sys.modules, "torch imported")
    done("dataset")


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2])
    else:
        main_check(sys.argv[2], sys.argv[3])
