//! The versioned envelope around a batch body: magic, version, codec, site,
//! sequence, catalog hash, and the (compressed) postcard body.

use crate::batch::WireBody;
use crate::ids::MAX_SITE_ID_LEN;
use crate::{Batch, BatchSeq, CatalogHash, SiteId};

/// First four bytes of every batch: ASCII "BESS".
pub const MAGIC: [u8; 4] = *b"BESS";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Largest body accepted, before and after decompression (a guard against
/// decompression bombs).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

const FLAG_HAS_CATALOG: u8 = 0b0000_0001;
const FLAG_SIGNED: u8 = 0b0000_0010;
const KNOWN_FLAGS: u8 = FLAG_HAS_CATALOG | FLAG_SIGNED;

/// How the body bytes are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    None = 0,
    Zstd = 1,
}

/// How hard the zstd codec works; readers need not know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Effort {
    /// Level 3: for writers that encode a lot (load generators, tools).
    #[default]
    Fast,
    /// Level 12 in a 128 KiB window: about a tenth smaller than `Fast` on
    /// an edge's 15 s batches, for a site that sends each batch once over a
    /// metered link. Well under a millisecond for a small site's batch, a
    /// few for a 50-device one, and under a megabyte of working memory.
    Compact,
}

impl Effort {
    fn compress(self, plain: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Self::Fast => zstd::bulk::compress(plain, 3),
            Self::Compact => {
                use zstd::zstd_safe::CParameter;
                let mut compressor = zstd::bulk::Compressor::new(12)?;
                compressor.set_parameter(CParameter::WindowLog(17))?;
                compressor.set_parameter(CParameter::HashLog(16))?;
                compressor.set_parameter(CParameter::ChainLog(17))?;
                compressor.compress(plain)
            }
        }
    }
}

/// The fixed fields before the body; readable without decompressing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub codec: Codec,
    pub has_catalog: bool,
    pub site: SiteId,
    pub seq: BatchSeq,
    pub catalog_hash: CatalogHash,
    /// Byte range of the body within the message.
    body_start: usize,
    body_len: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("body of {0} bytes exceeds the {MAX_BODY_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("compression failed: {0}")]
    Compress(std::io::Error),
    #[error("serialization failed: {0}")]
    Serialize(postcard::Error),
}

/// Why bytes are not a valid batch. Each variant is a reason a consumer can
/// put in a dead-letter record.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes is shorter than the envelope header")]
    Truncated(usize),
    #[error("bad magic {0:02x?}, expected \"BESS\"")]
    BadMagic([u8; 4]),
    #[error("unsupported format version {0} (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown codec {0}")]
    UnknownCodec(u8),
    #[error("unknown flags {0:#010b}")]
    UnknownFlags(u8),
    #[error("signed batches are not supported by this build")]
    SignatureUnsupported,
    #[error("invalid site id: {0}")]
    SiteId(String),
    #[error("body length {declared} does not match the {actual} bytes that follow the header")]
    BodyLength { declared: usize, actual: usize },
    #[error("decompression failed: {0}")]
    Decompress(std::io::Error),
    #[error("body is not a valid batch body: {0}")]
    Body(postcard::Error),
    #[error("catalog flag says {flag}, body says {body}")]
    CatalogFlagMismatch { flag: bool, body: bool },
}

impl Batch {
    /// Encode as envelope + body, compressing with [`Effort::Fast`].
    pub fn encode(&self, codec: Codec) -> Result<Vec<u8>, EncodeError> {
        self.encode_with(codec, Effort::Fast)
    }

