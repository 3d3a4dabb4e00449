//! One record on disk, the forward-secure key chain that tags it, and the sealing of a
//! segment's first key to the auditor.
//!
//! A line is the record serialized without its tag (`S`, a JSON object ending in `}`),
//! with `,"tag":"<64 hex>"` spliced in before the final `}`, then `\n`. The tag is computed
//! over `S`, so the verifier recomputes it from the raw line bytes and any changed byte
//! shows.
//!
//! A line is built in two steps, so that the writer does the first outside its lock: a
//! [`Body`] serializes the fields that do not depend on the record's place in the chain
//! (`event` to `detail`); [`Body::to_line`] puts them at a [`Place`] (`seq`, `time`,
//! `log_id`, `segment`, `prev`) and tags the result. `S` is byte for byte what serializing
//! the whole [`Record`] gives.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{AuditError, Event, EventKind};
use crate::format::{self, FormatError, SealRandomness, TAG_LEN};
use crate::keys::{Identity, Recipient};

/// `prev` of the very first record of a log.
pub(crate) const ZERO_TAG: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";
/// BLAKE3 `derive_key` context for a record's MAC key.
const MAC_CONTEXT: &str = "smpfs audit v1 record mac";
/// BLAKE3 `derive_key` context for the next chain key.
const EVOLVE_CONTEXT: &str = "smpfs audit v1 key evolution";
/// What stands between the tagless record and the tag's hex digits.
const TAG_OPEN: &[u8] = b",\"tag\":\"";
/// Bytes of `,"tag":"<64 hex>"}` at the end of every line (before `\n`).
const TAG_SUFFIX_LEN: usize = TAG_OPEN.len() + 64 + 2;
/// Chunk size (log2) of the one-chunk sealed object that carries `K_0`.
const KEY_CHUNK_LOG2: u8 = 12;
/// A [`Record`] with no place in the chain (zero and empty `seq`, `time`, `log_id`,
/// `segment`, `prev`) serializes to this, its body, and [`UNPLACED_TAIL`].
const UNPLACED_HEAD: &[u8] = b"{\"seq\":0,\"time\":\"\",\"log_id\":\"\",\"segment\":0,";
/// See [`UNPLACED_HEAD`].
const UNPLACED_TAIL: &[u8] = b",\"prev\":\"\"}";

/// Every field of a record in line order. `tag` is never serialized: it is spliced in by
/// [`Body::to_line`]. Absent optional fields are omitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    pub seq: u64,
    pub time: String,
    pub log_id: String,
    pub segment: u32,
    pub event: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// The login name of `uid` (logs before it existed omit it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The host the record was written on (logs before it existed omit it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The stated purpose of the access, if one was stated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    pub prev: String,
    #[serde(skip_serializing)]
    pub tag: String,
}

/// The fields of a record from `event` to `detail`, serialized exactly as in [`Record`]
/// (`"event":…` to the last of them, without braces): everything that does not depend on
/// the record's place in the chain.
pub(crate) struct Body(Vec<u8>);

impl Body {
    /// Serializes `event`'s fields (`file_id` as hex).
    pub fn new(event: Event) -> Body {
        let actor = event.actor;
        let unplaced = Record {
            seq: 0,
            time: String::new(),
            log_id: String::new(),
            segment: 0,
            event: event.kind,
            uid: actor.as_ref().map(|a| a.uid),
            gid: actor.as_ref().map(|a| a.gid),
            pid: actor.as_ref().map(|a| a.pid),
            host: actor.as_ref().map(|_| super::host_name().to_owned()),
            user: actor.as_ref().map(|a| a.user.clone()),
            purpose: actor.as_ref().and_then(|a| a.purpose.clone()),
            process: actor.map(|a| a.process),
            path: event.path,
            file_id: event.file_id.map(hex::encode),
            offset: event.offset,
            length: event.length,
            result: event.result,
            detail: event.detail,
            prev: String::new(),
            tag: String::new(),
        };
        let mut json = serde_json::to_vec(&unplaced).expect("a record always serializes");
        assert!(
            json.starts_with(UNPLACED_HEAD) && json.ends_with(UNPLACED_TAIL),
            "the place fields of a record come first and last"
        );
        json.truncate(json.len() - UNPLACED_TAIL.len());
        json.drain(..UNPLACED_HEAD.len());
        Body(json)
    }

