//! Writes the generated part of the seed corpora: real audit logs and anchors (sealed to
//! the fuzz auditor), identity and recipient texts, sealing recipes for the `object`
//! target and a small synthetic DICOM series. `make-seeds DIR` writes `DIR/<target>/…`.
//! The committed corpora under `fuzz/corpus/` were made by it (plus the format test
//! vectors); `run.sh` adds pydicom's test files at run time.

use std::fs;
use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use smpfs::audit::{AnchorTarget, AuditLog, Event, EventKind, SyncPolicy};
use smpfs::keys::Identity;
use smpfs_fuzz::auditor;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = dir.join(target);
    fs::create_dir_all(&dir).expect("create corpus directory");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn audit_logs(out: &Path) {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let log = tmp.path().join("audit.log");
    let anchor = tmp.path().join("anchor");
    let recipient = auditor().recipient();
    AuditLog::init(&log, &recipient).expect("audit init");
    let target = AnchorTarget::File(anchor.clone());
    for mount in 0..2u32 {
        let writer = AuditLog::open_segment(
            &log,
            &recipient,
            SyncPolicy::Always,
            Some(&target),
            serde_json::json!({ "source": "fuzz", "mount": mount }),
        )
        .expect("open segment");
        for i in 0..3u64 {
            writer
                .record(
                    Event::new(EventKind::Read)
                        .path("CT/1.dcm")
                        .file_id([i as u8; 16])
                        .range(i * 4096, 4096)
                        .result("ok"),
                )
                .expect("record");
        }
        writer
            .record(Event::new(EventKind::IntegrityFailure).result("EIO: chunk 2"))
            .expect("record");
        writer.seal(serde_json::json!({})).expect("seal");
    }
    let log = fs::read(&log).expect("read log");
    let anchor = fs::read(&anchor).expect("read anchor");
    write(out, "audit_line", "log", &log);
    let first_line = log.split(|b| *b == b'\n').next().unwrap_or_default();
    write(out, "audit_line", "one-line", first_line);
    for (name, flags, with_anchor) in [
        ("raw", 0u8, false),
        ("fixed", 3, false),
        ("fixed-anchor-file", 3, true),
        ("fixed-anchor-store", 7, true),
    ] {
        let mut seed = vec![flags];
        seed.extend_from_slice(&log);
        if with_anchor {
            seed.extend_from_slice(b"\n#ANCHOR\n");
            seed.extend_from_slice(&anchor);
        }
        write(out, "audit_log", name, &seed);
    }
}

fn keys(out: &Path) {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let identity = Identity::from([1; 32]);
    let mut recipient = vec![0u8];
    recipient.extend_from_slice(identity.recipient().to_string().as_bytes());
    write(out, "keys", "recipient", &recipient);
    let plain = tmp.path().join("plain.key");
    identity.save_new(&plain, None).expect("save identity");
    let text = fs::read(&plain).expect("read identity");
    for mode in [1u8, 2] {
        let mut seed = vec![mode];
        seed.extend_from_slice(&text);
        write(out, "keys", &format!("identity-{mode}"), &seed);
    }
    // Payloads for mode 3: a raw secret, and a sealed one with cheap argon2 parameters
    // (its tag is wrong, so opening reaches the AEAD and fails there).
    write(
        out,
        "keys",
        "payload-secret",
        &[[3u8, 0].as_slice(), &[1; 32]].concat(),
    );
    let mut sealed = vec![3u8, 1, 1];
    sealed.extend_from_slice(&64u32.to_le_bytes());
    sealed.extend_from_slice(&1u32.to_le_bytes());
    sealed.extend_from_slice(&[0x5a; 16 + 32 + 16]);
    write(out, "keys", "payload-sealed", &sealed);
}

