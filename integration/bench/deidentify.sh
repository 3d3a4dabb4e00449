#!/usr/bin/env bash
# De-identification speed: `smpfs seal --deidentify` vs a pydicom script applying the same
# profile (PS3.15 Table E.1-1 as smpfs resolves it, read from src/dicom/profile.rs; private
# attributes removed; UIDs and Patient ID mapped with a keyed hash) to the same files, in the
# same run. Both read from and write to one tmpfs: smpfs seals into a bucket there, the
# pydicom script writes plain de-identified files there. Both use every core (smpfs: its
# thread pool; pydicom: one worker process per core).
#
# Run from the repository root:
#   integration/bench/deidentify.sh
# Environment:
#   COPIES=20     copies of pydicom's readable Part 10 test files (about 150 files each)
#   REPS=3        repetitions per tool (the median is reported)
#   REPORT=FILE   also write the Markdown report to FILE
# The target (smpfs >= 5x the pydicom script) is informational: exit status is 0 either way.
set -euo pipefail
shopt -s inherit_errexit

COPIES=${COPIES:-20}
REPS=${REPS:-3}
REPORT=${REPORT:-}

log() { echo "==> $*" >&2; }
die() { echo "deidentify: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (mounts a tmpfs)"
[ -f Cargo.toml ] && grep -q '^name = "smpfs"' Cargo.toml || die "run from the smpfs repository root"
[[ "$COPIES" =~ ^[1-9][0-9]*$ ]] || die "COPIES must be a positive integer"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer"

bash integration/install-deps.sh >&2
log "cargo build --release --bin smpfs"
cargo build --release --bin smpfs >&2
SMPFS=$PWD/target/release/smpfs
PROFILE_RS=$PWD/src/dicom/profile.rs

WORK=$(mktemp -d /tmp/smpfs-deid-bench.XXXXXX)
cleanup() {
  mountpoint -q "$WORK" 2>/dev/null && umount "$WORK"
  rm -rf "$WORK"
}
trap cleanup EXIT
mount -t tmpfs -o size=4g tmpfs "$WORK"

# --- input: pydicom's test files that both tools read as Part 10 files, COPIES times ------
log "preparing $COPIES copies of pydicom's readable test files on tmpfs"
python3 -W ignore - "$WORK/plain" "$COPIES" <<'PY'
import os, shutil, sys
import pydicom
src = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
out, copies = sys.argv[1], int(sys.argv[2])
chosen = []
for root, _, names in os.walk(src):
    for name in sorted(names):
        path = os.path.join(root, name)
        try:
            ds = pydicom.dcmread(path)
            ds.file_meta.TransferSyntaxUID  # a Part 10 file with a meta group
            if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
                continue
        except Exception:
            continue
        chosen.append(path)
for i in range(copies):
    for n, path in enumerate(chosen):
        target = os.path.join(out, f"{i:04d}", f"{n:04d}.dcm")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(path, target)
print(len(chosen) * copies)
PY
# Keep only the files smpfs de-identifies (a warm-up run), so both tools get the same set.
RECIPIENT=$("$SMPFS" keygen --out "$WORK/id" 2>/dev/null)
"$SMPFS" seal "$WORK/plain" --to "$RECIPIENT" --out "$WORK/warmup" \
  --deidentify --deid-key "$WORK/deid.key" >/dev/null 2>&1
(cd "$WORK/plain" && find . -type f) | while IFS= read -r rel; do
  [ -f "$WORK/warmup/$rel" ] || rm -f "$WORK/plain/$rel"
done
rm -rf "$WORK/warmup"
FILES=$(find "$WORK/plain" -type f | wc -l)
BYTES=$(du -sb "$WORK/plain" | cut -f1)
log "$FILES files, $BYTES bytes"

# --- the pydicom script: the same profile --------------------------------------------------
cat > "$WORK/deid_pydicom.py" <<'PY'
"""De-identifies every file under SRC into DST with pydicom, applying smpfs's basic profile:
Table E.1-1 rows from src/dicom/profile.rs (X remove; Z, X/Z empty; D, Z/D, X/D, X/Z/D dummy;
U map; X/Z/U* clean items), Patient ID and Name pseudonymized, private attributes removed,
group lengths removed, UN sequences removed, identity-removed attributes added."""
import hashlib, hmac, os, re, sys
from multiprocessing import Pool
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

SRC, DST, PROFILE_RS = sys.argv[1:4]
KEY = b"\x01" * 32
ROWS = re.findall(r'(exact|masked)\((0x[0-9A-F]+), (0x[0-9A-F]+)(?:, (0x[0-9A-F]+), (0x[0-9A-F]+))?, (\w+), "',
                  open(PROFILE_RS).read())
EXACT, MASKED = {}, []
for kind, g, e, gm, em, code in ROWS:
    if kind == "exact":
        EXACT[(int(g, 16) << 16) | int(e, 16)] = code
    else:
        MASKED.append((int(g, 16), int(e, 16), int(gm, 16), int(em, 16), code))
ACTION = {"X": "remove", "Z": "empty", "XZ": "empty", "D": "dummy", "ZD": "dummy", "XD": "dummy",
          "XZD": "dummy", "U": "uid", "XZUStar": "clean"}
DUMMY = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000D", "DS": "0",
         "IS": "0", "UR": "urn:smpfs:anonymized"}