    /// The line of this body at `place` (ending in `\n`) and its tag; advances `chain` by
    /// one key.
    pub fn to_line(&self, place: &Place<'_>, chain: &mut Chain) -> (Vec<u8>, String) {
        let mut line = Vec::with_capacity(self.0.len() + 320);
        serde_json::to_writer(&mut line, place).expect("a place always serializes");
        line.pop();
        line.push(b',');
        line.extend_from_slice(&self.0);
        line.extend_from_slice(b",\"prev\":");
        serde_json::to_writer(&mut line, place.prev).expect("a string always serializes");
        line.push(b'}');
        let mut tag = [0u8; 64];
        hex::encode_to_slice(chain.tag(&line), &mut tag).expect("64 hex digits for 32 bytes");
        line.pop();
        line.extend_from_slice(TAG_OPEN);
        line.extend_from_slice(&tag);
        line.extend_from_slice(b"\"}\n");
        let tag = String::from_utf8(tag.to_vec()).expect("hex is ASCII");
        (line, tag)
    }
}

/// Where a record goes in the chain: the fields of [`Record`] that [`Body`] lacks.
/// Serializes as the head of the line (`prev` goes at its end).
#[derive(Serialize)]
pub(crate) struct Place<'a> {
    pub seq: u64,
    pub time: &'a str,
    pub log_id: &'a str,
    pub segment: u32,
    #[serde(skip)]
    pub prev: &'a str,
}

/// Splits a line (without its `\n`) into the parsed record and the bytes its tag covers.
/// `None` if the line lacks the exact tag suffix or is not a valid record.
pub(crate) fn parse_line(line: &[u8]) -> Option<(Record, Vec<u8>)> {
    let cut = line.len().checked_sub(TAG_SUFFIX_LEN)?;
    let suffix = &line[cut..];
    let digits = &suffix[TAG_OPEN.len()..TAG_OPEN.len() + 64];
    if !suffix.starts_with(TAG_OPEN)
        || !suffix.ends_with(b"\"}")
        || !digits
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let record: Record = serde_json::from_slice(line).ok()?;
    if record.tag.as_bytes() != digits {
        return None;
    }
    let mut covered = line[..cut].to_vec();
    covered.push(b'}');
    Some((record, covered))
}

/// The `seq` and `log_id` of a line that may not verify, for diagnosing where it belongs.
#[derive(Deserialize)]
pub(crate) struct Position {
    pub seq: u64,
    pub log_id: String,
}

impl Position {
    /// Reads the position fields of any JSON line; `None` if it has none.
    pub fn of(line: &[u8]) -> Option<Position> {
        serde_json::from_slice(line).ok()
    }
}

/// The forward-secure key chain of one segment: holds only the current key `K_i`.
#[derive(Clone)]
pub(crate) struct Chain {
    key: Zeroizing<[u8; 32]>,
}

impl Chain {
    /// A chain at `K_0`.
    pub fn new(k0: &[u8; 32]) -> Chain {
        Chain {
            key: Zeroizing::new(*k0),
        }
    }

    /// The tag of the current record, `keyed_hash(mk_i, message)`; then moves to `K_{i+1}`
    /// and overwrites `K_i`.
    pub fn tag(&mut self, message: &[u8]) -> [u8; 32] {
        let tag = self.compute(message);
        self.advance();
        *tag.as_bytes()
    }

    /// Whether `tag` (hex) is the current record's tag of `message`, in constant time;
    /// does not advance.
    pub fn verifies(&self, message: &[u8], tag: &str) -> bool {
        let mut expected = [0u8; 32];
        hex::decode_to_slice(tag, &mut expected).is_ok()
            && self.compute(message) == blake3::Hash::from(expected)
    }

    /// Moves to `K_{i+1} = derive_key(EVOLVE_CONTEXT, K_i)`, overwriting `K_i` in place.
    pub fn advance(&mut self) {
        let next = Zeroizing::new(blake3::derive_key(EVOLVE_CONTEXT, self.key.as_ref()));
        self.key.copy_from_slice(next.as_ref());
    }

    fn compute(&self, message: &[u8]) -> blake3::Hash {
        let mac_key = Zeroizing::new(blake3::derive_key(MAC_CONTEXT, self.key.as_ref()));
        blake3::keyed_hash(&mac_key, message)
    }

    /// The current key, for tests of the evolution.
    #[cfg(test)]
    pub fn key(&self) -> [u8; 32] {
        *self.key
    }
}

/// Fresh random bytes from the operating system.
pub(crate) fn random<const N: usize>() -> Zeroizing<[u8; N]> {
    let mut bytes = Zeroizing::new([0u8; N]);
    getrandom::getrandom(bytes.as_mut()).expect("OS random number generator");
    bytes
}

/// The logical path that binds a sealed `K_0` to its log and segment.
pub(crate) fn key_path(log_id: &str, segment: u32) -> String {
    format!("audit/{log_id}/{segment}")
}

