"""Checks the `.volumes` of a mount against pydicom and nibabel.

Usage: python3 check_volumes.py PLAIN_DIR MOUNT_DIR SERIES_JSON

SERIES_JSON maps the designed series (make_series.py) to their SeriesInstanceUIDs. Each
good series' `.volumes/<uid>.nii` is loaded with nibabel through the mount: its data must
equal the stack of pydicom `pixel_array * slope + intercept` sorted along the slice normal,
and its affine must equal the one computed here from the DICOM attributes (docs/DICOM.md)
and, for single-frame series, nibabel's own DICOM affine (nibabel.nicom): for the in-plane
axes and origin, and voxel by voxel (the corners of every slice) against each slice file's
own nibabel affine, which checks the slice axis and order independently. The broken series must have a `.nii.error` with the documented text.
The bundled dicomdirtests series are checked the same way where they form volumes.
Prints one line per failure and exits 1 if there is any.
"""
import collections
import json
import os
import sys

import nibabel
import numpy as np
import pydicom
from nibabel.nicom.dicomwrappers import wrapper_from_data

FAILURES = []


def fail(message):
    FAILURES.append(message)
    print("FAIL:", message)


def frames_of(ds):
    """(position, orientation, spacing, slope, intercept, pixels) per frame."""
    if "PerFrameFunctionalGroupsSequence" in ds:
        shared = ds.SharedFunctionalGroupsSequence[0]
        orientation = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
        spacing = np.array(shared.PixelMeasuresSequence[0].PixelSpacing, float)
        transform = shared.PixelValueTransformationSequence[0]
        slope, intercept = float(transform.RescaleSlope), float(transform.RescaleIntercept)
        pixels = ds.pixel_array
        return [(np.array(item.PlanePositionSequence[0].ImagePositionPatient, float),
                 orientation, spacing, slope, intercept, pixels[f])
                for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence)]
    orientation = np.array(ds.ImageOrientationPatient, dtype=float)
    spacing = np.array(ds.PixelSpacing, dtype=float)
    slope = float(ds.get("RescaleSlope", 1))
    intercept = float(ds.get("RescaleIntercept", 0))
    pixels = ds.pixel_array
    count = int(ds.get("NumberOfFrames", 1) or 1)
    origin = np.array(ds.ImagePositionPatient, dtype=float)
    if count == 1:
        return [(origin, orientation, spacing, slope, intercept, pixels)]
    normal = np.cross(orientation[:3], orientation[3:])
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    return [(origin + (offsets[f] - offsets[0]) * normal, orientation, spacing, slope,
             intercept, pixels[f]) for f in range(count)]


def expected(datasets):
    frames = [f for ds in datasets for f in frames_of(ds)]
    normal = np.cross(frames[0][1][:3], frames[0][1][3:])
    frames.sort(key=lambda f: float(np.dot(f[0], normal)))
    data = np.stack([f[5].astype(np.float64).T * f[3] + f[4] for f in frames], axis=2)
    first, last = frames[0][0], frames[-1][0]
    row, col = frames[0][1][:3], frames[0][1][3:]
    d_row, d_col = frames[0][2]
    step = (last - first) / (len(frames) - 1) if len(frames) > 1 else normal
    lps = np.eye(4)
    lps[:3, 0] = row * d_col
    lps[:3, 1] = col * d_row
    lps[:3, 2] = step
    lps[:3, 3] = first
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return data, ras, frames


def nibabel_affine(path):
    """nibabel's DICOM affine for a slice, in our (column, row) RAS convention."""
    wrapper = wrapper_from_data(pydicom.dcmread(path))
    lps = np.array(wrapper.affine, dtype=float)
    lps[:, [0, 1]] = lps[:, [1, 0]]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def check_volume(name, nii, paths, single_frame):
    datasets = [pydicom.dcmread(p) for p in paths]
    data, affine, frames = expected(datasets)
    image = nibabel.load(nii)
    got = np.asarray(image.get_fdata())
    if got.shape != data.shape:
        fail(f"{name}: shape {got.shape}, expected {data.shape}")
        return
    if not np.allclose(got, data, rtol=1e-6, atol=1e-3):
        fail(f"{name}: voxels differ (max {np.max(np.abs(got - data))})")
    if not np.allclose(image.affine, affine, rtol=1e-5, atol=1e-3):
        fail(f"{name}: affine\n{image.affine}\nexpected\n{affine}")
    if single_frame:
        normal = np.cross(frames[0][1][:3], frames[0][1][3:])
        ordered = sorted(paths, key=lambda p: float(np.dot(
            np.array(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient, float),
            normal)))
        theirs = nibabel_affine(ordered[0])
        for column in (0, 1, 3):
            if not np.allclose(image.affine[:3, column], theirs[:3, column], rtol=1e-5, atol=1e-3):
                fail(f"{name}: affine column {column} differs from nibabel.nicom: "
                     f"{image.affine[:3, column]} vs {theirs[:3, column]}")
        # Slice axis and order, independently of the formula above: voxel (i, j, k) of the
        # volume must be where nibabel's own affine of the k-th slice file puts its pixel
        # (i, j), for the corners of every slice.
        columns, rows = got.shape[0] - 1, got.shape[1] - 1
        for k, path in enumerate(ordered):
            slice_affine = nibabel_affine(path)
            for i, j in [(0, 0), (columns, 0), (0, rows), (columns, rows)]:
                ours = image.affine @ [i, j, k, 1]
                want = slice_affine @ [i, j, 0, 1]
                if not np.allclose(ours, want, rtol=1e-5, atol=1e-3):
                    fail(f"{name}: voxel ({i}, {j}, {k}) at {ours[:3]}, nibabel.nicom puts "
                         f"pixel ({i}, {j}) of {os.path.basename(path)} at {want[:3]}")
                    return image
    return image