    /// Encode as envelope + body, compressing (if `codec` does) with `effort`.
    pub fn encode_with(&self, codec: Codec, effort: Effort) -> Result<Vec<u8>, EncodeError> {
        let plain =
            postcard::to_stdvec(&WireBody::from_batch(self)).map_err(EncodeError::Serialize)?;
        if plain.len() > MAX_BODY_BYTES {
            return Err(EncodeError::TooLarge(plain.len()));
        }
        let body = match codec {
            Codec::None => plain,
            Codec::Zstd => effort.compress(&plain).map_err(EncodeError::Compress)?,
        };
        let site = self.site.as_str().as_bytes();
        let mut out = Vec::with_capacity(28 + site.len() + body.len());
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        out.push(codec as u8);
        out.push(if self.catalog.is_some() {
            FLAG_HAS_CATALOG
        } else {
            0
        });
        out.push(site.len() as u8);
        out.extend_from_slice(site);
        out.extend_from_slice(&self.seq.0.to_be_bytes());
        out.extend_from_slice(&self.catalog_hash.0.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decode and verify a whole message.
    pub fn decode(bytes: &[u8]) -> Result<Batch, DecodeError> {
        let header = Header::parse(bytes)?;
        let body = &bytes[header.body_start..header.body_start + header.body_len];
        let plain;
        let body = match header.codec {
            Codec::None => body,
            Codec::Zstd => {
                plain = decompress(body)?;
                &plain[..]
            }
        };
        let wire: WireBody = postcard::from_bytes(body).map_err(DecodeError::Body)?;
        let (catalog, frames, gaps) = wire.into_parts();
        if catalog.is_some() != header.has_catalog {
            return Err(DecodeError::CatalogFlagMismatch {
                flag: header.has_catalog,
                body: catalog.is_some(),
            });
        }
        Ok(Batch {
            site: header.site,
            seq: header.seq,
            catalog_hash: header.catalog_hash,
            catalog,
            frames,
            gaps,
        })
    }
}

impl Header {
    /// Read and check the envelope without touching the body.
    pub fn parse(bytes: &[u8]) -> Result<Header, DecodeError> {
        let truncated = || DecodeError::Truncated(bytes.len());
        if bytes.len() < 8 {
            return Err(truncated());
        }
        let magic: [u8; 4] = bytes[0..4].try_into().expect("4 bytes");
        if magic != MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        let version = bytes[4];
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let codec = match bytes[5] {
            0 => Codec::None,
            1 => Codec::Zstd,
            other => return Err(DecodeError::UnknownCodec(other)),
        };
        let flags = bytes[6];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(DecodeError::UnknownFlags(flags));
        }
        if flags & FLAG_SIGNED != 0 {
            return Err(DecodeError::SignatureUnsupported);
        }
        let site_len = usize::from(bytes[7]);
        if site_len == 0 || site_len > MAX_SITE_ID_LEN {
            return Err(DecodeError::SiteId(format!("length {site_len}")));
        }
        let body_start = 8 + site_len + 8 + 8 + 4;
        if bytes.len() < body_start {
            return Err(truncated());
        }
        let site = std::str::from_utf8(&bytes[8..8 + site_len])
            .map_err(|e| DecodeError::SiteId(e.to_string()))
            .and_then(|s| SiteId::new(s).map_err(|e| DecodeError::SiteId(e.to_string())))?;
        let at = 8 + site_len;
        let seq = u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let catalog_hash = u64::from_be_bytes(bytes[at + 8..at + 16].try_into().expect("8 bytes"));
        let body_len =
            u32::from_be_bytes(bytes[at + 16..at + 20].try_into().expect("4 bytes")) as usize;
        let actual = bytes.len() - body_start;
        if body_len != actual {
            return Err(DecodeError::BodyLength {
                declared: body_len,
                actual,
            });
        }
        Ok(Header {
            version,
            codec,
            has_catalog: flags & FLAG_HAS_CATALOG != 0,
            site,
            seq: BatchSeq(seq),
            catalog_hash: CatalogHash(catalog_hash),
            body_start,
            body_len,
        })
    }
}

thread_local! {
    /// One decompression context per thread, reused: creating one per
    /// message cost more than decoding the message.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompress a zstd body into a buffer of the size its frame header
/// declares (the edge always writes it), at most [`MAX_BODY_BYTES`]; a body
/// that declares no size gets the whole limit.
fn decompress(body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let size = match zstd::zstd_safe::get_frame_content_size(body) {
        Ok(Some(size)) => usize::try_from(size)
            .ok()
            .filter(|s| *s <= MAX_BODY_BYTES)
            .ok_or_else(|| {
                DecodeError::Decompress(std::io::Error::other(format!(
                    "the body declares {size} bytes, over the {MAX_BODY_BYTES}-byte limit"
                )))
            })?,
        Ok(None) => MAX_BODY_BYTES,
        Err(_) => {
            return Err(DecodeError::Decompress(std::io::Error::other(
                "not a zstd frame",
            )))
        }
    };
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decompressor = match slot.as_mut() {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new().map_err(DecodeError::Decompress)?),
        };
        let mut plain = Vec::with_capacity(size);
        decompressor
            .decompress_to_buffer(body, &mut plain)
            .map_err(DecodeError::Decompress)?;
        Ok(plain)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use proptest::prelude::*;

    fn sample_batch() -> Batch {
        let catalog = Catalog {
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
                    PointInfo::new("alarms", "", PointKind::Bitfield, 1.0, 0.0),
                ],
            }],
        };
        Batch {
            site: SiteId::new("site-1").unwrap(),
            seq: BatchSeq(42),
            catalog_hash: catalog.hash(),
            catalog: Some(catalog),
            frames: vec![
                Frame {
                    group: GroupIndex(0),
                    ts_ms: 1_764_000_000_000,
                    values: vec![Reading::Int(5012), Reading::Int(-1200), Reading::Int(0)],
                },
                Frame {
                    group: GroupIndex(0),
                    ts_ms: 1_764_000_001_000,
                    values: vec![
                        Reading::Int(5011),
                        Reading::Missing(MissingReason::Exception(2)),
                        Reading::Float(1.5),
                    ],
                },
            ],
            gaps: vec![Gap {
                device: 0,
                first_ts_ms: 1_763_999_000_000,
                last_ts_ms: 1_763_999_999_000,
                samples: 3000,
                reason: GapReason::DiskCap,
            }],
        }
    }

    #[test]
    fn round_trips_with_each_codec() {
        let batch = sample_batch();
        for codec in [Codec::None, Codec::Zstd] {
            let bytes = batch.encode(codec).unwrap();
            assert_eq!(Batch::decode(&bytes).unwrap(), batch);
        }
    }

    #[test]
    fn the_compact_effort_decodes_the_same_and_is_smaller_on_a_real_batch() {
        // 15 s of 14 slowly moving, noisy integers, as an edge seals them.
        let mut batch = sample_batch();
        batch.catalog = None;
        batch.frames = (0..15)
            .map(|s: i64| Frame {
                group: GroupIndex(0),
                ts_ms: 1_764_000_000_000 + s * 1000 + (s * 7) % 5,
                values: (0..14)
                    .map(|i: i64| Reading::Int(5000 + i * 300 + (s * 31 + i * 17) % 7 + s / 4))
                    .collect(),
            })
            .collect();
        let fast = batch.encode(Codec::Zstd).unwrap();
        let compact = batch.encode_with(Codec::Zstd, Effort::Compact).unwrap();
        assert_eq!(Batch::decode(&compact).unwrap(), batch);
        assert!(
            compact.len() < fast.len(),
            "{} vs {}",
            compact.len(),
            fast.len()
        );
    }

    #[test]
    fn header_is_readable_without_the_body() {
        let bytes = sample_batch().encode(Codec::Zstd).unwrap();
        let header = Header::parse(&bytes).unwrap();
        assert_eq!(header.site.as_str(), "site-1");
        assert_eq!(header.seq, BatchSeq(42));
        assert!(header.has_catalog);
    }

    #[test]
    fn rejects_bad_magic_version_codec_and_length() {
        let good = sample_batch().encode(Codec::None).unwrap();
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(Batch::decode(&bad), Err(DecodeError::BadMagic(_))));
        let mut bad = good.clone();
        bad[4] = 9;
        assert!(matches!(
            Batch::decode(&bad),
            Err(DecodeError::UnsupportedVersion(9))
        ));
        let mut bad = good.clone();
        bad[5] = 7;
        assert!(matches!(
            Batch::decode(&bad),
            Err(DecodeError::UnknownCodec(7))
        ));
        let bad = &good[..good.len() - 1];
        assert!(matches!(
            Batch::decode(bad),
            Err(DecodeError::BodyLength { .. })
        ));
        assert!(matches!(
            Batch::decode(b"BES"),
            Err(DecodeError::Truncated(3))
        ));
        let mut bad = good.clone();
        bad[6] |= 0b10;
        assert!(matches!(
            Batch::decode(&bad),
            Err(DecodeError::SignatureUnsupported)
        ));
    }

    #[test]
    fn rejects_a_catalog_flag_that_disagrees_with_the_body() {
        let mut bytes = sample_batch().encode(Codec::None).unwrap();
        bytes[6] = 0;
        assert!(matches!(
            Batch::decode(&bytes),
            Err(DecodeError::CatalogFlagMismatch { .. })
        ));
    }

    #[test]
    fn rejects_garbage_after_a_valid_header() {
        let mut bytes = sample_batch().encode(Codec::Zstd).unwrap();
        let n = bytes.len();
        for b in &mut bytes[n - 10..] {
            *b ^= 0x5a;
        }
        assert!(Batch::decode(&bytes).is_err());
    }

    /// `sample_batch()` with its body compressed by `compress`.
    fn with_zstd_body(compress: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
        let plain = sample_batch().encode(Codec::None).unwrap();
        let header = Header::parse(&plain).unwrap();
        let mut bytes = plain[..header.body_start - 4].to_vec();
        bytes[5] = Codec::Zstd as u8;
        let body = compress(&plain[header.body_start..]);
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&body);
        bytes
    }

    #[test]
    fn a_zstd_body_that_does_not_declare_its_size_still_decodes() {
        let bytes = with_zstd_body(|body| zstd::stream::encode_all(body, 3).unwrap());
        assert_eq!(Batch::decode(&bytes).unwrap(), sample_batch());
    }

    #[test]
    fn a_zstd_body_that_expands_past_the_limit_is_refused() {
        // Zeros, more than the limit, after the real body: a bomb that
        // declares no size, and one that declares its true size.
        let bomb = |declare: bool| {
            move |body: &[u8]| {
                let mut plain = body.to_vec();
                plain.resize(MAX_BODY_BYTES + 1, 0);
                if declare {
                    zstd::bulk::compress(&plain, 1).unwrap()
                } else {
                    zstd::stream::encode_all(&plain[..], 1).unwrap()
                }
            }
        };
        for declare in [false, true] {
            let bytes = with_zstd_body(bomb(declare));
            assert!(bytes.len() < 64 * 1024, "a small message");
            assert!(
                matches!(Batch::decode(&bytes), Err(DecodeError::Decompress(_))),
                "declared size: {declare}"
            );
        }
    }

    fn reading() -> impl Strategy<Value = Reading> {
        prop_oneof![
            any::<i64>().prop_map(Reading::Int),
            any::<f64>()
                .prop_filter("NaN never equals itself", |v| !v.is_nan())
                .prop_map(Reading::Float),
            (0u8..=255).prop_map(|c| Reading::Missing(MissingReason::Exception(c))),
            Just(Reading::Missing(MissingReason::Timeout)),
        ]
    }

    proptest! {
        #[test]
        fn any_batch_round_trips(
            seq in any::<u64>(),
            hash in any::<u64>(),
            frames in prop::collection::vec(
                (0u16..4, any::<i64>(), prop::collection::vec(reading(), 0..8)),
                0..20,
            ),
        ) {
            let batch = Batch {
                site: SiteId::new("s").unwrap(),
                seq: BatchSeq(seq),
                catalog_hash: CatalogHash(hash),
                catalog: None,
                frames: frames
                    .into_iter()
                    .map(|(g, ts, values)| Frame { group: GroupIndex(g), ts_ms: ts, values })
                    .collect(),
                gaps: vec![],
            };
            let bytes = batch.encode(Codec::Zstd).unwrap();
            prop_assert_eq!(Batch::decode(&bytes).unwrap(), batch);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = Batch::decode(&bytes);
        }
    }
}
