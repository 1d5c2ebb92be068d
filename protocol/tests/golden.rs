//! Golden vectors: fixed batches whose encoded bytes are checked into
//! `tests/golden/`. An encoding change that breaks them breaks every
//! consumer already deployed; bump `FORMAT_VERSION` instead.
//!
//! Regenerate (only for a deliberate format change):
//! `BESS_UPDATE_GOLDEN=1 cargo test -p bess-protocol --test golden`

use bess_protocol::*;
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn catalog() -> Catalog {
    Catalog {
        devices: vec![DeviceInfo {
            name: "bms-1".into(),
            model: "bess-controller v1".into(),
        }],
        groups: vec![GroupInfo {
            device: 0,
            name: "fast".into(),
            interval_ms: 1000,
            points: vec![
                PointInfo::new("soc", "%", PointKind::Analog, 0.01, 0.0),
                PointInfo::new("dc_current", "A", PointKind::Analog, 0.1, 0.0),
                PointInfo::new("active_power", "W", PointKind::Analog, 1.0, 0.0),
            ],
        }],
    }
}

/// The golden catalog with a second group: a status word whose five bits
/// have names (the shape of the edge's example config).
fn catalog_with_flags() -> Catalog {
    let mut catalog = catalog();
    catalog.groups.push(GroupInfo {
        device: 0,
        name: "state".into(),
        interval_ms: 5000,
        points: vec![
            PointInfo::new("status", "", PointKind::Bitfield, 1.0, 0.0).with_flags([
                FlagName::new(0, "running"),
                FlagName::new(1, "charging"),
                FlagName::new(2, "discharging"),
                FlagName::new(3, "idle"),
                FlagName::new(4, "fault"),
            ]),
        ],
    });
    catalog
}

/// (hash file, catalog) pairs whose hashes are pinned.
fn pinned_hashes() -> Vec<(&'static str, Catalog)> {
    vec![
        ("catalog_hash.txt", catalog()),
        ("catalog_flags_hash.txt", catalog_with_flags()),
    ]
}

/// (file stem, batch) pairs covered by golden files.
fn vectors() -> Vec<(&'static str, Batch)> {
    let catalog = catalog();
    let hash = catalog.hash();
    let site = SiteId::new("site-001").unwrap();
    vec![
        (
            "catalog_only",
            Batch {
                site: site.clone(),
                seq: BatchSeq(1),
                catalog_hash: hash,
                catalog: Some(catalog),
                frames: vec![],
                gaps: vec![],
            },
        ),
        (
            "two_frames",
            Batch {
                site: site.clone(),
                seq: BatchSeq(2),
                catalog_hash: hash,
                catalog: None,
                frames: vec![
                    Frame {
                        group: GroupIndex(0),
                        ts_ms: 1_764_100_000_000,
                        values: vec![
                            Reading::Int(5000),
                            Reading::Int(-125),
                            Reading::Int(-250_000),
                        ],
                    },
                    Frame {
                        group: GroupIndex(0),
                        ts_ms: 1_764_100_001_000,
                        values: vec![
                            Reading::Int(5001),
                            Reading::Missing(MissingReason::Exception(2)),
                            Reading::Missing(MissingReason::Timeout),
                        ],
                    },
                ],
                gaps: vec![],
            },
        ),
        (
            "catalog_flags",
            Batch {
                site: site.clone(),
                seq: BatchSeq(4),
                catalog_hash: catalog_with_flags().hash(),
                catalog: Some(catalog_with_flags()),
                frames: vec![],
                gaps: vec![],
            },
        ),
        (
            "gap",
            Batch {
                site,
                seq: BatchSeq(3),
                catalog_hash: hash,
                catalog: None,
                frames: vec![],
                gaps: vec![Gap {
                    device: 0,
                    first_ts_ms: 1_764_000_000_000,
                    last_ts_ms: 1_764_000_059_000,
                    samples: 180,
                    reason: GapReason::DiskCap,
                }],
            },
        ),
    ]
}

#[test]
fn golden_vectors_encode_and_decode_exactly() {
    let update = std::env::var_os("BESS_UPDATE_GOLDEN").is_some();
    for (name, batch) in vectors() {
        // Uncompressed bytes are pinned exactly; the zstd file is pinned for
        // decoding (a newer zstd may compress differently but must still read it).
        let plain = batch.encode(Codec::None).unwrap();
        let plain_path = golden_dir().join(format!("{name}.bin"));
        let zstd_path = golden_dir().join(format!("{name}.zst.bin"));
        if update {
            std::fs::write(&plain_path, &plain).unwrap();
            std::fs::write(&zstd_path, batch.encode(Codec::Zstd).unwrap()).unwrap();
        }
        let expected =
            std::fs::read(&plain_path).unwrap_or_else(|e| panic!("{}: {e}", plain_path.display()));
        assert_eq!(plain, expected, "{name}: encoding changed");
        assert_eq!(
            Batch::decode(&expected).unwrap(),
            batch,
            "{name}: plain decode"
        );
        let compressed = std::fs::read(&zstd_path).unwrap();
        assert_eq!(
            Batch::decode(&compressed).unwrap(),
            batch,
            "{name}: zstd decode"
        );
    }
}

