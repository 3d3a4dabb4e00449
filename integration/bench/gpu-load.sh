#!/usr/bin/env bash
# GPU load throughput on a CUDA machine, three ways in one run:
#   1. the smpfs load ioctl (smpfs decrypts into pinned staging memory and copies to the
#      client's device buffer by its CUDA IPC handle);
#   2. what a client does without it: read(2) from the mount into pinned host memory and
#      cudaMemcpy to the device (serial, and double-buffered in 8 MiB pieces);
#   3. the ceiling: raw pinned host-to-device copy bandwidth (cudaMemcpy, no file at all).
#
# Run as root from the repository root, on a machine with an NVIDIA GPU:
#   integration/bench/gpu-load.sh
# Environment:
#   SIZE_MIB=1024        size of the random test file
#   REPS=3               repetitions per measurement (the median is reported)
#   DEVICE=0             CUDA device ordinal
#   SMPFS_OPTS=          extra `-o` options for the measured smpfs mounts (e.g. cache_size=512M)
#   REPORT=FILE          also write the Markdown report to FILE
#   SMPFS_BIN=PATH       measure that binary; skips installing dependencies and building
#                        (for a prepared GPU host without network access)
# Needs: the NVIDIA driver (nvidia-smi works), python3 with a CUDA build of PyTorch
# (`pip install torch`); fuse3 is installed by integration/install-deps.sh.
#
# Everything lives on a dedicated tmpfs, so storage is out of the picture. Every timed
# mount measurement starts on a fresh mount (cold chunk cache); each smpfs load is preceded
# by a one-byte load that initialises CUDA in the daemon (its cost is reported apart).
# Without a GPU, the driver or PyTorch the script stops at once with the reason.
set -euo pipefail
shopt -s inherit_errexit

SIZE_MIB=${SIZE_MIB:-1024}
REPS=${REPS:-3}
DEVICE=${DEVICE:-0}
SMPFS_OPTS=${SMPFS_OPTS:-}
REPORT=${REPORT:-}
FILE=data.bin

log() { echo "==> $*" >&2; }
die() { echo "gpu-load: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (mounts a tmpfs)"
[ -f Cargo.toml ] && grep -q '^name = "smpfs"' Cargo.toml || die "run from the smpfs repository root"
[[ "$SIZE_MIB" =~ ^[1-9][0-9]*$ ]] || die "SIZE_MIB must be a positive integer"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer"
[[ "$DEVICE" =~ ^[0-9]+$ ]] || die "DEVICE must be a device ordinal"

# --- GPU prerequisites: fail clearly without them ------------------------------------------
command -v nvidia-smi >/dev/null \
  || die "no NVIDIA driver (nvidia-smi not found): this benchmark needs a CUDA GPU; it cannot run on this machine"
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader -i "$DEVICE" 2>/dev/null | head -n 1) \
  || die "nvidia-smi cannot see GPU $DEVICE: this benchmark needs a working CUDA GPU"
[ -n "$GPU_NAME" ] || die "nvidia-smi lists no GPU $DEVICE"
command -v python3 >/dev/null || die "python3 is needed"
python3 - "$DEVICE" <<'PY' || die "python3 needs a CUDA build of PyTorch that sees GPU $DEVICE (pip install torch)"
import sys
import torch
assert torch.cuda.is_available() and torch.cuda.device_count() > int(sys.argv[1])
PY

if [ -n "${SMPFS_BIN:-}" ]; then
  # A prepared machine (e.g. a GPU host without network access): measure the given binary.
  SMPFS=$SMPFS_BIN
else
  bash integration/install-deps.sh >&2
  log "cargo build --release --bin smpfs"
  cargo build --release --bin smpfs >&2
  SMPFS=$PWD/target/release/smpfs
fi
[ -x "$SMPFS" ] || die "$SMPFS was not built"
CLIENT_DIR=$PWD/integration/gpu

# --- scratch tmpfs and cleanup ------------------------------------------------------------
WORK=$(mktemp -d /tmp/smpfs-gpu-bench.XXXXXX)
MNT=$WORK/mnt

