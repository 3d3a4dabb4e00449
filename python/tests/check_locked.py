"""A locked mount (`smpfs lock`) raises LockedError from every entry point, also through a
descriptor opened before the lock; after `smpfs unlock` the same calls succeed.

Usage: check_locked.py MOUNT PLAIN SMPFS   (MOUNT/a.npy is PLAIN/a.npy sealed; SMPFS the
binary, to lock and unlock MOUNT)
"""
import errno
import os
import subprocess
import sys

from _common import check, done, raises, source_package

smpfs = source_package()
from smpfs.torch import SecureDataset, decode_raw  # noqa: E402

mount, plain, binary = sys.argv[1], sys.argv[2], sys.argv[3]
path = os.path.join(mount, "a.npy")
expected = open(os.path.join(plain, "a.npy"), "rb").read()
ds = SecureDataset(mount, pattern="*.npy")
check(ds[0].tobytes() == expected[128:], "dataset before the lock")
early = os.open(path, os.O_RDONLY)

subprocess.run([binary, "lock", mount], check=True)
for fn in (smpfs.info, smpfs.verify, decode_raw):
    e = raises(smpfs.LockedError, fn, path)
    check(e.errno == errno.EACCES and e.detail == "locked" and e.filename == path, repr(e))
    check("smpfs unlock" in str(e), str(e))
with smpfs.ShmBuffer(len(expected)) as buf:
    e = raises(smpfs.LockedError, smpfs.load_into, path, buf)
    check(e.detail == "locked", repr(e))
    # Through the descriptor opened before the lock: the ioctls and reads are refused too.
    raises(smpfs.LockedError, smpfs.load_into, early, buf)
    check(buf.read() == bytes(len(expected)), "nothing loaded while locked")
raises(smpfs.LockedError, smpfs.info, early)
# A dataset cannot be built while locked (no listing), nor read if built before.
e = raises(smpfs.LockedError, SecureDataset, mount, pattern="*.npy")
check(e.filename == mount, repr(e))
check(smpfs.mountpoint(path) == os.path.realpath(mount), "mountpoint() asks no daemon")
e = raises(smpfs.LockedError, ds.__getitem__, 0)
check(e.errno == errno.EACCES and e.filename == path, repr(e))
raises(smpfs.LockedError, ds.verify)

subprocess.run([binary, "unlock", mount], check=True)
check(smpfs.info(path).plaintext_size == len(expected), "info after unlock")
check(smpfs.verify(path) == len(expected), "verify after unlock")
with smpfs.ShmBuffer(len(expected)) as buf:
    check(smpfs.load_into(path, buf) == len(expected) and buf.read() == expected, "load")
check(ds[0].tobytes() == expected[128:], "dataset after unlock")
os.close(early)
done("locked")
