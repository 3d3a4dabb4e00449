"""`SecureDataset`: a map-style dataset over the files of an smpfs mount.

    from smpfs.torch import SecureDataset
    ds = SecureDataset("/mnt/scans", pattern="**/*.dcm")            # numpy arrays
    ds = SecureDataset("/mnt/scans", pattern=".volumes/*.nii", device="cuda")  # CUDA tensors
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=4)

Each item is decoded from its file by format (`decode="auto"` picks it from the name, or
sniffs the DICOM preamble):

- DICOM (`.dcm`, `.dicom`, or `DICM` at byte 128): pydicom's `pixel_array`;
- NIfTI (`.nii`, `.nii.gz`, including a mount's `.volumes/<series>.nii` with `-o volumes`):
  the voxels with nibabel, in nibabel's axis order (x, y, z: for a volume that is columns,
  rows, slices);
- `.npy`: numpy's `load` (no pickles);
- `decode="raw"`: the file's bytes as uint8; or any callable `decode(path) -> array`.

With `rescale=True` (the default) values are physical: DICOM through pydicom's
`apply_modality_lut` (RescaleSlope/Intercept or a Modality LUT), NIfTI through
`scl_slope`/`scl_inter`; a rescaled result is float32 (float64 only from float64 data).
`rescale=False` gives the stored values. So a slice of a DICOM series and the same slice of
its `.volumes` volume are equal either way.

`device="cuda"` (or `"cuda:N"`) returns CUDA tensors. Files whose array lies in the file as
raw bytes (uncompressed `.nii` and `.volumes` volumes, `.npy`, `raw`) are loaded with
`smpfs.load_into`: the daemon DMA-copies the decrypted bytes into the tensor, and the
plaintext never passes through this process (only a NIfTI or npy header is read). Other
files (DICOM, `.nii.gz`, a callable) are decoded on the CPU and copied. With `output="torch"`
results are torch tensors (uint16 widened to int32, uint32 to int64, as most torch operations
need), otherwise numpy arrays.

Worker-safe: the dataset holds only the root, the list of relative paths and its settings,
and opens each file per item and closes it before returning, so nothing open is shared
across `fork` (DataLoader workers, multiprocessing pools). CUDA cannot be used in forked
workers: use `device="cuda"` with `num_workers=0` (the daemon decrypts on all its cores
anyway) or a `"spawn"` multiprocessing context.

This module imports neither torch, numpy, pydicom nor nibabel when it is imported; each is
imported when first needed, and a missing one is an ImportError that says what to install.
"""

import errno
import io
import os
import pathlib
from collections import namedtuple

from . import _client
from ._abi import DTYPES
from .errors import NotOnSmpfsError, make_error

__all__ = [
    "SecureDataset",
    "RawLayout",
    "decode_dicom",
    "decode_nifti",
    "decode_npy",
    "decode_raw",
    "format_of",
    "load_direct",
    "raw_layout",
    "to_torch",
]

FORMATS = ("dicom", "nifti", "npy", "raw")


def _need(module, why, package=None):
    """Imports `module`, or raises an ImportError that says what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"smpfs.torch: {why} needs {module} (pip install {package or module})"
        ) from e


def _torch():
    return _need("torch", "output='torch' or a CUDA device")


def _np():
    return _need("numpy", "decoding arrays")


# --- formats and CPU decoders -----------------------------------------------------------


def format_of(path, sniff=True):
    """The format `decode="auto"` gives `path` ("dicom", "nifti", "npy"), or None. By name;
    with `sniff`, a file of another name is DICOM if it has `DICM` at byte 128 (one read of
    132 bytes)."""
    name = os.fspath(path).lower()
    if name.endswith((".dcm", ".dicom")):
        return "dicom"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".npy"):
        return "npy"
    if sniff:
        fd, _, _ = _client._open(path)
        try:
            head = os.pread(fd, 132, 0)
        except OSError as e:
            raise _client._translate_read(e, os.fspath(path), 0) from None
        finally:
            os.close(fd)
        if head[128:132] == b"DICM":
            return "dicom"
    return None


def _read(path, length=None):
    """The file's bytes (the first `length`), read through one descriptor opened for it;
    smpfs's refusals as typed errors (IntegrityError, LockedError)."""
    fd, _, name = _client._open(path)
    try:
        size = os.fstat(fd).st_size if length is None else length
        out = bytearray(size)
        view, done = memoryview(out), 0
        with open(fd, "rb", buffering=0, closefd=False) as f:
            while done < size:
                try:
                    n = f.readinto(view[done:])
                except OSError as e:
                    raise _client._translate_read(e, name, done) from None
                if not n:
                    break
                done += n
        del view
        del out[done:]
        return out
    finally:
        os.close(fd)


