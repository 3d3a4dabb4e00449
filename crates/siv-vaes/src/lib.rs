//! AES-256-GCM-SIV opening (RFC 8452) on VAES and VPCLMULQDQ, for smpfs's read path:
//! sixteen blocks per step in four 512-bit registers, the counter-mode decryption and the
//! POLYVAL hash of the same blocks in one pass.
//!
//! AWS-LC's assembly runs one 128-bit block per AES instruction; on CPUs with 512-bit AES
//! and carry-less multiply this opens a 64 KiB chunk in about half the time (smpfs's
//! docs/PERFORMANCE.md). Sealing stays in AWS-LC. Every result must equal AWS-LC's: the
//! tests compare the two on random keys, nonces, lengths and tamperings, and check RFC
//! 8452's vectors, counter wrap included. It is a crate of its own so that test builds
//! optimise it (unoptimised intrinsics run ~60x slower), and it is empty off x86-64.
//!
//! POLYVAL's field elements are the blocks as little-endian 128-bit integers, so no byte
//! reflection is needed; `a • b` is `a·b·x⁻¹²⁸` reduced modulo `x¹²⁸ + x¹²⁷ + x¹²⁶ + x¹²¹ + 1`,
//! and since that reduction is linear, sixteen products are summed before one reduction.

#![cfg(target_arch = "x86_64")]

use core::arch::x86_64::*;

use zeroize::Zeroize;

/// Whether this CPU has every instruction the path uses (checked once by std, then cached).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("vaes")
        && is_x86_feature_detected!("vpclmulqdq")
        && is_x86_feature_detected!("aes")
        && is_x86_feature_detected!("pclmulqdq")
        && is_x86_feature_detected!("sse4.1")
}

/// The fifteen round keys of an AES-256 key, zeroized on drop.
struct RoundKeys([__m128i; 15]);

impl Drop for RoundKeys {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A key-generating key, expanded once per file key. Exists only where [`available`]
/// said yes, so holding one proves the instructions are there.
pub struct OpeningKey(RoundKeys);

impl OpeningKey {
    /// Expands `key`, or `None` on a CPU without the instructions.
    pub fn new(key: &[u8; 32]) -> Option<Self> {
        // SAFETY: the instructions were just detected.
        available().then(|| OpeningKey(unsafe { expand(key) }))
    }

    /// Authenticates `ciphertext` and `tag` under `nonce` and `aad` and writes the
    /// plaintext into `out` (as long as `ciphertext`). Returns whether the tag matched; on
    /// a mismatch `out` holds unauthenticated bytes, which the caller must wipe.
    pub fn open_into(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; 16],
        out: &mut [u8],
    ) -> bool {
        assert_eq!(
            ciphertext.len(),
            out.len(),
            "one output byte per input byte"
        );
        // SAFETY: `self` exists only where the instructions do; the two ranges are valid
        // for `len` bytes and, being a shared and a mutable borrow, do not overlap.
        let opened = unsafe {
            open(
                &self.0,
                nonce,
                aad,
                ciphertext.as_ptr(),
                out.as_mut_ptr(),
                out.len(),
                tag,
            )
        };
        scrub_stack();
        opened
    }

    /// Like [`OpeningKey::open_into`], decrypting `data` where it lies.
    pub fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        data: &mut [u8],
        tag: &[u8; 16],
    ) -> bool {
        let len = data.len();
        let ptr = data.as_mut_ptr();
        // SAFETY: as in `open_into`; `open` reads each block before writing it back, so the
        // two pointers may be equal.
        let opened = unsafe { open(&self.0, nonce, aad, ptr, ptr, len, tag) };
        scrub_stack();
        opened
    }
}

/// Bytes of stack [`scrub_stack`] zeroes: [`open`]'s frame is under 3 KiB (checked in the
/// disassembly of a release build), with room for what it calls.
const SCRUB_BYTES: usize = 8 << 10;

/// Zeroes the stack [`open`] just used, from its caller's frame down: the compiler spills
/// registers there (round keys, POLYVAL powers, blocks of plaintext), which AWS-LC's
/// assembly never does, and no `zeroize` on a variable reaches those copies. A plain
/// `memset`, which `black_box` must see done: zeroize's byte-wise volatile loop took 2 µs,
/// against 7 µs to open a whole 64 KiB chunk.
#[inline(never)]
fn scrub_stack() {
    let mut scratch = core::mem::MaybeUninit::<[u8; SCRUB_BYTES]>::uninit();
    // SAFETY: writes exactly the array's bytes.
    unsafe { core::ptr::write_bytes(scratch.as_mut_ptr(), 0, 1) };
    core::hint::black_box(&scratch);
}

