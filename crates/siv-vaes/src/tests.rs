use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM_SIV};
use proptest::prelude::*;

use super::*;

/// The wide key, or `None` on a CPU without the instructions, where `Siv` uses AWS-LC
/// alone: the tests then check that no wide key can be made.
fn wide_key(key: &[u8; 32]) -> Option<OpeningKey> {
    let wide = OpeningKey::new(key);
    assert_eq!(
        wide.is_some(),
        available(),
        "a wide key exists exactly where the CPU can run it"
    );
    if wide.is_none() {
        eprintln!("this CPU lacks VAES/VPCLMULQDQ/AVX-512: only the fallback is checked");
    }
    wide
}

fn aws_lc_seal(key: &[u8; 32], nonce: [u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; 16] {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM_SIV, key).unwrap());
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data)
        .unwrap();
    tag.as_ref().try_into().unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Opens with the wide key both ways and checks the plaintext; returns whether it opened.
fn opens(
    key: &OpeningKey,
    nonce: &[u8; 12],
    aad: &[u8],
    sealed: &[u8],
    tag: &[u8; 16],
    plain: &[u8],
) -> bool {
    let mut out = vec![0u8; sealed.len()];
    let into = key.open_into(nonce, aad, sealed, tag, &mut out);
    let mut in_place = sealed.to_vec();
    let placed = key.open_in_place(nonce, aad, &mut in_place, tag);
    assert_eq!(into, placed, "both ways agree on the tag");
    if into {
        assert_eq!(out, plain, "open_into gives the plaintext");
        assert_eq!(in_place, plain, "open_in_place gives the plaintext");
    }
    into
}

#[test]
fn every_length_up_to_600_bytes_opens_what_aws_lc_sealed() {
    let key = [0x42; 32];
    let Some(wide) = wide_key(&key) else { return };
    for len in 0..=600 {
        let plain = pattern(len, 7);
        let aad = pattern(len % 50, 3);
        let nonce = [len as u8; 12];
        let mut sealed = plain.clone();
        let tag = aws_lc_seal(&key, nonce, &aad, &mut sealed);
        assert!(
            opens(&wide, &nonce, &aad, &sealed, &tag, &plain),
            "length {len}"
        );
    }
}

/// One RFC 8452 vector, in hex.
struct Vector {
    key: &'static str,
    nonce: &'static str,
    aad: &'static str,
    plain: &'static str,
    /// Ciphertext ‖ tag.
    sealed: &'static str,
}

/// RFC 8452 appendix C.2, and (last two) C.3, whose tags make the 32-bit block counter wrap
/// after the first block.
const VECTORS: [Vector; 5] = [
    Vector {
        key: "0100000000000000000000000000000000000000000000000000000000000000",
        nonce: "030000000000000000000000",
        aad: "",
        plain: "",
        sealed: "07f5f4169bbf55a8400cd47ea6fd400f",
    },
    Vector {
        key: "0100000000000000000000000000000000000000000000000000000000000000",
        nonce: "030000000000000000000000",
        aad: "01",
        plain: "0200000000000000000000000000000003000000000000000000000000000000\
                04000000000000000000000000000000",
        sealed: "c67a1f0f567a5198aa1fcc8e3f21314336f7f51ca8b1af61feac35a86416fa47\
                 fbca3b5f749cdf564527f2314f42fe2503332742b228c647173616cfd44c54eb",
    },
    Vector {
        key: "bae8e37fc83441b16034566b7a806c46bb91c3c5aedb64a6c590bc84d1a5e269",
        nonce: "e4b47801afc0577e34699b9e",
        aad: "4fbdc66f14",
        plain: "671fdd",
        sealed: "0eaccb93da9bb81333aee0c785b240d319719d",
    },
    Vector {
        key: "0000000000000000000000000000000000000000000000000000000000000000",
        nonce: "000000000000000000000000",
        aad: "",
        plain: "000000000000000000000000000000004db923dc793ee6497c76dcc03a98e108",
        sealed: "f3f80f2cf0cb2dd9c5984fcda908456cc537703b5ba70324a6793a7bf218d3ea\
                 ffffffff000000000000000000000000",
    },
    Vector {
        key: "0000000000000000000000000000000000000000000000000000000000000000",
        nonce: "000000000000000000000000",
        aad: "",
        plain: "eb3640277c7ffd1303c7a542d02d3e4c0000000000000000",
        sealed: "18ce4f0b8cb4d0cac65fea8f79257b20888e53e72299e56d\
                 ffffffff000000000000000000000000",
    },
];