def _scaled(np, raw, slope, inter):
    """stored × slope + inter, in float32 (float64 for float64 data); `raw` unchanged when
    the scaling is the identity or absent (nibabel gives None for a zero or NaN slope)."""
    if slope is None or inter is None or (slope == 1 and inter == 0):
        return raw
    ftype = np.float64 if raw.dtype == np.float64 else np.float32
    return raw.astype(ftype) * ftype(slope) + ftype(inter)


def decode_dicom(path, rescale=True):
    """pydicom's `pixel_array`; with `rescale`, through `apply_modality_lut` (floats as
    float32)."""
    pydicom = _need("pydicom", "decoding DICOM")
    np = _np()
    ds = pydicom.dcmread(io.BytesIO(_read(path)))
    arr = ds.pixel_array
    if rescale:
        try:
            from pydicom.pixels import apply_modality_lut
        except ImportError:  # pydicom 2
            from pydicom.pixel_data_handlers.util import apply_modality_lut
        out = apply_modality_lut(arr, ds)
        if out is not arr and out.dtype == np.float64 and arr.dtype != np.float64:
            out = out.astype(np.float32)
        arr = out
    return arr


def _nifti_class(nibabel, head):
    """Nifti1Image or Nifti2Image, by sizeof_hdr (348 or 540, either byte order)."""
    size = int.from_bytes(bytes(head[:4]), "little")
    if size in (540, 540 << 24):
        return nibabel.Nifti2Image
    return nibabel.Nifti1Image


def _nifti(path):
    """The nibabel image of `path` (`.nii`, or gzip-compressed `.nii.gz`), from its bytes."""
    nibabel = _need("nibabel", "decoding NIfTI")
    data = _read(path)
    if os.fspath(path).lower().endswith(".gz"):
        import gzip

        data = gzip.decompress(data)
    return _nifti_class(nibabel, data).from_bytes(bytes(data))


def decode_nifti(path, rescale=True):
    """The voxels, in nibabel's axis order; with `rescale`, scaled by scl_slope/scl_inter
    (float32 unless the data is float64)."""
    np = _np()
    img = _nifti(path)
    raw = np.asarray(img.dataobj.get_unscaled())
    if not rescale:
        return raw
    # nibabel moves scl_slope/scl_inter from the header to the array proxy on load.
    slope, inter = getattr(img.dataobj, "slope", None), getattr(img.dataobj, "inter", None)
    return _scaled(np, raw, slope, inter)


def decode_npy(path, rescale=True):
    """`numpy.load`, without pickles (`rescale` does not apply)."""
    return _np().load(io.BytesIO(_read(path)), allow_pickle=False)


def decode_raw(path, rescale=True):
    """The file's bytes as a uint8 array (`rescale` does not apply)."""
    np = _np()
    return np.frombuffer(_read(path), dtype=np.uint8)


_DECODERS = {
    "dicom": decode_dicom,
    "nifti": decode_nifti,
    "npy": decode_npy,
    "raw": decode_raw,
}


# --- direct (GPU) loads -----------------------------------------------------------------

RawLayout = namedtuple("RawLayout", "file_offset dtype shape permute slope inter")
RawLayout.__doc__ = """Where a file's array lies, for `load_into`: `shape` elements of
`dtype` (a numpy dtype name) in C order from `file_offset` (an offset for the load ioctl:
for a `.volumes` volume 0 is its first voxel); the array is that, `.permute(*permute)`
when `permute` is set, times `slope` plus `inter` when they are set."""


def _native(np, dtype):
    dtype = np.dtype(dtype)
    return dtype.isnative or dtype.byteorder == "|"


def _smpfs_info(path):
    """smpfs.info of `path`, or None where it is not on an smpfs mount."""
    try:
        return _client.info(path)
    except NotOnSmpfsError:
        return None


def _nifti_header(nibabel, head):
    """The NIfTI-1 or -2 header at the start of `head` (bytes), in its byte order."""
    klass = _nifti_class(nibabel, head).header_class
    size = 540 if klass is nibabel.Nifti2Header else 348
    little = int.from_bytes(bytes(head[:4]), "little") == size
    return klass(binaryblock=bytes(head[:size]), endianness="<" if little else ">", check=False)


