//! What signing costs, measured against decoding in the same run: 2,000
//! batches shaped like an edge's 15 s batches of a small site (3
//! controllers × 20 points at 1 s), zstd at the edge's effort.
//!
//! ```sh
//! cargo run --release -p bess-protocol --example signature_cost
//! ```
//!
//! Prints per batch: encoding unsigned and signed (the edge's cost),
//! decoding (the collector's decode stage without signatures), and
//! verification one by one and in chunks of 256 (what the collector does),
//! with verification as a share of decoding.

use std::time::Instant;

use bess_protocol::signature::{signed_part, verify, verify_all, SignedPart};
use bess_protocol::*;

const BATCHES: usize = 2000;

fn batch(i: usize) -> Batch {
    let points = (0..20)
        .map(|p| PointInfo::new(&format!("p{p}"), "", PointKind::Analog, 0.1, 0.0))
        .collect::<Vec<_>>();
    let catalog = Catalog {
        devices: (0..3)
            .map(|d| DeviceInfo {
                name: format!("bms-{d}"),
                model: "m".into(),
            })
            .collect(),
        groups: (0..3)
            .map(|d| GroupInfo {
                device: d,
                name: "fast".into(),
                interval_ms: 1000,
                points: points.clone(),
            })
            .collect(),
    };
    let t0 = 1_764_000_000_000 + (i as i64) * 15_000;
    Batch {
        site: SiteId::new(format!("site-{:04}", i % 1000)).unwrap(),
        seq: BatchSeq(i as u64),
        catalog_hash: catalog.hash(),
        catalog: None,
        frames: (0..15)
            .flat_map(|s| {
                (0..3u16).map(move |g| Frame {
                    group: GroupIndex(g),
                    ts_ms: t0 + s * 1000 + i64::from(g) * 7,
                    values: (0..20)
                        .map(|p| Reading::Int(5000 + p * 100 + (s * 13 + p * 7 + i as i64) % 9))
                        .collect(),
                })
            })
            .collect(),
        gaps: vec![],
    }
}

fn per_batch_us(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e6 / BATCHES as f64
}

fn main() {
    let batches: Vec<Batch> = (0..BATCHES).map(batch).collect();
    let signers: Vec<SiteSigner> = (0..1000u32)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            SiteSigner::from_seed(seed)
        })
        .collect();

    let start = Instant::now();
    let unsigned: Vec<Vec<u8>> = batches
        .iter()
        .map(|b| b.encode_with(Codec::Zstd, Effort::Compact).unwrap())
        .collect();
    let encode_us = per_batch_us(start);
    let start = Instant::now();
    let signed: Vec<Vec<u8>> = batches
        .iter()
        .enumerate()
        .map(|(i, b)| {
            b.encode_signed(Codec::Zstd, Effort::Compact, &signers[i % 1000])
                .unwrap()
        })
        .collect();
    let encode_signed_us = per_batch_us(start);

    let start = Instant::now();
    for m in &signed {
        std::hint::black_box(Batch::decode(m).unwrap());
    }
    let decode_us = per_batch_us(start);

    let headers: Vec<Header> = signed.iter().map(|m| Header::parse(m).unwrap()).collect();
    let keys: Vec<VerifyingKey> = (0..BATCHES)
        .map(|i| signers[i % 1000].public_key())
        .collect();
    let parts: Vec<(SignedPart<'_>, &VerifyingKey)> = signed
        .iter()
        .zip(&headers)
        .zip(&keys)
        .map(|((m, h), k)| (signed_part(m, h).unwrap(), k))
        .collect();
    let start = Instant::now();
    for (part, key) in &parts {
        verify(part, key).unwrap();
    }
    let verify_us = per_batch_us(start);
    let start = Instant::now();
    for chunk in parts.chunks(256) {
        assert!(verify_all(chunk));
    }
    let verify_all_us = per_batch_us(start);

    let samples = batches[0].sample_count();
    let bytes = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>() as f64 / BATCHES as f64;
    println!("{BATCHES} batches of {samples} samples (15 s of a 3 × 20-point site)");
    println!(
        "size:   unsigned {:.0} B, signed {:.0} B (+{:.1} %)",
        bytes(&unsigned),
        bytes(&signed),
        100.0 * (bytes(&signed) / bytes(&unsigned) - 1.0)
    );
    println!("edge:   encode {encode_us:.1} µs, encode + sign {encode_signed_us:.1} µs per batch");
    println!("reader: decode {decode_us:.1} µs per batch");
    println!(
        "        verify one by one {verify_us:.1} µs ({:.0} % of decode), in chunks of 256 {verify_all_us:.1} µs ({:.0} % of decode)",
        100.0 * verify_us / decode_us,
        100.0 * verify_all_us / decode_us
    );
}
