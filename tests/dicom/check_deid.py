"""Checks de-identified DICOM files against their originals with pydicom.

Usage: python3 check_deid.py CONFIG.json

CONFIG: {"plain": DIR, "deid": DIR, "table": [[group, element, group_mask, element_mask,
code], ...], "keep": [[group, element], ...], "summary_out": FILE}. Every file under "deid"
(decrypted with `smpfs cat`) is compared with the file of the same relative path under
"plain". Prints one line per failure and exits 1 if there is any; writes a JSON summary
(counts, and each file's Patient ID and Study/Series Instance UIDs) to "summary_out".
"""
import json
import os
import sys

import pydicom
from pydicom.tag import Tag

KEPT_GEOMETRY = ["PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient",
                 "SliceThickness", "Rows", "Columns", "SOPClassUID", "Modality"]
LINKED_UIDS = ["StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID"]
# Written out here from PS3.15 Table E.1-1 (Basic Profile, no options), independently of
# smpfs's own table (which CONFIG passes in): attributes whose original value must not
# survive de-identification anywhere in the data set.
ANNEX_E_MUST_CHANGE = [
    "AccessionNumber", "AcquisitionDate", "AcquisitionDateTime", "AcquisitionTime",
    "AdmittingDiagnosesDescription", "ContentDate", "ContentTime", "DeviceSerialNumber",
    "FrameOfReferenceUID", "InstitutionAddress", "InstitutionName",
    "InstitutionalDepartmentName", "NameOfPhysiciansReadingStudy", "OperatorsName",
    "OtherPatientIDs", "OtherPatientNames", "PatientAddress", "PatientAge",
    "PatientBirthDate", "PatientBirthTime", "PatientComments", "PatientID", "PatientName",
    "PatientSex", "PatientSize", "PatientWeight", "PerformingPhysicianName",
    "PhysiciansOfRecord", "ReferringPhysicianName", "RequestingPhysician", "SeriesDate",
    "SeriesInstanceUID", "SeriesTime", "SOPInstanceUID", "StationName", "StudyDate",
    "StudyDescription", "StudyID", "StudyInstanceUID", "StudyTime",
]


def main():
    config = json.load(open(sys.argv[1]))
    table = [tuple(row) for row in config["table"]]
    exact = {(g, e): code for g, e, gm, em, code in table if gm == 0xFFFF and em == 0xFFFF}
    masked = [(g, e, gm, em, code) for g, e, gm, em, code in table if gm != 0xFFFF or em != 0xFFFF]
    keep = {tuple(t) for t in config["keep"]}

    def code_of(tag):
        key = (tag.group, tag.element)
        if key in keep:
            return None
        if key in exact:
            return exact[key]
        for g, e, gm, em, code in masked:
            if tag.group & gm == g and tag.element & em == e:
                return code
        return None

    def walk(dataset):
        for elem in dataset:
            yield elem
            if elem.VR == "SQ":
                for item in elem.value:
                    yield from walk(item)

    def values(elem):
        value = elem.value
        if value is None or value == "" or value == b"":
            return []
        if isinstance(value, (list, pydicom.multival.MultiValue)):
            return [str(v) for v in value if str(v) != ""]
        return [str(value)]

    failures = []
    fail = failures.append
    files = 0
    changed = 0
    links = {name: {} for name in LINKED_UIDS + ["PatientID"]}
    per_file = {}
    independent_checked = set()
    for root, _, names in os.walk(config["deid"]):
        for name in sorted(names):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, config["deid"])
            before = pydicom.dcmread(os.path.join(config["plain"], rel), force=True)
            after = pydicom.dcmread(path)
            raw = open(path, "rb").read()
            files += 1
            kept = {}
            for elem in walk(after):
                if elem.tag.is_private:
                    fail(f"{rel}: private attribute {elem.tag} survived")
                kept.setdefault(elem.tag, set()).update(values(elem))
                if code_of(elem.tag) == "U":
                    for uid in values(elem):
                        if not uid.startswith("2.25."):
                            fail(f"{rel}: {elem.tag} holds a UID that was not mapped")
            for elem in walk(before):
                code = code_of(elem.tag)
                if code is None or elem.VR == "SQ":
                    continue
                for value in values(elem):
                    changed += 1
                    if value in kept.get(elem.tag, ()):
                        fail(f"{rel}: {elem.tag} ({code}) kept its original value")
            after_values = {}
            for elem in walk(after):
                after_values.setdefault(elem.keyword, set()).update(values(elem))
            for elem in walk(before):
                if elem.keyword in ANNEX_E_MUST_CHANGE and \
                        (elem.tag.group, elem.tag.element) not in keep:
                    independent_checked.add(elem.keyword)
                    for value in values(elem):
                        if value in after_values.get(elem.keyword, ()):
                            fail(f"{rel}: {elem.keyword} kept its original value "
                                 "(independent Annex E list)")
            for keyword in ("PatientName", "PatientID", "OtherPatientIDs"):
                original = str(before.get(keyword, "") or "").strip()
                if len(original) >= 4 and not original.isdigit() and original.encode() in raw:
                    fail(f"{rel}: the original {keyword} appears in the output bytes")
            for keyword in KEPT_GEOMETRY:
                if keyword in before and (keyword not in after
                                          or before[keyword].value != after[keyword].value):
                    fail(f"{rel}: {keyword} changed")
            if "PixelData" in before and before.PixelData != after.PixelData:
                fail(f"{rel}: pixel data changed")
            if after.get("PatientIdentityRemoved") != "YES":
                fail(f"{rel}: Patient Identity Removed is not YES")
            if "SOPInstanceUID" in after and \
                    after.file_meta.MediaStorageSOPInstanceUID != after.SOPInstanceUID:
                fail(f"{rel}: meta and data set SOP Instance UIDs differ")
            for keyword, mapping in links.items():
                if keyword in before and str(before.get(keyword)) != "":
                    mapping.setdefault(str(before.get(keyword)), set()).add(str(after.get(keyword)))
            per_file[rel] = {k: str(after.get(k, "")) for k in
                             ("PatientID", "StudyInstanceUID", "SeriesInstanceUID")}
    for keyword, mapping in links.items():
        for original, new in mapping.items():
            if len(new) != 1:
                fail(f"{keyword}: one original maps to {len(new)} values")
            if original in new:
                fail(f"{keyword}: an original value was kept")
        images = [next(iter(v)) for v in mapping.values() if len(v) == 1]
        if len(set(images)) != len(images):
            fail(f"{keyword}: two originals map to the same value")
    summary = {
        "files": files,
        "original_values_checked": changed,
        "distinct": {k: len(v) for k, v in links.items()},
        "independent_attributes_checked": sorted(independent_checked),
        "per_file": per_file,
    }
    json.dump(summary, open(config["summary_out"], "w"), indent=1)
    for line in failures[:50]:
        print("FAIL", line)
    print(f"checked {files} files, {changed} original Annex E values; {len(failures)} failures")
    sys.exit(1 if failures else 0)


main()