/// Seals `k0` to `auditor` as a one-chunk sealed object (the sealed-file format, v1) under
/// the logical path [`key_path`]`(log_id, segment)`.
pub(crate) fn wrap_key(
    k0: &[u8; 32],
    auditor: &Recipient,
    log_id: &str,
    segment: u32,
) -> Result<Vec<u8>, FormatError> {
    let (mut object, opened) = format::seal_header(
        std::slice::from_ref(auditor),
        &key_path(log_id, segment),
        k0.len() as u64,
        KEY_CHUNK_LOG2,
        &SealRandomness::generate(1),
    )?;
    let mut chunk = Zeroizing::new(vec![0u8; k0.len() + TAG_LEN]);
    chunk[..k0.len()].copy_from_slice(k0);
    opened.chunks.seal_chunk(0, true, &mut chunk);
    object.extend_from_slice(&chunk);
    Ok(object)
}

/// Opens a `K_0` sealed by [`wrap_key`]; returns it with the authenticated logical path,
/// which the caller must compare with [`key_path`]. `None` if it is not sealed to
/// `identity`, malformed, or fails authentication.
pub(crate) fn unwrap_key(
    object: &[u8],
    identity: &Identity,
) -> Option<(Zeroizing<[u8; 32]>, String)> {
    let opened = format::Header::parse(object).ok()?.open(identity).ok()?;
    let layout = opened.layout;
    if layout.plaintext_len != 32 || layout.object_len() != object.len() as u64 {
        return None;
    }
    let mut chunk = Zeroizing::new(object[layout.header_len as usize..].to_vec());
    opened.chunks.open_chunk(0, true, &mut chunk).ok()?;
    let mut k0 = Zeroizing::new([0u8; 32]);
    k0.copy_from_slice(&chunk[..32]);
    Some((k0, opened.logical_path))
}