def code_of(tag):
    if tag in EXACT:
        return EXACT[tag]
    for g, e, gm, em, code in MASKED:
        if (tag >> 16) & gm == g and tag & 0xFFFF & em == e:
            return code
    return None


def map_uid(uid):
    digest = hmac.new(KEY, b"uid" + str(uid).rstrip("\0 ").encode(), hashlib.sha256).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def pseudonym(pid):
    return "SMPFS-" + hmac.new(KEY, b"pid" + str(pid).strip().encode(), hashlib.sha256).hexdigest()[:20].upper()


def clean(ds, root_pseudonym):
    for elem in list(ds):
        tag = int(elem.tag)
        if elem.tag.is_private or elem.tag.element == 0:
            del ds[elem.tag]
            continue
        code = code_of(tag)
        if elem.VR == "UN" and code not in ("X", "Z", "XZ"):
            del ds[elem.tag]  # (smpfs removes only UN sequences; close enough for timing)
            continue
        if tag in (0x00100020, 0x00100010):
            elem.value = pseudonym(elem.value) if tag == 0x00100020 else root_pseudonym
            continue
        action = ACTION.get(code) if code else None
        if elem.VR == "SQ":
            if action == "remove":
                del ds[elem.tag]
            elif action == "empty":
                elem.value = Sequence()
            else:
                for item in elem.value:
                    clean(item, root_pseudonym)
        elif action == "remove":
            del ds[elem.tag]
        elif action == "empty":
            elem.value = None
        elif action == "uid" or (action in ("dummy", "clean") and elem.VR == "UI"):
            values = elem.value if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]
            elem.value = [map_uid(v) for v in values if v] or None
        elif action == "clean":
            elem.value = None
        elif action == "dummy":
            elem.value = DUMMY.get(elem.VR, "ANONYMIZED") if elem.VR in DUMMY or elem.VR in (
                "AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT") else elem.value


def one(rel):
    ds = pydicom.dcmread(os.path.join(SRC, rel))
    root = pseudonym(ds.PatientID) if ds.get("PatientID") else ""
    clean(ds, root)
    if "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                    "ReceivingApplicationEntityTitle", "PrivateInformationCreatorUID",
                    "PrivateInformation"):
        if keyword in ds.file_meta:
            delattr(ds.file_meta, keyword)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "pydicom basic (PS3.15 2026c Table E.1-1)"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = Sequence([code])
    ds.LongitudinalTemporalInformationModified = "REMOVED"
    out = os.path.join(DST, rel)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    ds.save_as(out, enforce_file_format=False)
    return 1


if __name__ == "__main__":
    rels = [os.path.relpath(os.path.join(r, n), SRC) for r, _, ns in os.walk(SRC) for n in ns]
    with Pool(os.cpu_count()) as pool:
        done = sum(pool.map(one, rels, chunksize=16))
    print(done)
PY

# --- measurements --------------------------------------------------------------------------
now() { date +%s.%N; }
smpfs_runs=()
pydicom_runs=()
busy=$(awk '{print $1}' /proc/loadavg)
for rep in $(seq "$REPS"); do
  rm -rf "$WORK/bucket" "$WORK/out-pydicom"
  start=$(now)
  "$SMPFS" seal "$WORK/plain" --to "$RECIPIENT" --out "$WORK/bucket" \
    --deidentify --deid-key "$WORK/deid.key" >/dev/null 2>"$WORK/smpfs.log"
  end=$(now)
  done_smpfs=$(grep -o 'sealed [0-9]* of' "$WORK/smpfs.log" | awk '{print $2}')
  smpfs_runs+=("$(python3 -c "print(f'{$done_smpfs / ($end - $start):.1f}')")")
  log "smpfs run $rep: $done_smpfs files in $(python3 -c "print(f'{$end - $start:.2f}')") s"

  start=$(now)
  done_py=$(python3 -W ignore "$WORK/deid_pydicom.py" "$WORK/plain" "$WORK/out-pydicom" "$PROFILE_RS")
  end=$(now)
  pydicom_runs+=("$(python3 -c "print(f'{$done_py / ($end - $start):.1f}')")")
  log "pydicom run $rep: $done_py files in $(python3 -c "print(f'{$end - $start:.2f}')") s"
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
smpfs_median=$(median "${smpfs_runs[@]}")
pydicom_median=$(median "${pydicom_runs[@]}")
ratio=$(python3 -c "print(f'{$smpfs_median / $pydicom_median:.2f}')")
verdict=$(python3 -c "print('PASS' if $smpfs_median >= 5 * $pydicom_median else 'MISS')")

report=$(cat <<EOF
De-identification, $FILES files ($BYTES bytes: $COPIES copies of pydicom's readable test
files), tmpfs in and out, median of $REPS runs, $(nproc) CPUs, load average $busy before:

| tool | median files/s | all runs files/s |
|---|---:|---|
| smpfs seal --deidentify (de-identify + seal) | $smpfs_median | ${smpfs_runs[*]} |
| pydicom script, $(nproc) worker processes (de-identify + write) | $pydicom_median | ${pydicom_runs[*]} |

| target | measured | result |
|---|---|---|
| smpfs >= 5x the pydicom script | **${ratio}x** | $verdict |
EOF
)
echo "$report"
[ -n "$REPORT" ] && echo "$report" > "$REPORT"
exit 0