def raw_layout(path, fmt):
    """The RawLayout of `path` decoded as `fmt` when its array can be loaded straight from
    its bytes with `load_into` (a file on an smpfs mount: uncompressed NIfTI in native byte
    order, `.volumes` volumes, `.npy` of plain numbers, `raw`), else None. Reads at most a
    header (through the mount)."""
    np = _np()
    path = os.fspath(path)
    if fmt not in ("raw", "npy", "nifti") or path.lower().endswith(".gz"):
        return None
    inf = _smpfs_info(path)
    if inf is None:
        return None
    if fmt == "raw":
        if inf.volume:
            return None  # the load ioctl addresses a volume's voxels, not its bytes
        return RawLayout(0, "uint8", (inf.plaintext_size,), None, None, None)
    if fmt == "npy":
        from numpy.lib import format as npformat

        head = _read(path, 12)
        if bytes(head[:6]) != b"\x93NUMPY" or len(head) < 12:
            return None
        if head[6] == 1:
            total = 10 + int.from_bytes(bytes(head[8:10]), "little")
        else:
            total = 12 + int.from_bytes(bytes(head[8:12]), "little")
        f = io.BytesIO(bytes(_read(path, total)))
        version = npformat.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = npformat.read_array_header_2_0(f)
        if dtype.hasobject or dtype.kind not in "biufc" or not _native(np, dtype):
            return None
        return _layout(f.tell(), dtype, tuple(shape), fortran, None, None)
    nibabel = _need("nibabel", "decoding NIfTI")
    header = _nifti_header(nibabel, _read(path, 540))
    slope, inter = header.get_slope_inter()
    if inf.volume:
        # smpfs knows the voxels' type and shape (slices, rows, columns): C order, the
        # reverse of nibabel's (x, y, z).
        dtype = DTYPES.get(inf.dtype)
        if dtype is None:
            return None
        return _layout(0, np.dtype(dtype), tuple(inf.shape), False, slope, inter, True)
    dtype = header.get_data_dtype()
    if not bytes(header["magic"]).startswith((b"n+1", b"n+2")) or not _native(np, dtype):
        return None
    if dtype.kind not in "biuf" or dtype.fields is not None:
        return None
    offset = int(header["vox_offset"])
    return _layout(offset, dtype, tuple(header.get_data_shape()), True, slope, inter)


def _layout(offset, dtype, shape, fortran, slope, inter, reversed_given=False):
    """A RawLayout for an array of logical `shape` stored in Fortran or C order (or, with
    `reversed_given`, of storage shape `shape` whose logical shape is its reverse)."""
    if reversed_given:
        storage = tuple(shape)
        permute = tuple(range(len(shape) - 1, -1, -1)) if len(shape) > 1 else None
    elif fortran and len(shape) > 1:
        storage = tuple(reversed(shape))
        permute = tuple(range(len(shape) - 1, -1, -1))
    else:
        storage, permute = tuple(shape), None
    if slope is None or inter is None or (slope == 1 and inter == 0):
        slope = inter = None
    return RawLayout(offset, str(dtype), storage, permute, slope, inter)


# dtypes torch lacks (or hardly supports): carried in a signed type of the same size and
# widened after the load.
_CARRIERS = {"uint16": ("int16", "int32", 0xFFFF), "uint32": ("int32", "int64", 0xFFFFFFFF)}


def load_direct(path, layout, device):
    """A tensor on `device` filled from `path` by `smpfs.load_into` as `layout` says."""
    torch = _torch()
    name = layout.dtype
    carrier, wide, mask = _CARRIERS.get(name, (name, None, None))
    t = torch.empty(layout.shape, dtype=getattr(torch, carrier), device=device)
    if t.numel():
        _client.load_into(path, t, file_offset=layout.file_offset)
    if wide is not None:
        t = t.to(getattr(torch, wide)) & mask
    if layout.slope is not None:
        ftype = torch.float64 if name == "float64" else torch.float32
        t = t.to(ftype) * layout.slope + layout.inter
    if layout.permute is not None:
        t = t.permute(*layout.permute)
    return t


def to_torch(value, device="cpu"):
    """A numpy array (or anything torch.as_tensor takes) as a tensor on `device`; uint16
    becomes int32 and uint32 int64, non-native byte order native."""
    torch = _torch()
    if isinstance(value, torch.Tensor):
        return value.to(device)
    np = _np()
    arr = np.asarray(value)
    if not _native(np, arr.dtype):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.name in _CARRIERS:
        arr = arr.astype(_CARRIERS[arr.dtype.name][1])
    if not arr.flags.writeable or any(s < 0 for s in arr.strides):
        arr = arr.copy()
    t = torch.from_numpy(arr)
    return t if str(device) == "cpu" else t.to(device)


# --- the dataset ------------------------------------------------------------------------