fn options(out: &Path) {
    let seeds: [&str; 8] = [
        "ro,allow_other,cache_size=512M,umask=027,uid=1000,gid=1000",
        "identity=/root/.smpfs/workstation.key,passphrase_file=/run/credentials/pass,volumes,noexec",
        "audit=/var/log/smpfs/audit.log,audit_sync=100,audit_anchor=s3://anchors/site-a/,audit_anchor_retention=6y",
        "endpoint=http://127.0.0.1:9000,region=eu-west-1,profile=lab,path_style=on,timeout=30s",
        "gdrive_credentials=/etc/smpfs/sa.json,gdrive_token=/root/.smpfs/drive.json,gdrive_endpoint=https://www.googleapis.com/drive/v3/,idle_timeout=15m",
        "defaults,_netdev,nofail,x-systemd.automount,noatime,kernel_cache,gpu_sink=host,audit=off",
        "s3://scans/site-a\0gdrive:///My Drive/scans\0file:///buckets/b\0CT/series 1/1.dcm",
        "64KiB\01G\0256M\065536",
    ];
    for (i, seed) in seeds.iter().enumerate() {
        write(out, "options", &format!("seed-{i}"), seed.as_bytes());
    }
}

fn objects(out: &Path) {
    // shape, who, plaintext length (u32), path, 0, fill, then tampering ops, then run.
    let recipe = |shape: u8, who: u8, len: u32, path: &str, ops: &[u8]| {
        let mut seed = vec![shape, who];
        seed.extend_from_slice(&len.to_le_bytes());
        seed.extend_from_slice(path.as_bytes());
        seed.push(0);
        seed.push(0x33);
        seed.extend_from_slice(ops);
        seed
    };
    let seeds = [
        (
            "plain-one-chunk",
            recipe(0, 0, 100, "study/CT/1.dcm", &[0, 0, 0, 0, 1]),
        ),
        (
            "three-chunks",
            recipe(0, 1, 2 * 4096 + 5, "a/b/c.bin", &[0, 0, 0, 0, 2]),
        ),
        (
            "flip",
            recipe(0, 0, 5000, "x.dcm", &[1, 0x20, 0x10, 0x01, 0, 0, 0, 0]),
        ),
        (
            "swap",
            recipe(0, 0, 3 * 4096, "x.dcm", &[4, 1, 0, 2, 0, 0, 0, 0]),
        ),
        (
            "truncate",
            recipe(0, 0, 9000, "x.dcm", &[2, 0x00, 0x30, 0, 0, 0, 0, 0]),
        ),
        (
            "foreign",
            recipe(0x40, 2, 9000, "y.dcm", &[5, 1, 0, 7, 0, 0, 0, 0]),
        ),
        (
            "big-chunks",
            recipe(0xa4, 0, 70_000, "MR/img.dcm", &[0, 0, 0, 0, 2]),
        ),
        ("stranger", recipe(0, 9, 10, "z", &[0, 0, 0, 0])),
        ("moved", recipe(0x10, 0, 10, "z", &[0, 0, 0, 0])),
        ("size", recipe(0, 0, 10, "z", &[6, 0, 0, 0xff, 0, 0, 0, 0])),
    ];
    for (name, seed) in seeds {
        write(out, "object", name, &seed);
    }
}