/// The key the signed golden vector is signed with (a fixed seed:
/// Ed25519 signatures are deterministic, so the bytes are pinned exactly).
fn golden_signer() -> SiteSigner {
    SiteSigner::from_seed([7; 32])
}

#[test]
fn the_signed_golden_vector_is_pinned_and_verifies_with_the_pinned_key() {
    let update = std::env::var_os("BESS_UPDATE_GOLDEN").is_some();
    let (_, batch) = vectors()
        .into_iter()
        .find(|(name, _)| *name == "two_frames")
        .unwrap();
    let signer = golden_signer();
    let signed = batch
        .encode_signed(Codec::None, Effort::Fast, &signer)
        .unwrap();
    let path = golden_dir().join("two_frames.signed.bin");
    let key_path = golden_dir().join("signing_key.txt");
    let key_text = format!(
        "{}\n{}\n",
        signature::format_public_key(&signer.public_key()),
        signer.key_id()
    );
    if update {
        std::fs::write(&path, &signed).unwrap();
        std::fs::write(&key_path, &key_text).unwrap();
    }
    let expected = std::fs::read(&path).unwrap();
    assert_eq!(signed, expected, "signed encoding changed");
    let pinned = std::fs::read_to_string(&key_path).unwrap();
    assert_eq!(pinned, key_text, "the golden key's text form changed");
    // Version 2 is the version-1 message with flag bit 1 and the trailer.
    let unsigned = batch.encode(Codec::None).unwrap();
    assert_eq!(expected[4], 2);
    assert_eq!(expected[6], unsigned[6] | 0x02);
    assert_eq!(expected[7..unsigned.len()], unsigned[7..]);
    assert_eq!(expected.len(), unsigned.len() + 72);
    assert_eq!(
        expected[unsigned.len()..unsigned.len() + 8],
        signer.key_id().0
    );
    let header = Header::parse(&expected).unwrap();
    let part = signature::signed_part(&expected, &header).unwrap();
    let key = signature::parse_public_key(pinned.lines().next().unwrap()).unwrap();
    signature::verify(&part, &key).unwrap();
    assert_eq!(Batch::decode(&expected).unwrap(), batch);
}

#[test]
fn a_signed_batch_with_its_catalog_carries_the_public_key_and_is_pinned() {
    let update = std::env::var_os("BESS_UPDATE_GOLDEN").is_some();
    let (_, batch) = vectors()
        .into_iter()
        .find(|(name, _)| *name == "catalog_only")
        .unwrap();
    let signer = golden_signer();
    let signed = batch
        .encode_signed(Codec::None, Effort::Fast, &signer)
        .unwrap();
    let path = golden_dir().join("catalog_only.signed.bin");
    if update {
        std::fs::write(&path, &signed).unwrap();
    }
    let expected = std::fs::read(&path).unwrap();
    assert_eq!(signed, expected, "signed encoding changed");
    let unsigned = batch.encode(Codec::None).unwrap();
    assert_eq!(expected[6], unsigned[6] | 0x02 | 0x08);
    assert_eq!(expected.len(), unsigned.len() + 96);
    assert_eq!(
        expected[unsigned.len()..unsigned.len() + 32],
        *signer.public_key().as_bytes()
    );
    let header = Header::parse(&expected).unwrap();
    let part = signature::signed_part(&expected, &header).unwrap();
    assert_eq!(part.public_key, Some(signer.public_key()));
    signature::verify(&part, &signer.public_key()).unwrap();
}

#[test]
fn golden_catalog_hashes_are_stable() {
    let update = std::env::var_os("BESS_UPDATE_GOLDEN").is_some();
    for (file, catalog) in pinned_hashes() {
        let path = golden_dir().join(file);
        assert_eq!(catalog.hash().to_string().len(), 16);
        if update {
            std::fs::write(&path, format!("{}\n", catalog.hash())).unwrap();
            continue;
        }
        let pinned =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(pinned.trim(), catalog.hash().to_string(), "{file}");
    }
}

#[test]
fn flag_names_follow_the_catalog_they_name_and_flag_bit_2_announces_them() {
    let bytes = std::fs::read(golden_dir().join("catalog_flags.bin")).unwrap();
    assert_eq!(bytes[6], 0x05, "has_catalog | flag_names");
    let header = Header::parse(&bytes).unwrap();
    assert!(header.has_catalog && header.has_flag_names);
    // Body: base_ts_ms 0, catalog Some, the catalog's canonical bytes
    // (layout, then flag names), no frames, no gaps.
    let catalog = catalog_with_flags();
    let mut body = vec![0x00, 0x01];
    body.extend_from_slice(&catalog.to_bytes());
    body.extend_from_slice(&[0x00, 0x00]);
    assert!(bytes.ends_with(&body));
    // The layout alone is what it would be without names.
    let mut unnamed = catalog.clone();
    unnamed.groups[1].points[0].flags.clear();
    assert!(catalog.to_bytes().starts_with(&unnamed.to_bytes()));
    // Batches without flag names keep flag bit 2 clear.
    for name in ["catalog_only", "two_frames", "gap"] {
        let bytes = std::fs::read(golden_dir().join(format!("{name}.bin"))).unwrap();
        assert_eq!(bytes[6] & 0x04, 0, "{name}");
    }
}