unmount_quietly() {
  local mnt=$1 i
  mountpoint -q "$mnt" 2>/dev/null || return 0
  umount "$mnt" 2>/dev/null || fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  for i in $(seq 50); do mountpoint -q "$mnt" 2>/dev/null || return 0; sleep 0.1; done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  unmount_quietly "$MNT"
  if mountpoint -q "$WORK" 2>/dev/null; then
    umount "$WORK" 2>/dev/null || umount -l "$WORK" 2>/dev/null || true
  fi
  rm -rf "$WORK" 2>/dev/null || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TMPFS_MIB=$(( SIZE_MIB * 5 / 2 + 256 ))
mount -t tmpfs -o "size=${TMPFS_MIB}M,mode=0700" smpfs-gpu-bench "$WORK"
mkdir -p "$WORK/plain" "$WORK/bucket" "$MNT"
BYTES=$(( SIZE_MIB * 1024 * 1024 ))
log "creating ${SIZE_MIB} MiB of random plaintext on tmpfs"
head -c "$BYTES" /dev/urandom > "$WORK/plain/$FILE"
RECIPIENT=$("$SMPFS" keygen --out "$WORK/id" 2>/dev/null)
"$SMPFS" seal "$WORK/plain/$FILE" --to "$RECIPIENT" --out "$WORK/bucket" 2>&1 | tail -n 1 >&2

smpfs_opts="audit=$WORK/audit.log${SMPFS_OPTS:+,$SMPFS_OPTS}"
smpfs_mount() {
  unmount_quietly "$MNT"
  "$SMPFS" mount "$WORK/bucket" "$MNT" -i "$WORK/id" -o "$smpfs_opts" --log-file "$WORK/smpfs.log"
  mountpoint -q "$MNT" || die "smpfs mount is not live (see $WORK/smpfs.log)"
}

# --- the client: one measurement per process, prints seconds ------------------------------
cat > "$WORK/client.py" <<'PY'
import ctypes, os, sys, time
import torch
sys.path.insert(0, os.environ["CLIENT_DIR"])
import smpfs_gpu

mode, device, path, plain = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
n = os.path.getsize(plain)
dev = torch.device("cuda", device)
torch.cuda.init()
dst = torch.empty(n, dtype=torch.uint8, device=dev)
torch.cuda.synchronize(dev)

def host_view(t):
    """A writable memoryview over a pinned host tensor (no numpy needed)."""
    return memoryview((ctypes.c_char * t.numel()).from_address(t.data_ptr())).cast("B")

def read_into(f, view):
    done = 0
    while done < len(view):
        got = f.readinto(view[done:])
        if not got:
            raise SystemExit(f"short read at {done}")
        done += got

if mode == "ioctl":
    one = torch.empty(1, dtype=torch.uint8, device=dev)
    t0 = time.perf_counter()
    smpfs_gpu.load_into(path, one, file_offset=n - 1)  # CUDA init + staging pinning
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    smpfs_gpu.load_into(path, dst)
    secs = time.perf_counter() - t0
    print(f"{secs:.6f} {first:.6f}")
elif mode == "pread":
    pinned = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    view = host_view(pinned)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        read_into(f, view)
    dst.copy_(pinned)
    torch.cuda.synchronize(dev)
    print(f"{time.perf_counter() - t0:.6f}")
elif mode == "pread-pipelined":
    piece = 8 << 20
    bufs = [torch.empty(piece, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
    events = [None, None]
    stream = torch.cuda.Stream(dev)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        for i, at in enumerate(range(0, n, piece)):
            k, size = i % 2, min(piece, n - at)
            if events[k] is not None:
                events[k].synchronize()
            read_into(f, host_view(bufs[k])[:size])
            with torch.cuda.stream(stream):
                dst[at:at + size].copy_(bufs[k][:size], non_blocking=True)
                events[k] = torch.cuda.Event()
                events[k].record(stream)
    torch.cuda.synchronize(dev)
    print(f"{time.perf_counter() - t0:.6f}")
elif mode == "h2d":
    src = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    src.fill_(7)
    best = None
    for _ in range(3):
        torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize(dev)
        secs = time.perf_counter() - t0
        best = secs if best is None else min(best, secs)
    print(f"{best:.6f}")
elif mode == "verify":
    smpfs_gpu.load_into(path, dst)
    expected = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    with open(plain, "rb", buffering=0) as f:
        read_into(f, host_view(expected))
    if not torch.equal(dst.cpu(), expected):
        raise SystemExit("the loaded bytes differ from the plaintext")
    print("ok")
else:
    raise SystemExit(f"unknown mode {mode}")
PY
client() { CLIENT_DIR=$CLIENT_DIR python3 "$WORK/client.py" "$1" "$DEVICE" "$MNT/$FILE" "$WORK/plain/$FILE"; }

declare -A RUNS
record() {  # label seconds
  local rate
  rate=$(python3 -c "print(f'{$BYTES / $2 / 1e9:.3f}')")
  RUNS[$1]="${RUNS[$1]:-}${RUNS[$1]:+ }$rate"
  log "  $1: $2 s = $rate GB/s"
}
median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" $1; }

L_IOCTL="smpfs load ioctl"
L_PREAD="read(2) from the mount + cudaMemcpy (serial)"
L_PIPE="read(2) from the mount + cudaMemcpy (double-buffered 8 MiB)"
L_H2D="raw pinned host-to-device copy"
FIRST=()

for rep in $(seq "$REPS"); do
  log "repetition $rep/$REPS"
  smpfs_mount
  out=$(client ioctl)
  read -r secs first <<< "$out"
  record "$L_IOCTL" "$secs"
  FIRST+=("$first")
  smpfs_mount
  record "$L_PREAD" "$(client pread)"
  smpfs_mount
  record "$L_PIPE" "$(client pread-pipelined)"
  unmount_quietly "$MNT"
  record "$L_H2D" "$(client h2d)"
done

log "verifying a load against the plaintext (untimed)"
smpfs_mount
[ "$(client verify)" = ok ] || die "the ioctl loaded different bytes"
unmount_quietly "$MNT"
AUDITED=$(grep -c '"event":"gpu_load"' "$WORK/audit.log" || true)

M_IOCTL=$(median "${RUNS[$L_IOCTL]}")
M_PREAD=$(median "${RUNS[$L_PREAD]}")
M_PIPE=$(median "${RUNS[$L_PIPE]}")
M_H2D=$(median "${RUNS[$L_H2D]}")
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
row() { printf '| %s | %s | %s |\n' "$1" "$(median "${RUNS[$1]}")" "$(echo "${RUNS[$1]}" | sed 's/ /, /g')"; }

report() {
  echo "### GPU load throughput ($SIZE_MIB MiB random file, median of $REPS, GB/s = 10^9 B/s)"
  echo
  echo "| measurement | median GB/s | all runs GB/s |"
  echo "|---|---:|---|"
  row "$L_IOCTL"
  row "$L_PREAD"
  row "$L_PIPE"
  row "$L_H2D"
  echo
  echo "- ioctl / read+cudaMemcpy serial: **$(ratio "$M_IOCTL" "$M_PREAD")x**; / double-buffered: **$(ratio "$M_IOCTL" "$M_PIPE")x**"
  echo "- ioctl / raw pinned H2D: **$(ratio "$M_IOCTL" "$M_H2D")** (the copy ceiling; decryption is usually the limit)"
  echo "- first load on a fresh mount (CUDA init in the daemon, staging pinned, 1 byte): $(echo "${FIRST[*]}" | sed 's/ / s, /g') s"
  echo "- correctness: one load compared byte for byte with the plaintext; $AUDITED gpu_load audit records written"
  echo "- smpfs mount options: $smpfs_opts; chunk size 64 KiB"
  echo "- GPU: $GPU_NAME (device $DEVICE); driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader -i "$DEVICE" | head -n 1)"
  echo "- CPU: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1); cores: $(nproc); PyTorch $(python3 -c 'import torch; print(torch.__version__)')"
  echo "- kernel: $(uname -r); date: $(date -u '+%Y-%m-%d %H:%M UTC'); smpfs: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
}

if [ -n "$REPORT" ]; then
  report | tee "$REPORT"
else
  report
fi
