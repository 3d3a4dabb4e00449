use super::*;

fn frame(z: f64) -> Frame {
    Frame {
        position: [-10.0, 20.0, z],
        orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        spacing: [0.5, 0.25],
        slope: 1.0,
        intercept: -1024.0,
    }
}

fn member(frames: Vec<Frame>) -> Slices {
    Slices {
        series: "1.2.3".into(),
        format: Format {
            rows: 2,
            columns: 3,
            bits_allocated: 16,
            bits_stored: 16,
            signed: true,
        },
        encoding: Encoding::Native,
        frames,
    }
}

fn series(zs: &[f64]) -> Vec<(usize, Slices)> {
    zs.iter()
        .enumerate()
        .map(|(i, z)| (i, member(vec![frame(*z)])))
        .collect()
}

#[test]
fn sorts_along_the_normal_and_builds_the_ras_affine() {
    let plan = plan(series(&[5.0, 0.0, 2.5])).unwrap();
    assert_eq!(
        plan.slices.iter().map(|s| s.0).collect::<Vec<_>>(),
        [1, 2, 0]
    );
    assert_eq!(
        plan.affine,
        [
            [-0.25, -0.0, -0.0, 10.0],
            [-0.0, -0.5, -0.0, -20.0],
            [0.0, 0.0, 2.5, 0.0]
        ]
    );
    assert_eq!(
        plan.dtype,
        Dtype::Stored {
            bytes: 2,
            signed: true
        }
    );
    assert_eq!(plan.scale, (1.0, -1024.0));
    assert_eq!(plan.len(), 352 + 3 * 12);
    let header = plan.header();
    assert_eq!(&header[344..348], b"n+1\0");
    assert_eq!(i16::from_le_bytes([header[70], header[71]]), 4);
    assert_eq!(
        f32::from_le_bytes(header[108..112].try_into().unwrap()),
        352.0
    );
}

#[test]
fn refuses_inconsistent_series() {
    assert!(matches!(
        plan(series(&[0.0, 2.5, 7.5, 10.0])),
        Err(VolumeError::MissingSlice {
            index: 2,
            count: 4,
            ..
        })
    ));
    assert!(matches!(
        plan(series(&[0.0, 2.5, 4.0])),
        Err(VolumeError::Uneven { .. })
    ));
    assert_eq!(
        plan(series(&[0.0, 2.5, 2.5])),
        Err(VolumeError::Duplicate(2))
    );
    let mut mixed = series(&[0.0, 2.5]);
    mixed[1].1.frames[0].orientation = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0];
    assert_eq!(plan(mixed), Err(VolumeError::MixedOrientation));
    let mut skewed = series(&[0.0, 2.5, 5.0]);
    skewed[2].1.frames[0].position[0] += 1.0;
    assert!(matches!(plan(skewed), Err(VolumeError::NotCollinear(_))));
}

#[test]
fn per_slice_rescale_gives_float32() {
    let mut members = series(&[0.0, 1.0]);
    members[1].1.frames[0].slope = 2.0;
    let plan = plan(members).unwrap();
    assert_eq!(plan.dtype, Dtype::Float32);
    assert_eq!(plan.scale, (1.0, 0.0));
    let mut out = [0u8; 4];
    convert(
        &(-3i16).to_le_bytes(),
        plan.format,
        plan.dtype,
        (2.0, 0.5),
        &mut out,
    );
    assert_eq!(f32::from_le_bytes(out), -5.5);
}

#[test]
fn keeps_only_bits_stored() {
    let format = Format {
        rows: 1,
        columns: 2,
        bits_allocated: 16,
        bits_stored: 12,
        signed: true,
    };
    let dtype = Dtype::Stored {
        bytes: 2,
        signed: true,
    };
    let mut out = [0u8; 4];
    convert(
        &[0xFF, 0xFF, 0x01, 0xF0],
        format,
        dtype,
        (1.0, 0.0),
        &mut out,
    );
    assert_eq!(out, [0xFF, 0xFF, 0x01, 0x00]);
}

#[test]
fn decodes_rle_segments_most_significant_first() {
    // Two segments of 3 bytes: MSBs [1, 1, 1] (replicate), LSBs [2, 3, 4] (literal).
    let mut fragment = vec![0u8; 64];
    fragment[0] = 2;
    fragment[4] = 64;
    fragment[8] = 66;
    fragment.extend_from_slice(&[0xFE, 1]);
    fragment.extend_from_slice(&[2, 2, 3, 4]);
    assert_eq!(decode_rle(&fragment, 3, 2).unwrap(), [2, 1, 3, 1, 4, 1]);
    assert!(decode_rle(&fragment, 4, 2).is_err());
    assert!(decode_rle(&fragment, 3, 1).is_err());
}
