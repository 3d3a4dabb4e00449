"""Builds DICOM series for the volume tests from pydicom's bundled files.

Usage: python3 make_series.py OUT_DIR [SLICES]

Writes under OUT_DIR: ct/ (CT_small.dcm as SLICES slices 2.5 mm apart along an oblique
normal, files in shuffled order), ct_rle/ (the same, RLE Lossless, own series), rescale/
(per-slice RescaleSlope: the float32 path), missing/ (one slice left out), mixed/ (one
slice with another orientation), rtdose/ (rtdose.dcm: 15 frames placed by
GridFrameOffsetVector) and rtdose_rle/ (rtdose_rle.dcm, own series), mr/, mr_j2k/ and
mr_jpegls/ (MR_small.dcm natively, as JPEG 2000 Lossless and as JPEG-LS Lossless, one
series each), enhanced/ (one Enhanced CT multi-frame file, geometry in functional groups,
frames in shuffled order), dicomdirtests/ (the
bundled series as they are) and notdicom.txt. Prints a JSON map from directory to
SeriesInstanceUID for the designed series.
"""
import json
import os
import random
import shutil
import sys

import numpy as np
import pydicom
from pydicom.uid import RLELossless, generate_uid

TEST_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
# An oblique orientation, so that any mix-up of axes shows in the affine.
ROW = np.array([0.9, 0.1, 0.0]) / np.linalg.norm([0.9, 0.1, 0.0])
COL = np.array([-ROW[1], ROW[0], 0.3]) / np.linalg.norm([-ROW[1], ROW[0], 0.3])
COL = COL - ROW * np.dot(COL, ROW)
COL /= np.linalg.norm(COL)
NORMAL = np.cross(ROW, COL)


def ct_series(out, count, series_uid, rle=False, slope=None, skip=None, tilt=None):
    os.makedirs(out, exist_ok=True)
    base = pydicom.dcmread(os.path.join(TEST_FILES, "CT_small.dcm"))
    origin = np.array([-120.5, 33.25, 17.0])
    order = list(range(count))
    random.Random(7).shuffle(order)
    for k in order:
        if skip == k:
            continue
        ds = base.copy()
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(round(v, 4)) for v in origin + 2.5 * k * NORMAL]
        orientation = list(ROW) + list(COL)
        if tilt == k:
            orientation = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
        ds.ImageOrientationPatient = [float(round(v, 6)) for v in orientation]
        ds.PixelSpacing = [0.75, 0.5]
        ds.RescaleSlope = slope(k) if slope else 1
        ds.RescaleIntercept = -1024
        arr = base.pixel_array.astype(np.int16) + np.int16(k * 7)
        ds.PixelData = arr.tobytes()
        if rle:
            ds.compress(RLELossless, arr)
        ds.save_as(os.path.join(out, f"slice{k:03d}.dcm"))


def enhanced_series(out, count, series_uid):
    """One Enhanced CT multi-frame file: CT_small's pixels as `count` frames (stored in
    shuffled order) whose geometry is only in the functional groups: shared pixel measures,
    orientation and rescale; a plane position per frame."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    os.makedirs(out, exist_ok=True)
    ds = pydicom.dcmread(os.path.join(TEST_FILES, "CT_small.dcm"))
    base = ds.pixel_array.astype(np.int16)
    for keyword in ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "RescaleSlope", "RescaleIntercept", "SliceLocation"]:
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    origin = np.array([-120.5, 33.25, 17.0])
    order = list(range(count))
    random.Random(11).shuffle(order)
    ds.NumberOfFrames = count
    measures, orientation, rescale, shared = Dataset(), Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = [0.75, 0.5]
    measures.SliceThickness = 2.5
    orientation.ImageOrientationPatient = [float(round(v, 6)) for v in list(ROW) + list(COL)]
    rescale.RescaleSlope = 1
    rescale.RescaleIntercept = -1024
    rescale.RescaleType = "HU"
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelValueTransformationSequence = Sequence([rescale])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in order:
        position, item = Dataset(), Dataset()
        position.ImagePositionPatient = [float(round(v, 4)) for v in origin + 2.5 * k * NORMAL]
        item.PlanePositionSequence = Sequence([position])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.stack([base + np.int16(k * 7) for k in order]).tobytes()
    ds.save_as(os.path.join(out, "enhanced.dcm"))


def resave(source, out, series_uid):
    os.makedirs(out, exist_ok=True)
    ds = pydicom.dcmread(os.path.join(TEST_FILES, source))
    ds.SeriesInstanceUID = series_uid
    ds.save_as(os.path.join(out, source))


def main():
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    uids = {name: generate_uid() for name in
            ["ct", "ct_rle", "rescale", "missing", "mixed", "rtdose", "rtdose_rle",
             "mr", "mr_j2k", "mr_jpegls", "enhanced"]}
    ct_series(os.path.join(out, "ct"), count, uids["ct"])
    if len(sys.argv) > 2:
        print(json.dumps({"ct": uids["ct"]}))
        return
    ct_series(os.path.join(out, "ct_rle"), count, uids["ct_rle"], rle=True)
    ct_series(os.path.join(out, "rescale"), 6, uids["rescale"], slope=lambda k: 0.5 + 0.25 * k)
    ct_series(os.path.join(out, "missing"), 6, uids["missing"], skip=3)
    ct_series(os.path.join(out, "mixed"), 6, uids["mixed"], tilt=2)
    resave("rtdose.dcm", os.path.join(out, "rtdose"), uids["rtdose"])
    resave("rtdose_rle.dcm", os.path.join(out, "rtdose_rle"), uids["rtdose_rle"])
    # The same MR slice stored natively, as JPEG 2000 Lossless and as JPEG-LS Lossless.
    resave("MR_small.dcm", os.path.join(out, "mr"), uids["mr"])
    resave("MR_small_jp2klossless.dcm", os.path.join(out, "mr_j2k"), uids["mr_j2k"])
    resave("MR_small_jpeg_ls_lossless.dcm", os.path.join(out, "mr_jpegls"), uids["mr_jpegls"])
    enhanced_series(os.path.join(out, "enhanced"), 6, uids["enhanced"])
    shutil.copytree(os.path.join(TEST_FILES, "dicomdirtests"), os.path.join(out, "dicomdirtests"))
    for name in os.listdir(os.path.join(out, "dicomdirtests")):
        if name.upper().startswith("DICOMDIR"):
            os.remove(os.path.join(out, "dicomdirtests", name))
    with open(os.path.join(out, "notdicom.txt"), "w") as f:
        f.write("not a DICOM file\n")
    print(json.dumps(uids))


if __name__ == "__main__":
    main()
