//! `cargo bench -p siv-vaes`: opening sealed chunks with AWS-LC and with this crate, side by
//! side in one run (alternating rounds, medians), at smpfs's smallest and largest chunk
//! sizes. One core; GB/s = 10⁹ plaintext bytes per second.

use std::hint::black_box;
use std::time::Instant;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM_SIV};
use siv_vaes::OpeningKey;

const ROUNDS: usize = 7;
/// Bytes opened per round and implementation.
const BYTES_PER_ROUND: usize = 256 << 20;

fn main() {
    let key = [0x24; 32];
    let Some(wide) = OpeningKey::new(&key) else {
        eprintln!("this CPU lacks VAES/VPCLMULQDQ/AVX-512F: nothing to compare");
        return;
    };
    let aws_lc = LessSafeKey::new(UnboundKey::new(&AES_256_GCM_SIV, &key).unwrap());
    // smpfs's AAD: a 16-byte file id and a logical path.
    let aad = b"0123456789abcdefstudies/CT-0001/slice-0042.dcm";
    let nonce = [7u8; 12];
    println!("| chunk | AWS-LC GB/s | siv-vaes GB/s | ratio |");
    println!("|---:|---:|---:|---:|");
    for chunk in [4 << 10, 64 << 10] {
        let mut sealed = vec![0x5a; chunk];
        let tag = aws_lc
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed,
            )
            .unwrap();
        let tag: [u8; 16] = tag.as_ref().try_into().unwrap();
        let mut out = vec![0u8; chunk];
        let iterations = BYTES_PER_ROUND / chunk;
        let (mut lc, mut vaes) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let t = Instant::now();
            for _ in 0..iterations {
                aws_lc
                    .open_separate_gather(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        black_box(&sealed),
                        &tag,
                        &mut out,
                    )
                    .unwrap();
            }
            lc.push(BYTES_PER_ROUND as f64 / t.elapsed().as_secs_f64() / 1e9);
            let t = Instant::now();
            for _ in 0..iterations {
                assert!(wide.open_into(&nonce, aad, black_box(&sealed), &tag, &mut out));
            }
            vaes.push(BYTES_PER_ROUND as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
        let (lc, vaes) = (median(lc), median(vaes));
        println!(
            "| {} KiB | {lc:.2} | {vaes:.2} | {:.2}x |",
            chunk >> 10,
            vaes / lc
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