/// One step of the AES-256 key schedule: `k` with each word XORed into the next, then `t`.
#[target_feature(enable = "sse2")]
fn schedule_step(mut k: __m128i, t: __m128i) -> __m128i {
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    _mm_xor_si128(k, t)
}

/// The AES-256 key schedule (FIPS 197 §5.2).
#[target_feature(enable = "aes,sse2")]
fn expand(key: &[u8; 32]) -> RoundKeys {
    let mut rk = [_mm_setzero_si128(); 15];
    // SAFETY: `key` holds 32 bytes; unaligned loads.
    unsafe {
        rk[0] = _mm_loadu_si128(key.as_ptr().cast());
        rk[1] = _mm_loadu_si128(key.as_ptr().add(16).cast());
    }
    // Each pair of round keys: the even one from the key two back and a SubWord(RotWord)
    // of the last one with the round constant, the odd one from SubWord alone.
    macro_rules! even_key {
        ($i:expr, $rcon:expr) => {
            rk[$i] = schedule_step(
                rk[$i - 2],
                _mm_shuffle_epi32::<0xff>(_mm_aeskeygenassist_si128::<$rcon>(rk[$i - 1])),
            );
        };
    }
    macro_rules! odd_key {
        ($i:expr) => {
            rk[$i] = schedule_step(
                rk[$i - 2],
                _mm_shuffle_epi32::<0xaa>(_mm_aeskeygenassist_si128::<0>(rk[$i - 1])),
            );
        };
    }
    even_key!(2, 0x01);
    odd_key!(3);
    even_key!(4, 0x02);
    odd_key!(5);
    even_key!(6, 0x04);
    odd_key!(7);
    even_key!(8, 0x08);
    odd_key!(9);
    even_key!(10, 0x10);
    odd_key!(11);
    even_key!(12, 0x20);
    odd_key!(13);
    even_key!(14, 0x40);
    RoundKeys(rk)
}

#[target_feature(enable = "aes,sse2")]
fn encrypt_block(keys: &RoundKeys, block: __m128i) -> __m128i {
    let mut x = _mm_xor_si128(block, keys.0[0]);
    for k in &keys.0[1..14] {
        x = _mm_aesenc_si128(x, *k);
    }
    _mm_aesenclast_si128(x, keys.0[14])
}

/// `(hi·x¹²⁸ + lo)·x⁻¹²⁸` modulo POLYVAL's polynomial: two folds by its low terms.
#[target_feature(enable = "pclmulqdq,sse2")]
fn reduce(lo: __m128i, hi: __m128i) -> __m128i {
    let poly = _mm_set_epi64x(0xc200_0000_0000_0000_u64 as i64, 1);
    let t = _mm_clmulepi64_si128::<0x10>(lo, poly);
    let lo = _mm_xor_si128(_mm_shuffle_epi32::<0x4e>(lo), t);
    let t = _mm_clmulepi64_si128::<0x10>(lo, poly);
    let lo = _mm_xor_si128(_mm_shuffle_epi32::<0x4e>(lo), t);
    _mm_xor_si128(lo, hi)
}

/// Reduces a product kept as its low, middle (cross terms) and high 128-bit parts.
#[target_feature(enable = "pclmulqdq,sse2")]
fn reduce_parts(lo: __m128i, mid: __m128i, hi: __m128i) -> __m128i {
    reduce(
        _mm_xor_si128(lo, _mm_slli_si128::<8>(mid)),
        _mm_xor_si128(hi, _mm_srli_si128::<8>(mid)),
    )
}

/// `a • b`.
#[target_feature(enable = "pclmulqdq,sse2")]
fn dot(a: __m128i, b: __m128i) -> __m128i {
    let lo = _mm_clmulepi64_si128::<0x00>(a, b);
    let hi = _mm_clmulepi64_si128::<0x11>(a, b);
    let mid = _mm_xor_si128(
        _mm_clmulepi64_si128::<0x01>(a, b),
        _mm_clmulepi64_si128::<0x10>(a, b),
    );
    reduce_parts(lo, mid, hi)
}

