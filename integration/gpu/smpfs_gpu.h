/*
 * smpfs_gpu.h - the smpfs GPU ioctl ABI, version 1.
 *
 * Load decrypted bytes of a file opened through an smpfs mount straight into a CUDA device
 * allocation of the calling process:
 *
 *     int fd = open("/mnt/scans/CT/volume.raw", O_RDONLY);
 *     struct smpfs_gpu_load req = { .abi_version = SMPFS_GPU_ABI_VERSION, .device = 0,
 *                                   .dest_offset = 0, .file_offset = 0, .length = n };
 *     cuIpcGetMemHandle((CUipcMemHandle *)req.handle, dptr);   // dptr from cuMemAlloc
 *     if (ioctl(fd, SMPFS_GPU_IOC_LOAD, &req) < 0)
 *         fprintf(stderr, "load: %s (detail %u)\n", strerror(errno), req.error);
 *
 * The specification is docs/GPU.md in the smpfs repository; the Rust side is
 * src/gpu/abi.rs, and a test compiles this header and compares every size, offset and
 * command number with it.
 *
 * All fields are fixed-width, native-endian integers at naturally aligned offsets with no
 * padding, so 32- and 64-bit callers share one layout. Size and direction are encoded in
 * the command numbers: a client built against another struct size gets ENOTTY.
 */
#ifndef SMPFS_GPU_H
#define SMPFS_GPU_H

#include <stdint.h>
#include <sys/ioctl.h>

#define SMPFS_GPU_ABI_VERSION 1u
#define SMPFS_GPU_IOC_TYPE 0xB5
#define SMPFS_GPU_HANDLE_LEN 64

/* Volume element types (smpfs_gpu_info.dtype); SMPFS_GPU_DTYPE_NONE for ordinary files. */
#define SMPFS_GPU_DTYPE_NONE 0u
#define SMPFS_GPU_DTYPE_U8 1u
#define SMPFS_GPU_DTYPE_I8 2u
#define SMPFS_GPU_DTYPE_U16 3u
#define SMPFS_GPU_DTYPE_I16 4u
#define SMPFS_GPU_DTYPE_U32 5u
#define SMPFS_GPU_DTYPE_I32 6u
#define SMPFS_GPU_DTYPE_F32 7u
#define SMPFS_GPU_DTYPE_F64 8u

/* smpfs_gpu_info.flags */
#define SMPFS_GPU_INFO_VOLUME 1u /* the file is a virtual volume (dtype, ndim, shape set) */

/* Describes the open file. Out only. */
struct smpfs_gpu_info {
	uint32_t abi_version;    /* SMPFS_GPU_ABI_VERSION of the daemon */
	uint32_t flags;          /* SMPFS_GPU_INFO_*; 0 for ordinary files */
	uint64_t plaintext_size; /* authenticated size in bytes (st_size) */
	uint32_t chunk_size;     /* plaintext bytes per sealed chunk */
	uint32_t dtype;          /* SMPFS_GPU_DTYPE_*; NONE unless a volume */
	uint8_t file_id[16];     /* the sealed file's random id (public) */
	uint32_t ndim;           /* dimensions used in shape; 0 unless a volume */
	uint32_t reserved0;      /* 0 */
	uint64_t shape[4];       /* volume shape, slowest-varying first; 0 unless a volume */
	uint64_t reserved[4];    /* 0 */
};

/* Loads file bytes [file_offset, file_offset + length) to dest_offset in the allocation. */
struct smpfs_gpu_load {
	/* in */
	uint32_t abi_version;                  /* SMPFS_GPU_ABI_VERSION */
	uint32_t flags;                        /* 0: no flags are defined in version 1 */
	uint32_t device;                       /* CUDA device ordinal of the allocation */
	uint32_t reserved0;                    /* 0 */
	uint8_t handle[SMPFS_GPU_HANDLE_LEN];  /* cudaIpcMemHandle_t of the allocation */
	uint64_t dest_offset;                  /* bytes from the allocation's base */
	uint64_t file_offset;                  /* first plaintext byte to load */
	uint64_t length;                       /* bytes to load; all or nothing is checked */
	/* out (also filled when the ioctl fails) */
	uint64_t bytes_loaded;                 /* == length on success, 0 on failure */
	uint32_t error;                        /* SMPFS_GPU_E_*: why it failed; 0 on success */
	uint32_t reserved1;                    /* 0 */
};

#define SMPFS_GPU_IOC_INFO _IOR(SMPFS_GPU_IOC_TYPE, 1, struct smpfs_gpu_info)
#define SMPFS_GPU_IOC_LOAD _IOWR(SMPFS_GPU_IOC_TYPE, 2, struct smpfs_gpu_load)

/* smpfs_gpu_load.error: the errno gives the class of failure, this which one. */
#define SMPFS_GPU_E_NONE 0u                /* success */
#define SMPFS_GPU_E_ABI_VERSION 1u         /* EINVAL: abi_version is not supported */
#define SMPFS_GPU_E_BAD_ARGUMENT 2u        /* EINVAL: unknown flags, reserved fields not 0 */
#define SMPFS_GPU_E_OVERFLOW 3u            /* EINVAL: an offset + length overflows */
#define SMPFS_GPU_E_PAST_EOF 4u            /* EINVAL: the file range ends past EOF */
#define SMPFS_GPU_E_DEST_TOO_SMALL 5u      /* EINVAL: the allocation is too small */
#define SMPFS_GPU_E_BAD_HANDLE 6u          /* EINVAL: the handle cannot be opened */
#define SMPFS_GPU_E_NO_DRIVER 7u           /* ENODEV: no CUDA driver on the machine */
#define SMPFS_GPU_E_BAD_DEVICE 8u          /* ENODEV: no device with that ordinal */
#define SMPFS_GPU_E_DEVICE 9u              /* EIO: a CUDA call failed while copying */
#define SMPFS_GPU_E_NO_MEMORY 10u          /* ENOMEM: staging memory cannot be locked */
#define SMPFS_GPU_E_LOCKED 11u             /* EACCES: the mount is locked (keys purged) */
#define SMPFS_GPU_E_INTEGRITY 12u          /* EIO: a chunk failed authentication */
#define SMPFS_GPU_E_AUDIT 13u              /* EIO: the audit log cannot be written */
#define SMPFS_GPU_E_IO 14u                 /* EIO: the bucket could not be read */
#define SMPFS_GPU_E_BAD_FILE_HANDLE 15u    /* EBADF: the file is not open */

#endif /* SMPFS_GPU_H */