/// Maps an I/O error on `path` into an [`AuditError`].
pub(crate) fn io_error(path: &std::path::Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Every record of the log file at `path`, for the writer's and commands' tests.
#[cfg(test)]
pub(crate) fn read_records(path: &std::path::Path) -> Vec<Record> {
    std::fs::read(path)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| parse_line(l).expect("every line parses").0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::audit::Actor;

    fn sample() -> Event {
        let actor = Actor {
            uid: 1000,
            gid: 1000,
            pid: 42,
            process: "python3".to_owned(),
            user: "ana".to_owned(),
            purpose: None,
        };
        Event::new(EventKind::Read)
            .actor(&actor)
            .path("CT/1.dcm")
            .file_id([0x0f; 16])
            .range(0, 131072)
    }

    /// The line of `event` as record `seq` of a sample segment.
    fn line(event: Event, seq: u64, chain: &mut Chain) -> (Vec<u8>, String) {
        let place = Place {
            seq,
            time: "2025-01-02T03:04:05.123456789Z",
            log_id: "00112233445566778899aabbccddeeff",
            segment: 1,
            prev: ZERO_TAG,
        };
        Body::new(event).to_line(&place, chain)
    }

    #[test]
    fn line_has_fixed_field_order_and_round_trips() {
        let mut chain = Chain::new(&[7; 32]);
        let (line_5, tag) = line(sample(), 5, &mut chain);
        let text = std::str::from_utf8(&line_5).unwrap();
        let expected_prefix = format!(
            "{{\"seq\":5,\"time\":\"2025-01-02T03:04:05.123456789Z\",\
             \"log_id\":\"00112233445566778899aabbccddeeff\",\"segment\":1,\"event\":\"read\",\
             \"uid\":1000,\"gid\":1000,\"pid\":42,\"process\":\"python3\",\"user\":\"ana\",\
             \"host\":\"{}\",\"path\":\"CT/1.dcm\",",
            crate::audit::host_name()
        );
        assert!(text.starts_with(&expected_prefix), "{text}");
        assert!(text.ends_with(&format!(
            "\"length\":131072,\"result\":\"ok\",\"prev\":\"{ZERO_TAG}\",\"tag\":\"{tag}\"}}\n"
        )));
        let (parsed, covered) = parse_line(&line_5[..line_5.len() - 1]).unwrap();
        assert_eq!(parsed.tag, tag);
        assert_eq!(parsed.seq, 5);
        assert!(Chain::new(&[7; 32]).verifies(&covered, &tag));
        assert!(!chain.verifies(&covered, &tag), "the chain moved on");
        let mut bare = sample();
        bare.actor = None;
        bare.path = None;
        let (line_6, _) = line(bare, 6, &mut chain);
        let text = std::str::from_utf8(&line_6).unwrap();
        assert!(!text.contains("\"uid\"") && !text.contains("\"path\""));
    }

    /// What the tag covers is exactly the serialization of the whole record, whatever its
    /// fields hold.
    #[test]
    fn body_at_a_place_serializes_as_the_whole_record() {
        let odd = "quote \" backslash \\ newline \n control \u{1} é 漢 \u{1F600}";
        let events = [
            sample(),
            Event::new(EventKind::Open),
            sample()
                .path(odd)
                .result(format!("EIO: {odd}"))
                .detail(serde_json::json!({ "bytes": 7, "why": [odd, null, 1.5] })),
        ];
        let mut chain = Chain::new(&[9; 32]);
        for (seq, event) in (0..).zip(events) {
            let expected = (
                event.path.clone(),
                event.result.clone(),
                event.detail.clone(),
            );
            let (line, _) = line(event, seq, &mut chain);
            let (record, covered) = parse_line(&line[..line.len() - 1]).unwrap();
            assert_eq!(covered, serde_json::to_vec(&record).unwrap());
            assert_eq!((record.path, record.result, record.detail), expected);
        }
    }

    /// The test vector of `docs/AUDIT.md`.
    #[test]
    fn test_vector_matches_the_documentation() {
        let place = Place {
            seq: 0,
            time: "2025-01-01T00:00:00.000000000Z",
            log_id: "00112233445566778899aabbccddeeff",
            segment: 0,
            prev: ZERO_TAG,
        };
        let mut chain = Chain::new(&[0x42; 32]);
        assert_eq!(
            hex::encode(blake3::derive_key(MAC_CONTEXT, &[0x42; 32])),
            "c7f675f4aecf5802924463def14f2e60fc12189e2448193f83fbd7132f5be81f"
        );
        let (line, tag) = Body::new(Event::new(EventKind::Open)).to_line(&place, &mut chain);
        let tag_hex = "9047716476b559d410ca411bf670d3bab96151691e01c99648cb2df10b5b70b8";
        assert_eq!(tag, tag_hex);
        let expected = format!(
            "{{\"seq\":0,\"time\":\"2025-01-01T00:00:00.000000000Z\",\
             \"log_id\":\"00112233445566778899aabbccddeeff\",\"segment\":0,\"event\":\"open\",\
             \"result\":\"ok\",\"prev\":\"{ZERO_TAG}\",\"tag\":\"{tag_hex}\"}}\n"
        );
        assert_eq!(String::from_utf8(line).unwrap(), expected);
        assert_eq!(
            hex::encode(chain.key()),
            "761ca8038a40aef9ec689e4d082df4199fcb6d9fbd4e127cdfe7a0754eba8bb3"
        );
    }

    #[test]
    fn parse_rejects_lines_without_an_exact_tag_suffix() {
        let mut chain = Chain::new(&[1; 32]);
        let (line, _) = line(sample(), 0, &mut chain);
        let line = &line[..line.len() - 1];
        assert!(parse_line(line).is_some());
        assert!(parse_line(&line[..line.len() - 1]).is_none());
        let mut spaced = line.to_vec();
        spaced.push(b' ');
        assert!(parse_line(&spaced).is_none());
        let upper = String::from_utf8(line.to_vec()).unwrap().to_uppercase();
        assert!(parse_line(upper.as_bytes()).is_none());
        assert!(parse_line(b"{}").is_none());
    }

    #[test]
    fn key_evolution_erases_every_earlier_key() {
        const N: usize = 64;
        let k0 = random::<32>();
        let mut chain = Chain::new(&k0);
        let mut earlier = vec![*k0];
        for i in 0..N {
            chain.tag(format!("record {i}").as_bytes());
            let next = blake3::derive_key(EVOLVE_CONTEXT, earlier.last().unwrap());
            earlier.push(next);
        }
        let k_n = earlier.pop().unwrap();
        assert_eq!(chain.key(), k_n, "state is exactly K_N");
        assert!(earlier.iter().all(|k| *k != k_n));
        // Going forward from K_N never meets an earlier key.
        let mut forward = chain.clone();
        for _ in 0..N {
            forward.advance();
            assert!(earlier.iter().all(|k| *k != forward.key()));
        }
        // Nor does K_N give an earlier record's MAC key.
        let first_mac = Chain::new(&k0).compute(b"x");
        assert_ne!(chain.compute(b"x"), first_mac);
    }

    #[test]
    fn k0_round_trips_and_is_bound_to_log_and_segment() {
        let auditor = Identity::generate();
        let k0 = random::<32>();
        let sealed = wrap_key(&k0, &auditor.recipient(), "ab", 3).unwrap();
        let (opened, path) = unwrap_key(&sealed, &auditor).unwrap();
        assert_eq!(*opened, *k0);
        assert_eq!(path, key_path("ab", 3));
        assert!(unwrap_key(&sealed, &Identity::generate()).is_none());
        let mut damaged = sealed.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(unwrap_key(&damaged, &auditor).is_none());
        assert!(unwrap_key(&sealed[..sealed.len() - 1], &auditor).is_none());
        let mut extended = sealed.clone();
        extended.push(0);
        assert!(unwrap_key(&extended, &auditor).is_none());
    }
}