/// One 8 × 8 slice of a synthetic CT series at height `z`, 16-bit native, with the
/// attributes de-identification touches.
fn slice(z: usize, implicit: bool) -> Vec<u8> {
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |tag, vr, value: PrimitiveValue| {
        obj.put(DataElement::new(tag, vr, value));
    };
    let sop = format!("1.2.826.0.1.3680043.8.498.1.{}", z + 1);
    put(
        tags::SOP_CLASS_UID,
        VR::UI,
        "1.2.840.10008.5.1.4.1.1.2".into(),
    );
    put(tags::SOP_INSTANCE_UID, VR::UI, sop.as_str().into());
    put(tags::MODALITY, VR::CS, "CT".into());
    put(tags::PATIENT_NAME, VR::PN, "Doe^Jane".into());
    put(tags::PATIENT_ID, VR::LO, "PAT-0001".into());
    put(tags::PATIENT_BIRTH_DATE, VR::DA, "19700101".into());
    put(tags::STUDY_DATE, VR::DA, "20240102".into());
    put(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        "1.2.826.0.1.3680043.8.498.2".into(),
    );
    put(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        "1.2.826.0.1.3680043.8.498.3".into(),
    );
    put(tags::INSTITUTION_NAME, VR::LO, "General Hospital".into());
    put(
        tags::INSTANCE_NUMBER,
        VR::IS,
        format!("{}", z + 1).as_str().into(),
    );
    put(
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        PrimitiveValue::Strs(
            ["-4".into(), "-4".into(), format!("{}", 2.5 * z as f64)]
                .into_iter()
                .collect(),
        ),
    );
    put(
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        PrimitiveValue::Strs(
            ["1", "0", "0", "0", "1", "0"]
                .map(String::from)
                .into_iter()
                .collect(),
        ),
    );
    put(
        tags::PIXEL_SPACING,
        VR::DS,
        PrimitiveValue::Strs(["0.5".to_owned(), "0.5".to_owned()].into_iter().collect()),
    );
    put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16));
    put(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2".into(),
    );
    put(tags::ROWS, VR::US, PrimitiveValue::from(8u16));
    put(tags::COLUMNS, VR::US, PrimitiveValue::from(8u16));
    put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16));
    put(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16));
    put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16));
    put(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(0u16),
    );
    put(tags::RESCALE_INTERCEPT, VR::DS, "-1024".into());
    put(tags::RESCALE_SLOPE, VR::DS, "1".into());
    let pixels: Vec<u16> = (0..64).map(|i| (i * 37 + z * 11) as u16 & 0x0fff).collect();
    put(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into()));
    let syntax = if implicit {
        "1.2.840.10008.1.2"
    } else {
        "1.2.840.10008.1.2.1"
    };
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(syntax)
        .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
        .media_storage_sop_instance_uid(sop.as_str())
        .implementation_class_uid("1.2.826.0.1.3680043.8.498.9");
    let file = obj.with_meta(meta).expect("valid meta");
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).expect("write DICOM");
    bytes
}

fn dicom(out: &Path) {
    for implicit in [false, true] {
        let name = if implicit { "implicit" } else { "explicit" };
        let one = slice(0, implicit);
        write(
            out,
            "dicom_deid",
            &format!("ct-{name}"),
            &[[0u8].as_slice(), &one].concat(),
        );
        let series: Vec<Vec<u8>> = (0..3).map(|z| slice(z, implicit)).collect();
        write(
            out,
            "dicom_volume",
            &format!("series-{name}"),
            &series.join(&b"\n--SLICE--\n"[..]),
        );
        write(out, "dicom_volume", &format!("slice-{name}"), &one);
    }
}

// Built with the fuzz targets' coverage flags, this program must link libFuzzer's
// coverage hooks; an empty target satisfies the hooks' reference to one. Its own `main`
// runs, not libFuzzer's.
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {});

fn manifests(out: &Path) {
    use smpfs::manifest::{Entry, Kind, Op, Segment};
    let entry = |n: u8| Entry {
        object_id: [n; 16],
        file_id: [n ^ 1; 16],
        header_hash: [n ^ 2; 32],
        size: u64::from(n) << 10,
        object_len: (u64::from(n) << 10) + 200,
        mtime: (1_700_000_000, u32::from(n)),
        padded: n % 2 == 0,
        detached: None,
    };
    let recipients = vec![Identity::generate().recipient()];
    let snapshot = Segment {
        kind: Kind::Snapshot,
        generation: 3,
        snapshot: 3,
        recipients: recipients.clone(),
        ops: vec![
            Op::Put("Patient/CT/1.dcm".into(), entry(1)),
            Op::Put("Patient/CT/2.dcm".into(), entry(2)),
        ],
    };
    let delta = Segment {
        kind: Kind::Delta,
        generation: 4,
        snapshot: 3,
        recipients,
        ops: vec![
            Op::Remove("Patient/CT/1.dcm".into()),
            Op::Put("Patient/MR/1.dcm".into(), entry(3)),
        ],
    };
    write(out, "manifest", "snapshot", &snapshot.encode());
    write(out, "manifest", "delta", &delta.encode());
}

fn main() {
    let out = std::env::args_os()
        .nth(1)
        .expect("usage: make-seeds OUTPUT_DIR");
    let out = Path::new(&out);
    audit_logs(out);
    keys(out);
    options(out);
    objects(out);
    dicom(out);
    manifests(out);
}