/// The XOR of a 512-bit register's four 128-bit lanes.
#[target_feature(enable = "avx512f")]
fn fold_lanes(z: __m512i) -> __m128i {
    let y = _mm256_xor_si256(
        _mm512_extracti64x4_epi64::<0>(z),
        _mm512_extracti64x4_epi64::<1>(z),
    );
    _mm_xor_si128(_mm256_castsi256_si128(y), _mm256_extracti128_si256::<1>(y))
}

/// Up to 16 bytes as one block, zero-padded (POLYVAL pads AAD and plaintext with zeros).
#[target_feature(enable = "sse2")]
fn padded_block(bytes: &[u8]) -> __m128i {
    let mut block = [0u8; 16];
    block[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: 16 bytes, unaligned load.
    unsafe { _mm_loadu_si128(block.as_ptr().cast()) }
}

/// The per-nonce keys (RFC 8452 §4): the POLYVAL key and the expanded encryption key.
/// They live in [`open`]'s frame, which [`scrub_stack`] wipes.
struct NonceKeys {
    auth: __m128i,
    encryption: RoundKeys,
}

/// Derives the nonce's keys: the first half of AES(K, LE32(i) ‖ nonce) for i in 0..6.
#[target_feature(enable = "aes,sse2")]
fn derive(key: &RoundKeys, nonce: &[u8; 12]) -> NonceKeys {
    let mut material = [0u8; 48];
    let mut block = [0u8; 16];
    block[4..].copy_from_slice(nonce);
    for i in 0..6u32 {
        block[..4].copy_from_slice(&i.to_le_bytes());
        // SAFETY: 16-byte buffers, unaligned loads and stores.
        unsafe {
            let out = encrypt_block(key, _mm_loadu_si128(block.as_ptr().cast()));
            _mm_storeu_si128(block.as_mut_ptr().cast(), out);
        }
        material[i as usize * 8..][..8].copy_from_slice(&block[..8]);
        block[4..].copy_from_slice(nonce);
    }
    // SAFETY: `material` holds 48 bytes.
    let auth = unsafe { _mm_loadu_si128(material.as_ptr().cast()) };
    let mut encryption_key = [0u8; 32];
    encryption_key.copy_from_slice(&material[16..]);
    let encryption = expand(&encryption_key);
    NonceKeys { auth, encryption }
}

/// Opens `len` bytes from `src` into `dst` and returns whether `tag` matched.
///
/// # Safety
/// The CPU must have the instructions of [`available`]; `src` must be readable and `dst`
/// writable for `len` bytes; they are either equal or do not overlap.
#[target_feature(enable = "avx512f,vaes,vpclmulqdq,aes,pclmulqdq,sse4.1")]
unsafe fn open(
    key: &RoundKeys,
    nonce: &[u8; 12],
    aad: &[u8],
    src: *const u8,
    dst: *mut u8,
    len: usize,
    tag: &[u8; 16],
) -> bool {
    let keys = derive(key, nonce);
    let h = keys.auth;
    let mut acc = _mm_setzero_si128();
    for block in aad.chunks(16) {
        acc = dot(_mm_xor_si128(acc, padded_block(block)), h);
    }
    // SAFETY: 16 bytes, unaligned load.
    let tag_block = unsafe { _mm_loadu_si128(tag.as_ptr().cast()) };
    // The counter block is the tag with its top bit set; its first word counts, mod 2³².
    let counter = _mm_or_si128(tag_block, _mm_set_epi64x(i64::MIN, 0));
    // SAFETY: forwarded from the caller.
    acc = unsafe { decrypt_and_hash(&keys, counter, acc, src, dst, len) };
    let lengths = _mm_set_epi64x((len as u64 * 8) as i64, (aad.len() as u64 * 8) as i64);
    acc = dot(_mm_xor_si128(acc, lengths), h);
    let mut s = _mm_xor_si128(acc, padded_block(nonce));
    s = _mm_and_si128(s, _mm_set_epi64x(i64::MAX, -1));
    let expected = encrypt_block(&keys.encryption, s);
    let diff = _mm_xor_si128(expected, tag_block);
    _mm_testz_si128(diff, diff) == 1
}

/// Counter-mode decryption of `len` bytes from `src` into `dst`, hashing the plaintext into
/// the POLYVAL accumulator `acc`, which it returns. Sixteen blocks per step while 256 bytes
/// remain, then one block at a time.
///
/// # Safety
/// As for [`open`].
#[target_feature(enable = "avx512f,vaes,vpclmulqdq,aes,pclmulqdq,sse4.1")]
unsafe fn decrypt_and_hash(
    keys: &NonceKeys,
    counter: __m128i,
    mut acc: __m128i,
    src: *const u8,
    dst: *mut u8,
    len: usize,
) -> __m128i {
    let h = keys.auth;
    // H¹⁶ … H¹: block j of a step of sixteen is multiplied by H^(16 − j).
    let mut powers = [_mm_setzero_si128(); 16];
    powers[15] = h;
    for i in (0..15).rev() {
        powers[i] = dot(powers[i + 1], h);
    }
    // SAFETY: `powers` holds 16 blocks = four 512-bit loads.
    let wide_powers = unsafe {
        [
            _mm512_loadu_si512(powers.as_ptr().cast()),
            _mm512_loadu_si512(powers.as_ptr().add(4).cast()),
            _mm512_loadu_si512(powers.as_ptr().add(8).cast()),
            _mm512_loadu_si512(powers.as_ptr().add(12).cast()),
        ]
    };
    let mut wide_keys = [_mm512_setzero_si512(); 15];
    for (wide, key) in wide_keys.iter_mut().zip(keys.encryption.0.iter()) {
        *wide = _mm512_broadcast_i32x4(*key);
    }
    let mut counters = _mm512_add_epi32(
        _mm512_broadcast_i32x4(counter),
        _mm512_set_epi32(0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0),
    );
    let four = _mm512_set_epi32(0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4);
    let mut done = 0;
    while len - done >= 256 {
        let mut x = [_mm512_setzero_si512(); 4];
        for lane in &mut x {
            *lane = _mm512_xor_si512(counters, wide_keys[0]);
            counters = _mm512_add_epi32(counters, four);
        }
        for round_key in &wide_keys[1..14] {
            for lane in &mut x {
                *lane = _mm512_aesenc_epi128(*lane, *round_key);
            }
        }
        let mut lo = _mm512_setzero_si512();
        let mut mid = _mm512_setzero_si512();
        let mut hi = _mm512_setzero_si512();
        for (j, lane) in x.iter().enumerate() {
            let offset = done + 64 * j;
            // SAFETY: `offset + 64 <= len`, in range for both pointers.
            let mut plain = unsafe {
                let p = _mm512_xor_si512(
                    _mm512_aesenclast_epi128(*lane, wide_keys[14]),
                    _mm512_loadu_si512(src.add(offset).cast()),
                );
                _mm512_storeu_si512(dst.add(offset).cast(), p);
                p
            };
            if j == 0 {
                plain = _mm512_xor_si512(plain, _mm512_zextsi128_si512(acc));
            }
            let power = wide_powers[j];
            lo = _mm512_xor_si512(lo, _mm512_clmulepi64_epi128::<0x00>(plain, power));
            hi = _mm512_xor_si512(hi, _mm512_clmulepi64_epi128::<0x11>(plain, power));
            mid = _mm512_xor_si512(mid, _mm512_clmulepi64_epi128::<0x01>(plain, power));
            mid = _mm512_xor_si512(mid, _mm512_clmulepi64_epi128::<0x10>(plain, power));
        }
        acc = reduce_parts(fold_lanes(lo), fold_lanes(mid), fold_lanes(hi));
        done += 256;
    }
    let mut counter = _mm512_castsi512_si128(counters);
    let one = _mm_set_epi32(0, 0, 0, 1);
    while done < len {
        let keystream = encrypt_block(&keys.encryption, counter);
        counter = _mm_add_epi32(counter, one);
        let n = (len - done).min(16);
        let plain = if n == 16 {
            // SAFETY: 16 bytes in range for both pointers.
            unsafe {
                let p = _mm_xor_si128(_mm_loadu_si128(src.add(done).cast()), keystream);
                _mm_storeu_si128(dst.add(done).cast(), p);
                p
            }
        } else {
            let mut block = [0u8; 16];
            // SAFETY: `n` bytes in range for both pointers; `block` holds 16.
            unsafe {
                core::ptr::copy_nonoverlapping(src.add(done), block.as_mut_ptr(), n);
                let p = _mm_xor_si128(_mm_loadu_si128(block.as_ptr().cast()), keystream);
                _mm_storeu_si128(block.as_mut_ptr().cast(), p);
                core::ptr::copy_nonoverlapping(block.as_ptr(), dst.add(done), n);
            }
            padded_block(&block[..n])
        };
        acc = dot(_mm_xor_si128(acc, plain), h);
        done += n;
    }
    acc
}

#[cfg(test)]
mod tests;
