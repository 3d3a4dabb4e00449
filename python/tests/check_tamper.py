"""A tampered sealed file raises IntegrityError from every path that reads it.

Usage: check_tamper.py MOUNT PLAIN   (MOUNT/tampered.npy had a byte of its second 64 KiB
chunk flipped in the bucket; MOUNT/ok.npy is intact; PLAIN has both plaintexts)
"""
import errno
import os
import sys

from _common import check, done, in_workers, raises, source_package

smpfs = source_package()
from smpfs.torch import SecureDataset, raw_layout  # noqa: E402

mount, plain = sys.argv[1], sys.argv[2]
ok, bad = os.path.join(mount, "ok.npy"), os.path.join(mount, "tampered.npy")
expected = open(os.path.join(plain, "tampered.npy"), "rb").read()
check(len(expected) > 3 * 65536, "the file spans chunks")

check(smpfs.verify(ok) == os.path.getsize(ok), "the intact file verifies")
e = raises(smpfs.IntegrityError, smpfs.verify, bad)
check(e.errno == errno.EIO and e.detail == "integrity" and e.filename == bad, repr(e))
check(e.offset is not None and e.offset <= 65536, f"failed at {e.offset}")
check("authentication" in str(e), str(e))
# info reads only the header: it still answers.
check(smpfs.info(bad).plaintext_size == len(expected), "info of a tampered file")

# The GPU load: the ioctl's detail says integrity, and nothing from the bad chunk on is
# written (the first chunk may be).
with smpfs.ShmBuffer(len(expected)) as buf:
    e = raises(smpfs.IntegrityError, smpfs.load_into, bad, buf)
    check(e.errno == errno.EIO and e.detail == "integrity", repr(e))
    got = buf.read()
    check(got[65536:] == bytes(len(expected) - 65536), "bytes past the good chunk written")
    check(got[:65536] in (expected[:65536], bytes(65536)), "first chunk neither loaded nor zero")
# A range inside the intact first chunk loads.
with smpfs.ShmBuffer(1000) as buf:
    check(smpfs.load_into(bad, buf, file_offset=100) == 1000, "range in the good chunk")
    check(buf.read() == expected[100:1100], "range bytes")

# The dataset: the intact item decodes, the tampered one raises, in this process and in
# forked workers (the error crosses the process boundary with its class).
ds = SecureDataset(mount, pattern="*.npy", return_path=True)
check(ds.paths == ["ok.npy", "tampered.npy"], ds.paths)
value, name = ds[0]
check(name == "ok.npy" and value.shape == (400_000,), (name, value.shape))
e = raises(smpfs.IntegrityError, ds.__getitem__, 1)
check(e.filename == bad, repr(e))
raises(smpfs.IntegrityError, in_workers, ds, [0, 1])
raises(smpfs.IntegrityError, ds.verify)
# The direct-load layout needs only the header (first chunk); the load then fails.
layout = raw_layout(bad, "npy")
check(layout.file_offset == 128 and layout.shape == (400_000,), layout)
with smpfs.ShmBuffer(400_000) as buf:
    raises(smpfs.IntegrityError, smpfs.load_into, bad, buf, file_offset=layout.file_offset)
done("tamper")
