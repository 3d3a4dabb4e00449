#!/usr/bin/env bash
# Mount time of a large Google Drive tree: `smpfs mount` (which walks the folder tree with
# files.list before it answers) + `ls` of the root, against the fake Drive server of the
# tests (tests/fake_gdrive.py) answering each files.list after LIST_DELAY seconds, as a
# real server on the network would. Also reported: the time a walk one folder after the
# other would need at that delay (requests x delay), the bound the walk had before it
# listed the folders of a level at once.
#
# Run as root from the repository root:
#   integration/bench/gdrive-list.sh
# Environment:
#   PATIENTS=10      folders under the root; each holds 10 study folders of 10 files
#   LIST_DELAY=0.05  seconds the fake waits before each files.list answer
#   REPS=3           repetitions (every one is reported, and the median)
#   REPORT=FILE      also write the Markdown report to FILE
#   SMPFS_BIN=PATH   measure that binary instead of building a release one
#
# The files are tiny and not sealed: mounting lists them and builds the tree, and headers
# are read only when a directory is first looked at, so the timed mount + `ls` of the root
# measures the walk and the tree. Informational: exits 0 either way.
set -euo pipefail
shopt -s inherit_errexit

PATIENTS=${PATIENTS:-10}
LIST_DELAY=${LIST_DELAY:-0.05}
REPS=${REPS:-3}
REPORT=${REPORT:-}

BENCH=gdrive-list
source integration/bench/remote-common.sh
positive PATIENTS "$PATIENTS" REPS "$REPS"
bench_setup

start_fake_drive
OPTS="$OPTS,audit=off"

log "making $PATIENTS x 10 folders of 10 files on the fake"
python3 - "$ENDPOINT" "$PATIENTS" "$LIST_DELAY" <<'PY'
import base64, json, sys, urllib.request
endpoint, patients, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def admin(action, body):
    request = urllib.request.Request(f"{endpoint}/_admin/{action}", data=json.dumps(body).encode(), method="POST")
    return json.load(urllib.request.urlopen(request))
folder = "application/vnd.google-apps.folder"
root = admin("file", {"name": "bench", "mimeType": folder})["id"]
for p in range(patients):
    patient = admin("file", {"name": f"p{p:03d}", "mimeType": folder, "parent": root})["id"]
    for s in range(10):
        study = admin("file", {"name": f"s{s}", "mimeType": folder, "parent": patient})["id"]
        for f in range(10):
            admin("file", {"name": f"f{f}.dcm", "parent": study, "data": base64.b64encode(b"x").decode()})
admin("config", {"list_delay": delay})
PY
"$SMPFS" keygen --out "$WORK/id.key" >/dev/null 2>&1

now() { date +%s.%N; }
runs=()
for rep in $(seq "$REPS"); do
  before=$(curl -s -X POST -d '{}' "$ENDPOINT/_admin/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
  start=$(now)
  "$SMPFS" mount "gdrive:///My Drive/bench" "$MNT" -i "$WORK/id.key" -o "$OPTS" 2>"$WORK/mount.err" \
    || die "smpfs mount failed: $(cat "$WORK/mount.err")"
  n=$(ls "$MNT" | wc -l)
  end=$(now)
  umount "$MNT"
  [ "$n" = "$PATIENTS" ] || die "the mount's root holds $n entries, not $PATIENTS"
  after=$(curl -s -X POST -d '{}' "$ENDPOINT/_admin/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
  runs+=("$(python3 -c "print(f'{$end - $start:.2f}')")")
  REQUESTS=$(( after - before - 1 ))
  log "rep $rep: ${runs[-1]} s, $REQUESTS requests"
done

MEDIAN=$(median "${runs[@]}")
FOLDERS=$(( 1 + PATIENTS * 11 ))
SERIAL=$(python3 -c "print(f'{$FOLDERS * $LIST_DELAY:.2f}')")
report=$(cat <<MD
| measurement ($FOLDERS folders, $(( PATIENTS * 100 )) files, files.list answered after $LIST_DELAY s) | median s | runs s |
|---|---|---|
| smpfs mount + ls of the root ($REQUESTS requests) | **$MEDIAN** | ${runs[*]} |
| a walk one folder after the other, at least ($FOLDERS lists x $LIST_DELAY s) | $SERIAL | |

smpfs mount / one-folder-at-a-time bound: **$(python3 -c "print(f'{$MEDIAN / $SERIAL:.2f}')")**
MD
)
echo "$report"
[ -z "$REPORT" ] || echo "$report" > "$REPORT"