def main():
    plain, mount, series_json = sys.argv[1:4]
    uids = json.load(open(series_json))
    volumes = os.path.join(mount, ".volumes")
    listing = sorted(os.listdir(volumes))

    def files(directory):
        root = os.path.join(plain, directory)
        return sorted(os.path.join(root, f) for f in os.listdir(root))

    checked = 0
    for name in ["ct", "ct_rle", "rescale", "rtdose", "rtdose_rle", "mr", "enhanced"]:
        nii = os.path.join(volumes, uids[name] + ".nii")
        if not os.path.exists(nii):
            error = os.path.join(volumes, uids[name] + ".nii.error")
            reason = open(error).read() if os.path.exists(error) else "no entry"
            fail(f"{name}: no volume ({reason.strip()})")
            continue
        image = check_volume(name, nii, files(name),
                             single_frame=not name.startswith("rtdose") and name != "enhanced")
        checked += 1
        if image is not None:
            dtype = image.header.get_data_dtype()
            want = np.float32 if name == "rescale" else np.int16
            if name.startswith("rtdose"):
                want = np.uint32
            if dtype != want:
                fail(f"{name}: stored dtype {dtype}, expected {np.dtype(want)}")
    # JPEG 2000 Lossless, decoded by smpfs (pydicom here has no decoder for it): the same
    # voxels and affine as the natively stored copy of the slice.
    j2k = os.path.join(volumes, uids["mr_j2k"] + ".nii")
    native = os.path.join(volumes, uids["mr"] + ".nii")
    if not os.path.exists(j2k):
        error = j2k + ".error"
        fail(f"mr_j2k: no volume ({open(error).read().strip() if os.path.exists(error) else 'no entry'})")
    elif os.path.exists(native):
        a, b = nibabel.load(j2k), nibabel.load(native)
        if not np.array_equal(np.asarray(a.get_fdata()), np.asarray(b.get_fdata())):
            fail("mr_j2k: decoded voxels differ from the native copy")
        if not np.allclose(a.affine, b.affine):
            fail(f"mr_j2k: affine\n{a.affine}\ndiffers from the native copy's\n{b.affine}")
        checked += 1
    for name, text in [("missing", "missing slice: a gap of 5.000 mm after slice 3 of 5, where the spacing is 2.500 mm"),
                       ("mixed", "mixed orientations: ImageOrientationPatient differs between slices"),
                       ("mr_jpegls", "transfer syntax 1.2.840.10008.1.2.4.80 cannot be decoded for volumes "
                                     "(native, RLE Lossless, JPEG and JPEG 2000 can; JPEG-LS cannot)")]:
        if uids[name] + ".nii" in listing:
            fail(f"{name}: a broken series has a volume")
        error = os.path.join(volumes, uids[name] + ".nii.error")
        if not os.path.exists(error):
            fail(f"{name}: no .nii.error")
        elif open(error).read() != text + "\n":
            fail(f"{name}: error text {open(error).read()!r}, expected {text!r}")

    by_series = collections.defaultdict(list)
    for root, _, names in os.walk(os.path.join(plain, "dicomdirtests")):
        for n in names:
            path = os.path.join(root, n)
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            if "SeriesInstanceUID" in ds and "Rows" in ds:
                by_series[ds.SeriesInstanceUID].append(path)
    bundled = 0
    for uid, paths in sorted(by_series.items()):
        nii = os.path.join(volumes, uid + ".nii")
        if os.path.exists(nii):
            check_volume(f"dicomdirtests {uid}", nii, paths, single_frame=True)
            bundled += 1
        elif not os.path.exists(nii + ".error"):
            fail(f"dicomdirtests {uid}: neither .nii nor .nii.error")
    if bundled == 0:
        fail("no bundled dicomdirtests series formed a volume")
    print(json.dumps({"designed": checked, "bundled": bundled, "entries": len(listing)}))
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