class SecureDataset:
    """A map-style dataset over the files of an smpfs mount (see the module's doc).

    root: a directory on an smpfs mount (or anywhere with `require_smpfs=False`).
    pattern: a glob relative to root (pathlib rules: `**` spans directories); matches that
        are regular files are the items, in sorted order of their relative paths.
    decode: "auto" (by name: DICOM, NIfTI, npy; others are sniffed for the DICOM preamble
        with `sniff`, and files of no known format are left out), one of "dicom", "nifti",
        "npy", "raw" (every match), or a callable `decode(path) -> array` (every match).
    device: "cpu", "cuda" or "cuda:N" (CUDA gives tensors, loaded with `load_into` where
        the format allows).
    output: "numpy" or "torch"; default numpy on the CPU, torch on a GPU.
    rescale: physical values (modality LUT, scl_slope/inter), else stored ones.
    transform: applied to each decoded value.
    return_path: items are (value, relative path) instead of value.
    direct: on a GPU, load raw formats with `load_into` (False: decode on the CPU, copy).
    require_smpfs: refuse a root that is not on an smpfs mount (NotOnSmpfsError).
    """

    def __init__(
        self,
        root,
        pattern="**/*",
        decode="auto",
        device="cpu",
        output=None,
        rescale=True,
        transform=None,
        return_path=False,
        sniff=True,
        direct=True,
        require_smpfs=True,
    ):
        self.root = os.fspath(root)
        try:
            # Listing it first: a locked mount refuses it (LockedError), where a glob would
            # only come back empty.
            os.listdir(self.root)
        except OSError as e:
            raise _client._translate_open(e, self.root) from None
        if require_smpfs and _client.mountpoint(self.root) is None:
            raise make_error(
                errno.ENOTTY,
                "not_smpfs",
                self.root,
                "not on an smpfs mount (SecureDataset(..., require_smpfs=False) reads "
                "other directories)",
            )
        if not (callable(decode) or decode == "auto" or decode in FORMATS):
            raise ValueError(f"decode must be 'auto', one of {FORMATS} or a callable, not {decode!r}")
        self.device = str(device)
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', not {device!r}")
        if output is None:
            output = "numpy" if self.device == "cpu" else "torch"
        if output not in ("numpy", "torch"):
            raise ValueError(f"output must be 'numpy' or 'torch', not {output!r}")
        if output == "numpy" and self.device != "cpu":
            raise ValueError("output='numpy' needs device='cpu'")
        if output == "torch":
            _torch()  # fail now, with the fix, rather than in a worker
        self.output = output
        self.decode = decode
        self.pattern = pattern
        self.rescale = rescale
        self.transform = transform
        self.return_path = return_path
        self.direct = direct
        base = pathlib.Path(self.root)
        paths, formats = [], []
        for p in sorted(base.glob(pattern), key=lambda p: p.relative_to(base).as_posix()):
            if not p.is_file():
                continue
            if decode == "auto":
                fmt = format_of(p, sniff)
                if fmt is None:
                    continue
            else:
                fmt = decode if isinstance(decode, str) else None
            paths.append(p.relative_to(base).as_posix())
            formats.append(fmt)
        self.paths = paths
        self.formats = formats

    def __len__(self):
        return len(self.paths)

    def path(self, index):
        """The absolute path of item `index`."""
        return os.path.join(self.root, self.paths[index])

    def __getitem__(self, index):
        if not -len(self.paths) <= index < len(self.paths):
            raise IndexError(f"index {index} out of range for {len(self.paths)} files")
        path, fmt = self.path(index), self.formats[index]
        value = self._load(path, fmt)
        if self.transform is not None:
            value = self.transform(value)
        return (value, self.paths[index]) if self.return_path else value

    def _load(self, path, fmt):
        if fmt is None:
            value = self.decode(path)
        else:
            if self.device != "cpu" and self.direct:
                layout = raw_layout(path, fmt)
                if layout is not None:
                    return load_direct(path, layout, self.device)
            value = _DECODERS[fmt](path, rescale=self.rescale)
        if self.output == "torch":
            return to_torch(value, self.device)
        return value

    def verify(self):
        """`smpfs.verify` of every file: all their chunks authenticated. Returns the bytes
        read; raises on the first failure (IntegrityError, LockedError, ...)."""
        return sum(_client.verify(self.path(i)) for i in range(len(self.paths)))

    def __repr__(self):
        return (
            f"SecureDataset({self.root!r}, pattern={self.pattern!r}, {len(self)} files, "
            f"device={self.device!r}, output={self.output!r})"
        )
