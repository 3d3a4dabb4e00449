"""The GPU ioctl ABI, version 1 (docs/GPU.md §1; src/gpu/abi.rs and
integration/gpu/smpfs_gpu.h are the other two copies, and tests/gpu.rs checks they agree)."""

import ctypes

ABI_VERSION = 1
HANDLE_LEN = 64
_IOC_TYPE = 0xB5

# smpfs_gpu_info.flags
INFO_VOLUME = 1


class InfoStruct(ctypes.Structure):
    """`struct smpfs_gpu_info` (112 bytes)."""

    _fields_ = [
        ("abi_version", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("plaintext_size", ctypes.c_uint64),
        ("chunk_size", ctypes.c_uint32),
        ("dtype", ctypes.c_uint32),
        ("file_id", ctypes.c_uint8 * 16),
        ("ndim", ctypes.c_uint32),
        ("reserved0", ctypes.c_uint32),
        ("shape", ctypes.c_uint64 * 4),
        ("reserved", ctypes.c_uint64 * 4),
    ]


class LoadStruct(ctypes.Structure):
    """`struct smpfs_gpu_load` (120 bytes)."""

    _fields_ = [
        ("abi_version", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("device", ctypes.c_uint32),
        ("reserved0", ctypes.c_uint32),
        ("handle", ctypes.c_uint8 * HANDLE_LEN),
        ("dest_offset", ctypes.c_uint64),
        ("file_offset", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
        ("bytes_loaded", ctypes.c_uint64),
        ("error", ctypes.c_uint32),
        ("reserved1", ctypes.c_uint32),
    ]


def _ioc(direction, nr, size):
    """The asm-generic _IOC encoding (x86, Arm, RISC-V)."""
    return (direction << 30) | (size << 16) | (_IOC_TYPE << 8) | nr


IOC_INFO = _ioc(2, 1, ctypes.sizeof(InfoStruct))  # _IOR  = 0x8070B501
IOC_LOAD = _ioc(3, 2, ctypes.sizeof(LoadStruct))  # _IOWR = 0xC078B502

# smpfs_gpu_load.error codes (SMPFS_GPU_E_* in smpfs_gpu.h), by their lower-case names.
DETAILS = {
    0: "none",
    1: "abi_version",
    2: "bad_argument",
    3: "overflow",
    4: "past_eof",
    5: "dest_too_small",
    6: "bad_handle",
    7: "no_driver",
    8: "bad_device",
    9: "device",
    10: "no_memory",
    11: "locked",
    12: "integrity",
    13: "audit",
    14: "io",
    15: "bad_file_handle",
}

# smpfs_gpu_info.dtype: element type of a volume, as numpy names it.
DTYPES = {
    1: "uint8",
    2: "int8",
    3: "uint16",
    4: "int16",
    5: "uint32",
    6: "int32",
    7: "float32",
    8: "float64",
}
