"""info, verify and load_into on sealed files of a mount with -o gpu_sink=host, and the
typed errors for paths that are not on smpfs.

Usage: check_client.py MOUNT PLAIN   (MOUNT/vol.raw and MOUNT/dir/small.bin are sealed
copies of PLAIN/vol.raw and PLAIN/dir/small.bin)
"""
import errno
import os
import pickle
import sys

from _common import check, done, raises, source_package

smpfs = source_package()
mount, plain = sys.argv[1], sys.argv[2]
path = os.path.join(mount, "vol.raw")
expected = open(os.path.join(plain, "vol.raw"), "rb").read()

# info: the sealed file's size, chunk size and id (the same id as its xattr).
info = smpfs.info(path)
check(info.plaintext_size == len(expected) and info.chunk_size == 65536, info)
check(info.abi_version == smpfs.ABI_VERSION == 1, info)
check(not info.volume and info.shape == () and info.dtype_name is None, info)
check(info.file_id == os.getxattr(path, "user.smpfs.file_id").decode(), info)
with open(path, "rb") as f:
    check(smpfs.info(f.fileno()) == info, "info by descriptor")
check(smpfs.mountpoint(path) == os.path.realpath(mount), smpfs.mountpoint(path))
check(smpfs.mountpoint(os.path.join(plain, "vol.raw")) is None, "plain file on smpfs?")

# verify reads everything: the byte count, also for a file in a subdirectory.
check(smpfs.verify(path) == len(expected), "verify count")
small = open(os.path.join(plain, "dir", "small.bin"), "rb").read()
check(smpfs.verify(os.path.join(mount, "dir", "small.bin")) == len(small), "verify small")
check(smpfs.verify(os.path.join(mount, "dir", "small.bin"), buffer_size=7) == len(small), "tiny buffer")

# load_into through the host sink: whole file, then a range at an odd offset.
with smpfs.ShmBuffer(len(expected)) as buf:
    check(smpfs.load_into(path, buf) == len(expected), "whole load")
    check(buf.read() == expected, "whole load bytes")
with smpfs.ShmBuffer(1000) as buf:
    check(smpfs.load_into(path, buf, file_offset=4097, length=999) == 999, "range load")
    check(buf.read()[:999] == expected[4097:5096], "range bytes")
    check(smpfs.load_into(path, buf, length=0) == 0, "empty load")
    e = raises(smpfs.SmpfsError, smpfs.load_into, path, buf, file_offset=len(expected) - 10, length=11)
    check(e.errno == errno.EINVAL and e.detail == "past_eof", repr(e))
    check("past the end of the file" in str(e) and e.filename == path, str(e))
    check(type(e) is smpfs.SmpfsError, "EINVAL refusals are the base class")
    e = raises(smpfs.NoGpuError, smpfs.load, path, 3, b"/nothing\0", 0, 1)
    check(e.errno == errno.ENODEV and e.detail == "bad_device", repr(e))
    raises(ValueError, smpfs.load_into, path, buf, length=1001)
raises(TypeError, smpfs.load_into, path, bytearray(10))

# Not on smpfs: the plain copy, a directory of the mount, a missing file.
plain_file = os.path.join(plain, "vol.raw")
for fn in (smpfs.info, smpfs.verify):
    e = raises(smpfs.NotOnSmpfsError, fn, plain_file)
    check(e.errno == errno.ENOTTY and e.detail == "not_smpfs" and e.filename == plain_file, repr(e))
    check("not a file on an smpfs mount" in str(e), str(e))
with smpfs.ShmBuffer(10) as buf:
    raises(smpfs.NotOnSmpfsError, smpfs.load_into, plain_file, buf)
e = raises(smpfs.NotOnSmpfsError, smpfs.info, os.path.join(mount, "dir"))
check("directory" in str(e), str(e))
raises(IsADirectoryError, smpfs.verify, os.path.join(mount, "dir"))
e = raises(FileNotFoundError, smpfs.verify, os.path.join(mount, "missing.bin"))
check(not isinstance(e, smpfs.SmpfsError), "a missing file is the standard error")

# Every error is an OSError, pickles with its class and detail (for worker processes), and
# can be built from a message alone (as torch's DataLoader re-raises worker errors).
for cls in (smpfs.SmpfsError, smpfs.NotOnSmpfsError, smpfs.LockedError, smpfs.IntegrityError,
            smpfs.AuditError, smpfs.StorageError, smpfs.NoGpuError):
    check(issubclass(cls, OSError) and issubclass(cls, smpfs.SmpfsError), cls)
    check(str(cls("message")) == "message", cls)
e = smpfs.errors.make_error(errno.EIO, "integrity", path)
again = pickle.loads(pickle.dumps(e))
check(type(again) is smpfs.IntegrityError and again.detail == "integrity", repr(again))
check(again.errno == errno.EIO and again.filename == path and str(again) == str(e), repr(again))
done("client")
