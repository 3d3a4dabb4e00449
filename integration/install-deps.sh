#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh Debian machine (run as root).
# Idempotent: a second run only checks what is already there.
set -euo pipefail

need_apt=()
for pkg_cmd in fuse3:fusermount3 dcmtk:dcmdump curl:curl systemd:systemd-analyze libcap2-bin:setcap util-linux:unshare softhsm2:softhsm2-util; do
  command -v "${pkg_cmd#*:}" >/dev/null 2>&1 || need_apt+=("${pkg_cmd%%:*}")
done
if [ "${SMPFS_BENCH:-0}" = 1 ]; then
  for pkg_cmd in gocryptfs:gocryptfs fio:fio; do
    command -v "${pkg_cmd#*:}" >/dev/null 2>&1 || need_apt+=("${pkg_cmd%%:*}")
  done
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Ordinary users mount through the setuid fusermount3, which needs /dev/fuse open to all:
# Debian's udev rule makes it 0666, but a container without udev leaves it 0600 (root only).
if [ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ]; then
  echo "==> chmod 0666 /dev/fuse (as udev sets it on Debian)"
  chmod 0666 /dev/fuse
fi

if ! python3 -c 'import pydicom' >/dev/null 2>&1; then
  echo "==> pip install pydicom"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore 'pydicom>=2.4'
fi

# The volume tests load the virtual .nii files with nibabel and stack pydicom arrays.
if ! python3 -c 'import numpy, nibabel' >/dev/null 2>&1; then
  echo "==> pip install numpy nibabel"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore numpy nibabel
fi

# The Python package (python/, `import smpfs`). tests/python.rs imports it from the source
# tree; installing it here checks that `pip install ./python` builds and installs it as a
# user gets it (always reinstalled, from a clean build directory, so it is this checkout's).
repo=$(cd "$(dirname "$0")/.." && pwd)
echo "==> pip install ./python"
rm -rf "$repo/python/build" "$repo/python/smpfs.egg-info"
(cd "$repo" && python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore ./python)
(cd / && python3 -c 'import sys, smpfs, smpfs.torch; assert "torch" not in sys.modules; print("    smpfs", smpfs.__version__, "installed at", smpfs.__file__)')

# The mmap tests map files on a mount with pyarrow (Arrow IPC) and safetensors.
if ! python3 -c 'import pyarrow, safetensors.numpy' >/dev/null 2>&1; then
  echo "==> pip install pyarrow safetensors"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore pyarrow safetensors
fi

# The S3 tests start a moto server on loopback (5.2.5+: earlier ones answer
# CompleteMultipartUpload with the wrong XML root).
if ! python3 - <<'PY' >/dev/null 2>&1
import importlib.metadata as m
v = tuple(int(x) for x in m.version("moto").split(".")[:3])
assert v >= (5, 2, 5)
import flask, flask_cors  # the server extra
PY
then
  echo "==> pip install moto[server]"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore 'moto[server]>=5.2.5'
fi

# The Google Drive tests start tests/fake_gdrive.py, which checks the signatures of service-account JWTs
# with `cryptography` (and generates the test key with it).
if ! python3 -c 'import cryptography.hazmat.primitives.asymmetric.rsa' >/dev/null 2>&1; then
  echo "==> pip install cryptography"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore 'cryptography>=3.4'
fi

# The Azure tests start Azurite's Blob server on loopback (Node.js; npm comes with it).
if ! command -v azurite-blob >/dev/null 2>&1; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "==> apt-get install npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  echo "==> npm install -g azurite"
  npm install -g --silent --no-audit --no-fund azurite >/dev/null
fi
