//! Recipient and identity text. The first byte picks what the rest is:
//! 0: a recipient (`smpfs1…`), parsed and, if valid, printed and parsed back unchanged;
//! 1: an identity file's text, without a passphrase source;
//! 2: an identity file's text, with a passphrase source that is asked only for sealed keys
//!    and a custodian that "unwraps" wrapped keys to a fixed secret (so a mismatch with the
//!    recipient the file names is reached);
//! 3: a payload the harness Bech32-encodes under a chosen HRP (so the checksum is right and
//!    the fuzzer reaches what follows it), parsed as identity text and as a recipient.
#![no_main]

use std::path::Path;

use bech32::{Bech32, Hrp};
use libfuzzer_sys::fuzz_target;
use smpfs::keys::{Identity, KeyError, Recipient, WrappedSecret};
use zeroize::Zeroizing;

#[global_allocator]
static ALLOCATOR: smpfs::heap::ZeroOnFree = smpfs::heap::ZeroOnFree;

const HRPS: [&str; 5] = [
    "smpfs-secret-key-",
    "smpfs-encrypted-key-",
    "smpfs-wrapped-key-",
    "smpfs",
    "SMPFS-SECRET-KEY-",
];

fn recipient(text: &str) {
    if let Ok(recipient) = text.parse::<Recipient>() {
        let printed = recipient.to_string();
        let again: Recipient = printed.parse().expect("a printed recipient parses");
        assert_eq!(again, recipient);
    }
}

/// Passphrase source that answers only when the sealed key's argon2 cost is small (the
/// parameters are in the payload the harness built); anything dearer is refused, so one
/// input cannot spend seconds in argon2.
fn identity_text(text: &str, cheap: bool) {
    let mut answer = || {
        if cheap {
            Ok(Zeroizing::new("fuzz passphrase".to_owned()))
        } else {
            Err(KeyError::NoPassphrase("fuzzing".into()))
        }
    };
    let mut custodian = |_: &WrappedSecret| Ok(Zeroizing::new([1u8; 32]));
    if let Ok(identity) = Identity::from_file_text(
        text,
        Path::new("fuzz.key"),
        Some(&mut answer),
        Some(&mut custodian),
    ) {
        let _ = identity.recipient().to_string();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 4 {
        0 => recipient(&text),
        1 => {
            let _ = Identity::from_file_text(&text, Path::new("fuzz.key"), None, None);
        }
        2 => identity_text(&text, false),
        _ => {
            let Some((&pick, payload)) = rest.split_first() else {
                return;
            };
            let hrp = Hrp::parse(HRPS[pick as usize % HRPS.len()]).expect("valid HRP");
            let Ok(mut line) = bech32::encode::<Bech32>(hrp, payload) else {
                return;
            };
            if pick & 0x10 != 0 {
                line = line.to_uppercase();
            }
            recipient(&line);
            let m_kib = payload
                .get(1..5)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()));
            let t = payload
                .get(5..9)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()));
            let cheap = matches!((m_kib, t), (Some(m), Some(t)) if m <= 256 && t <= 2);
            let text = if pick & 0x20 != 0 {
                format!("# smpfs identity\n# recipient: x\n{line}\n")
            } else {
                line
            };
            identity_text(&text, cheap);
        }
    }
});
