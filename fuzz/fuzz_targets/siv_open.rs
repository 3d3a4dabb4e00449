//! smpfs's own AES-256-GCM-SIV opening (`siv-vaes`) against AWS-LC's, on the same input:
//! both must accept or refuse it alike, and give the same plaintext when they accept. The
//! input is a key, a nonce, AAD and a message; when its first byte is even, the message is
//! sealed by AWS-LC first (a tag random bytes would almost never match), then one byte of
//! the sealed message or tag may be flipped, as the second byte says.
#![no_main]

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM_SIV};
use libfuzzer_sys::fuzz_target;
use siv_vaes::OpeningKey;

fuzz_target!(|data: &[u8]| {
    let Some((&[mode, flip, aad_len], rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    let Some((key, rest)) = rest.split_first_chunk::<32>() else {
        return;
    };
    let Some((nonce, rest)) = rest.split_first_chunk::<12>() else {
        return;
    };
    let (aad, rest) = rest.split_at(rest.len().min(usize::from(aad_len)));
    let Some(wide) = OpeningKey::new(key) else {
        return;
    };
    let aws_lc = LessSafeKey::new(UnboundKey::new(&AES_256_GCM_SIV, key).unwrap());
    let (mut ciphertext, mut tag) = if mode % 2 == 0 {
        let mut sealed = rest.to_vec();
        let tag = aws_lc
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut sealed,
            )
            .unwrap();
        (sealed, <[u8; 16]>::try_from(tag.as_ref()).unwrap())
    } else {
        let Some((tag, ciphertext)) = rest.split_first_chunk::<16>() else {
            return;
        };
        (ciphertext.to_vec(), *tag)
    };
    if flip % 3 == 1 && !ciphertext.is_empty() {
        let at = usize::from(flip) * 131 % ciphertext.len();
        ciphertext[at] ^= 1 << (flip % 8);
    } else if flip % 3 == 2 {
        tag[usize::from(flip) % 16] ^= 1 << (flip % 8);
    }

    let mut expected = vec![0u8; ciphertext.len()];
    let aws_lc_opened = aws_lc
        .open_separate_gather(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            &ciphertext,
            &tag,
            &mut expected,
        )
        .is_ok();
    let mut into = vec![0u8; ciphertext.len()];
    let opened = wide.open_into(nonce, aad, &ciphertext, &tag, &mut into);
    let mut in_place = ciphertext.clone();
    let opened_in_place = wide.open_in_place(nonce, aad, &mut in_place, &tag);
    assert_eq!(opened, aws_lc_opened, "accepts exactly what AWS-LC accepts");
    assert_eq!(opened_in_place, aws_lc_opened, "in place too");
    if opened {
        assert!(into == expected && in_place == expected, "same plaintext");
    }
});