#[test]
fn rfc_8452_vectors_open_including_counter_wrap() {
    if wide_key(&[0; 32]).is_none() {
        return;
    }
    for v in &VECTORS {
        let key: [u8; 32] = hex(v.key).try_into().unwrap();
        let nonce: [u8; 12] = hex(v.nonce).try_into().unwrap();
        let (aad, plain, sealed) = (hex(v.aad), hex(v.plain), hex(v.sealed));
        let (ciphertext, tag) = sealed.split_at(sealed.len() - 16);
        let tag: [u8; 16] = tag.try_into().unwrap();
        let wide = OpeningKey::new(&key).unwrap();
        assert!(
            opens(&wide, &nonce, &aad, ciphertext, &tag, &plain),
            "{}",
            v.sealed
        );
    }
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The sixteen-block steps count and hash exactly as the one-block tail does, across the
/// counter's wrap from 2³² − 1 to 0, which no random tag reaches.
#[test]
fn sixteen_block_steps_match_single_blocks_across_the_counter_wrap() {
    if wide_key(&[0; 32]).is_none() {
        return;
    }
    // SAFETY: the instructions are present (checked above).
    unsafe { check_wide_steps_against_single_blocks() }
}

#[target_feature(enable = "avx512f,vaes,vpclmulqdq,aes,pclmulqdq,sse4.1")]
fn check_wide_steps_against_single_blocks() {
    let keys = NonceKeys {
        auth: padded_block(&pattern(16, 9)),
        encryption: expand(&[0x5a; 32]),
    };
    // First word 0xffff_fff9: the wrap falls inside the first sixteen-block step.
    let mut start = [0x80u8; 16];
    start[..4].copy_from_slice(&0xffff_fff9_u32.to_le_bytes());
    // SAFETY: 16 bytes, unaligned load.
    let counter = unsafe { _mm_loadu_si128(start.as_ptr().cast()) };
    let len = 512 + 5;
    let src = pattern(len, 1);
    let mut wide = vec![0u8; len];
    // SAFETY: both buffers hold `len` bytes and do not overlap.
    let wide_acc = unsafe {
        decrypt_and_hash(
            &keys,
            counter,
            _mm_setzero_si128(),
            src.as_ptr(),
            wide.as_mut_ptr(),
            len,
        )
    };

    let mut narrow = vec![0u8; len];
    let mut acc = _mm_setzero_si128();
    for (i, (s, d)) in src.chunks(16).zip(narrow.chunks_mut(16)).enumerate() {
        let mut block = start;
        block[..4].copy_from_slice(&0xffff_fff9_u32.wrapping_add(i as u32).to_le_bytes());
        // SAFETY: 16-byte buffers.
        let keystream = unsafe {
            let ks = encrypt_block(&keys.encryption, _mm_loadu_si128(block.as_ptr().cast()));
            _mm_storeu_si128(block.as_mut_ptr().cast(), ks);
            block
        };
        for (j, byte) in d.iter_mut().enumerate() {
            *byte = s[j] ^ keystream[j];
        }
        acc = dot(_mm_xor_si128(acc, padded_block(d)), keys.auth);
    }
    assert_eq!(wide, narrow, "same keystream across the wrap");
    let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
    // SAFETY: 16-byte buffers.
    unsafe {
        _mm_storeu_si128(a.as_mut_ptr().cast(), wide_acc);
        _mm_storeu_si128(b.as_mut_ptr().cast(), acc);
    }
    assert_eq!(a, b, "same POLYVAL");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random keys, nonces, AAD and lengths up to two 64 KiB chunks: the wide path opens
    /// what AWS-LC sealed, and refuses it once any bit of the ciphertext, tag, AAD or nonce
    /// is flipped.
    #[test]
    fn opens_what_aws_lc_seals_and_refuses_any_flipped_bit(
        key in any::<[u8; 32]>(),
        nonce in any::<[u8; 12]>(),
        aad in proptest::collection::vec(any::<u8>(), 0..80),
        len in 0usize..140_000,
        seed in any::<u8>(),
        flip in any::<(usize, u8)>(),
    ) {
        let Some(wide) = wide_key(&key) else { return Ok(()) };
        let plain = pattern(len, seed);
        let mut sealed = plain.clone();
        let tag = aws_lc_seal(&key, nonce, &aad, &mut sealed);
        prop_assert!(opens(&wide, &nonce, &aad, &sealed, &tag, &plain));

        let bit = 1u8 << (flip.1 % 8);
        let mut bad = sealed.clone();
        let mut bad_tag = tag;
        match flip.0 % 4 {
            0 if len > 0 => bad[flip.0 % len] ^= bit,
            1 if !aad.is_empty() => {
                let mut bad_aad = aad.clone();
                bad_aad[flip.0 % aad.len()] ^= bit;
                prop_assert!(!opens(&wide, &nonce, &bad_aad, &sealed, &tag, &plain));
                return Ok(());
            }
            2 => {
                let mut bad_nonce = nonce;
                bad_nonce[flip.0 % 12] ^= bit;
                prop_assert!(!opens(&wide, &bad_nonce, &aad, &sealed, &tag, &plain));
                return Ok(());
            }
            _ => bad_tag[flip.0 % 16] ^= bit,
        }
        prop_assert!(!opens(&wide, &nonce, &aad, &bad, &bad_tag, &plain));
    }
}

/// After a call returns, no block of the plaintext is left on the stack it ran on: the
/// compiler spills registers into `open`'s frame, and `scrub_stack` must wipe them. The
/// opening runs on a thread of its own, whose stack mapping is then read back through
/// /proc/self/mem and searched for the plaintext's one repeated block.
#[test]
fn no_plaintext_is_left_on_the_stack_after_opening() {
    let key = [0x11; 32];
    if wide_key(&key).is_none() {
        return;
    }
    let block: Vec<u8> = b"PLAINTEXT-CANARY".to_vec();
    let nonce = [5u8; 12];
    let mut sealed = block.repeat(4096);
    let tag = aws_lc_seal(&key, nonce, b"", &mut sealed);
    let found = std::thread::spawn(move || {
        let wide = OpeningKey::new(&key).unwrap();
        let mut out = vec![0u8; sealed.len()];
        assert!(wide.open_into(&nonce, b"", &sealed, &tag, &mut out));
        let mut in_place = sealed.clone();
        assert!(wide.open_in_place(&nonce, b"", &mut in_place, &tag));
        assert!(out.chunks(16).all(|c| c == block) && in_place == out);
        out.zeroize();
        in_place.zeroize();
        let here = 0u8;
        occurrences_in_stack(std::ptr::addr_of!(here) as u64, &block)
    })
    .join()
    .unwrap();
    assert_eq!(found, 0, "blocks of plaintext left on the stack");
}

/// Occurrences of `needle` in the mapping of this process that contains `address`.
fn occurrences_in_stack(address: u64, needle: &[u8]) -> usize {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let (start, end) = maps
        .lines()
        .filter_map(|line| {
            let (start, end) = line.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            ))
        })
        .find(|&(start, end)| (start..end).contains(&address))
        .expect("the stack is mapped");
    let mut memory = vec![0u8; (end - start) as usize];
    std::fs::File::open("/proc/self/mem")
        .unwrap()
        .read_exact_at(&mut memory, start)
        .unwrap();
    memory
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}
