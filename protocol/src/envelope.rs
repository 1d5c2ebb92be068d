//! The versioned envelope around a batch body: magic, version, codec, site,
//! sequence, catalog hash, and the (compressed) postcard body.
//!
//! Version 2 is version 1 with flag bit 1 (signed) set and a signature
//! trailer after the body (SPEC section 11, `signature.rs`); unsigned
//! batches are still written as version 1, byte for byte as before.
//!
//! Flag bit 2 (flag names, SPEC section 4.1) is set exactly when the
//! batch's catalog has flag names, so a batch without them has the bytes
//! it had before the bit existed, and a reader that predates the bit
//! rejects only the batches that need it.

use crate::batch::{BodyParts, WireBody};
use crate::catalog::FlagNamesError;
use crate::ids::MAX_SITE_ID_LEN;
use crate::signature::{SiteSigner, KEY_ID_LEN, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::{Batch, BatchSeq, CatalogHash, SiteId};

/// First four bytes of every batch: ASCII "BESS".
pub const MAGIC: [u8; 4] = *b"BESS";
/// The format version of unsigned batches.
pub const FORMAT_VERSION: u8 = 1;
/// The format version of signed batches (version 1 plus a signature).
pub const SIGNED_FORMAT_VERSION: u8 = 2;
/// Largest body accepted, before and after decompression (a guard against
/// decompression bombs).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

const FLAG_HAS_CATALOG: u8 = 0b0000_0001;
const FLAG_SIGNED: u8 = 0b0000_0010;
const FLAG_FLAG_NAMES: u8 = 0b0000_0100;
/// Version 2 only: the trailer names the signer by its whole public key
/// instead of its id (written on batches that carry the catalog).
const FLAG_PUBLIC_KEY: u8 = 0b0000_1000;
const KNOWN_FLAGS: u8 = FLAG_HAS_CATALOG | FLAG_SIGNED | FLAG_FLAG_NAMES;
const KNOWN_FLAGS_V2: u8 = KNOWN_FLAGS | FLAG_PUBLIC_KEY;

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
    /// Flag bit 2: the catalog is followed by its points' flag names.
    pub has_flag_names: bool,
    /// Version 2, flag bit 1: a signature trailer follows the body.
    pub signed: bool,
    /// Version 2, flag bit 3: the trailer holds the signer's public key
    /// (32 bytes) rather than its key id (8 bytes).
    pub has_public_key: bool,
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
    #[error("the catalog's flag names would be rejected: {0}")]
    FlagNames(FlagNamesError),
}

/// Why bytes are not a valid batch. Each variant is a reason a consumer can
/// put in a dead-letter record.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes is shorter than the envelope header")]
    Truncated(usize),
    #[error("bad magic {0:02x?}, expected \"BESS\"")]
    BadMagic([u8; 4]),
    #[error("unsupported format version {0} (this build reads versions {FORMAT_VERSION} and {SIGNED_FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown codec {0}")]
    UnknownCodec(u8),
    #[error("unknown flags {0:#010b}")]
    UnknownFlags(u8),
    #[error("the signed flag is set in a version-1 message (version 1 defines no signature)")]
    SignatureUnsupported,
    #[error("a version-2 message without the signed flag")]
    SignatureMissing,
    #[error("the flag-names flag is set without the catalog flag")]
    FlagNamesWithoutCatalog,
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
    #[error("the catalog's flag names are invalid: {0}")]
    FlagNames(FlagNamesError),
}

impl Batch {
    /// Encode as envelope + body, compressing with [`Effort::Fast`].
    pub fn encode(&self, codec: Codec) -> Result<Vec<u8>, EncodeError> {
        self.encode_with(codec, Effort::Fast)
    }

    /// Encode as envelope + body, compressing (if `codec` does) with `effort`.
    pub fn encode_with(&self, codec: Codec, effort: Effort) -> Result<Vec<u8>, EncodeError> {
        self.encode_envelope(codec, effort, None)
    }

    /// Encode as a signed (version 2) message: envelope, body, and the
    /// signature of `signer` over both.
    pub fn encode_signed(
        &self,
        codec: Codec,
        effort: Effort,
        signer: &SiteSigner,
    ) -> Result<Vec<u8>, EncodeError> {
        self.encode_envelope(codec, effort, Some(signer))
    }

    fn encode_envelope(
        &self,
        codec: Codec,
        effort: Effort,
        signer: Option<&SiteSigner>,
    ) -> Result<Vec<u8>, EncodeError> {
        if let Some(catalog) = &self.catalog {
            catalog.check_flag_names().map_err(EncodeError::FlagNames)?;
        }
        let (plain, flag_names) = WireBody::from_batch(self)
            .to_bytes()
            .map_err(EncodeError::Serialize)?;
        if plain.len() > MAX_BODY_BYTES {
            return Err(EncodeError::TooLarge(plain.len()));
        }
        let body = match codec {
            Codec::None => plain,
            Codec::Zstd => effort.compress(&plain).map_err(EncodeError::Compress)?,
        };
        let site = self.site.as_str().as_bytes();
        // A batch that carries the catalog (the first after a start, then
        // hourly) names its signer by the whole public key, so a collector
        // that pins keys on first use can learn it.
        let with_public_key = signer.is_some() && self.catalog.is_some();
        let mut out = Vec::with_capacity(28 + site.len() + body.len() + 96);
        out.extend_from_slice(&MAGIC);
        out.push(match signer {
            Some(_) => SIGNED_FORMAT_VERSION,
            None => FORMAT_VERSION,
        });
        out.push(codec as u8);
        let mut flags = 0;
        if signer.is_some() {
            flags |= FLAG_SIGNED;
        }
        if with_public_key {
            flags |= FLAG_PUBLIC_KEY;
        }
        if self.catalog.is_some() {
            flags |= FLAG_HAS_CATALOG;
        }
        if flag_names {
            flags |= FLAG_FLAG_NAMES;
        }
        out.push(flags);
        out.push(site.len() as u8);
        out.extend_from_slice(site);
        out.extend_from_slice(&self.seq.0.to_be_bytes());
        out.extend_from_slice(&self.catalog_hash.0.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        if let Some(signer) = signer {
            signer.append_trailer(&mut out, with_public_key);
        }
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
        let BodyParts {
            mut catalog,
            flag_names,
            frames,
            gaps,
        } = WireBody::decode(body, header.has_flag_names).map_err(DecodeError::Body)?;
        if catalog.is_some() != header.has_catalog {
            return Err(DecodeError::CatalogFlagMismatch {
                flag: header.has_catalog,
                body: catalog.is_some(),
            });
        }
        if let (Some(catalog), Some(names)) = (&mut catalog, flag_names) {
            names.attach(catalog).map_err(DecodeError::FlagNames)?;
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
    /// How many leading bytes of a signed message its signature covers
    /// (envelope, body and the key id that starts the trailer); `None` for
    /// an unsigned message.
    pub fn signed_len(&self) -> Option<usize> {
        self.signed
            .then_some(self.body_start + self.body_len + self.signer_len())
    }

    /// Bytes of the trailer that name the signer: its public key or its id.
    pub(crate) fn signer_len(&self) -> usize {
        if self.has_public_key {
            PUBLIC_KEY_LEN
        } else {
            KEY_ID_LEN
        }
    }

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
        if version != FORMAT_VERSION && version != SIGNED_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let codec = match bytes[5] {
            0 => Codec::None,
            1 => Codec::Zstd,
            other => return Err(DecodeError::UnknownCodec(other)),
        };
        let flags = bytes[6];
        let known = if version == SIGNED_FORMAT_VERSION {
            KNOWN_FLAGS_V2
        } else {
            KNOWN_FLAGS
        };
        if flags & !known != 0 {
            return Err(DecodeError::UnknownFlags(flags));
        }
        let signed = flags & FLAG_SIGNED != 0;
        if signed && version == FORMAT_VERSION {
            return Err(DecodeError::SignatureUnsupported);
        }
        if !signed && version == SIGNED_FORMAT_VERSION {
            return Err(DecodeError::SignatureMissing);
        }
        let has_public_key = flags & FLAG_PUBLIC_KEY != 0;
        let trailer = match (signed, has_public_key) {
            (false, _) => 0,
            (true, false) => KEY_ID_LEN + SIGNATURE_LEN,
            (true, true) => PUBLIC_KEY_LEN + SIGNATURE_LEN,
        };
        if flags & FLAG_FLAG_NAMES != 0 && flags & FLAG_HAS_CATALOG == 0 {
            return Err(DecodeError::FlagNamesWithoutCatalog);
        }
        let site_len = usize::from(bytes[7]);
        if site_len == 0 || site_len > MAX_SITE_ID_LEN {
            return Err(DecodeError::SiteId(format!("length {site_len}")));
        }
        let body_start = 8 + site_len + 8 + 8 + 4;
        if bytes.len() < body_start + trailer {
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
        let actual = bytes.len() - body_start - trailer;
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
            has_flag_names: flags & FLAG_FLAG_NAMES != 0,
            signed,
            has_public_key,
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

    /// `sample_batch()` with names for two bits of its `alarms` word.
    fn batch_with_flag_names() -> Batch {
        let mut batch = sample_batch();
        let catalog = batch.catalog.as_mut().unwrap();
        catalog.groups[0].points[2].flags =
            vec![FlagName::new(0, "overvoltage"), FlagName::new(7, "fire")];
        batch.catalog_hash = catalog.hash();
        batch
    }

    /// Where the catalog's bytes end in `sample_batch()` encoded with codec 0.
    fn catalog_end(bytes: &[u8]) -> usize {
        let batch = sample_batch();
        let base_ts = postcard::to_stdvec(&batch.frames[0].ts_ms).unwrap().len();
        Header::parse(bytes).unwrap().body_start
            + base_ts
            + 1
            + batch.catalog.unwrap().to_bytes().len()
    }

    /// `bytes` (codec 0) with `section` put after the catalog, flag bit 2
    /// set and the body length fixed.
    fn with_section(bytes: &[u8], at: usize, section: &[u8]) -> Vec<u8> {
        let header = Header::parse(bytes).unwrap();
        let mut out = bytes[..at].to_vec();
        out.extend_from_slice(section);
        out.extend_from_slice(&bytes[at..]);
        out[6] |= FLAG_FLAG_NAMES;
        let body_len = (out.len() - header.body_start) as u32;
        out[header.body_start - 4..header.body_start].copy_from_slice(&body_len.to_be_bytes());
        out
    }

    #[test]
    fn flag_names_set_flag_bit_2_and_come_back() {
        let batch = batch_with_flag_names();
        for codec in [Codec::None, Codec::Zstd] {
            let bytes = batch.encode(codec).unwrap();
            assert_eq!(bytes[6], FLAG_HAS_CATALOG | FLAG_FLAG_NAMES);
            assert!(Header::parse(&bytes).unwrap().has_flag_names);
            assert_eq!(Batch::decode(&bytes).unwrap(), batch);
        }
        let without = sample_batch().encode(Codec::None).unwrap();
        assert_eq!(without[6], FLAG_HAS_CATALOG);
        assert!(!Header::parse(&without).unwrap().has_flag_names);
    }

    #[test]
    fn the_flag_names_section_sits_between_catalog_and_frames() {
        let plain = sample_batch().encode(Codec::None).unwrap();
        let at = catalog_end(&plain);
        // One group of three points; the third names bits 0 and 7.
        let section = [
            0x01, 0x03, 0x00, 0x00, 0x02, 0x00, 0x0b, b'o', b'v', b'e', b'r', b'v', b'o', b'l',
            b't', b'a', b'g', b'e', 0x07, 0x04, b'f', b'i', b'r', b'e',
        ];
        let expected = batch_with_flag_names().encode(Codec::None).unwrap();
        // The same message but for the header's hash, which covers the names.
        let hash_at = 8 + "site-1".len() + 8;
        let mut built = with_section(&plain, at, &section);
        assert_ne!(built[hash_at..hash_at + 8], expected[hash_at..hash_at + 8]);
        built[hash_at..hash_at + 8].copy_from_slice(&expected[hash_at..hash_at + 8]);
        assert_eq!(built, expected);
    }

    #[test]
    fn rejects_flag_names_that_do_not_fit_the_catalog() {
        let plain = sample_batch().encode(Codec::None).unwrap();
        let at = catalog_end(&plain);
        let decode = |section: &[u8]| Batch::decode(&with_section(&plain, at, section));
        assert!(matches!(
            decode(&[0x01, 0x03, 0x00, 0x00, 0x00]),
            Err(DecodeError::FlagNames(FlagNamesError::NoNames))
        ));
        assert!(matches!(
            decode(&[0x02, 0x00, 0x00]),
            Err(DecodeError::FlagNames(FlagNamesError::GroupCount {
                catalog: 1,
                names: 2
            }))
        ));
        assert!(matches!(
            decode(&[0x01, 0x02, 0x00, 0x01, 0x00, 0x01, b'a']),
            Err(DecodeError::FlagNames(FlagNamesError::PointCount { .. }))
        ));
        assert!(matches!(
            decode(&[0x01, 0x03, 0x00, 0x00, 0x02, 0x03, 0x01, b'a', 0x03, 0x01, b'b']),
            Err(DecodeError::FlagNames(FlagNamesError::BitOrder {
                bit: 3,
                ..
            }))
        ));
        assert!(matches!(
            decode(&[0x01, 0x03, 0x00, 0x00, 0x01, 0x40, 0x01, b'a']),
            Err(DecodeError::FlagNames(FlagNamesError::BitRange {
                bit: 64,
                ..
            }))
        ));
        assert!(matches!(
            decode(&[0x01, 0x03, 0x00, 0x00, 0x02, 0x00, 0x01, b'a', 0x01, 0x01, b'a']),
            Err(DecodeError::FlagNames(FlagNamesError::DuplicateName { .. }))
        ));
        // A section cut short is a bad body.
        assert!(matches!(
            decode(&[0x01, 0x03, 0x00, 0x00, 0x01, 0x00, 0x05, b'a']),
            Err(DecodeError::Body(_))
        ));
    }

    #[test]
    fn rejects_the_flag_names_flag_without_the_catalog_flag() {
        let mut bytes = batch_with_flag_names().encode(Codec::None).unwrap();
        bytes[6] = FLAG_FLAG_NAMES;
        assert!(matches!(
            Batch::decode(&bytes),
            Err(DecodeError::FlagNamesWithoutCatalog)
        ));
        let mut bytes = sample_batch().encode(Codec::None).unwrap();
        bytes[6] |= 0b1000;
        assert!(matches!(
            Batch::decode(&bytes),
            Err(DecodeError::UnknownFlags(_))
        ));
    }

    #[test]
    fn refuses_to_write_flag_names_a_reader_would_reject() {
        let mut batch = batch_with_flag_names();
        batch.catalog.as_mut().unwrap().groups[0].points[2]
            .flags
            .reverse();
        assert!(matches!(
            batch.encode(Codec::None),
            Err(EncodeError::FlagNames(FlagNamesError::BitOrder { .. }))
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

    /// Valid flag names for one point: ascending distinct bits, distinct names.
    fn flag_names() -> impl Strategy<Value = Vec<FlagName>> {
        prop::collection::btree_set(0u8..64, 0..6).prop_flat_map(|bits| {
            let n = bits.len();
            (
                Just(bits),
                prop::collection::btree_set("[a-z_]{1,8}", n..=n),
            )
                .prop_map(|(bits, names)| {
                    bits.into_iter()
                        .zip(names)
                        .map(|(bit, name)| FlagName { bit, name })
                        .collect()
                })
        })
    }

    fn catalog() -> impl Strategy<Value = Catalog> {
        let point = (
            "[a-z]{0,6}",
            prop_oneof![Just(PointKind::Analog), Just(PointKind::Bitfield)],
            prop_oneof![Just(vec![]), flag_names()],
        )
            .prop_map(|(name, kind, flags)| {
                PointInfo::new(&name, "", kind, 1.0, 0.0).with_flags(flags)
            });
        let group =
            (0u16..2, prop::collection::vec(point, 0..5)).prop_map(|(device, points)| GroupInfo {
                device,
                name: "g".into(),
                interval_ms: 1000,
                points,
            });
        prop::collection::vec(group, 0..4).prop_map(|groups| Catalog {
            devices: vec![DeviceInfo {
                name: "d".into(),
                model: "m".into(),
            }],
            groups,
        })
    }

    proptest! {
        #[test]
        fn any_catalog_round_trips_with_its_flag_names(catalog in catalog(), seq in any::<u64>()) {
            let batch = Batch {
                site: SiteId::new("s").unwrap(),
                seq: BatchSeq(seq),
                catalog_hash: catalog.hash(),
                catalog: Some(catalog.clone()),
                frames: vec![],
                gaps: vec![],
            };
            for codec in [Codec::None, Codec::Zstd] {
                let bytes = batch.encode(codec).unwrap();
                prop_assert_eq!(bytes[6] & FLAG_FLAG_NAMES != 0, catalog.has_flag_names());
                prop_assert_eq!(Batch::decode(&bytes).unwrap(), batch.clone());
            }
            prop_assert_eq!(Catalog::from_bytes(&catalog.to_bytes()).unwrap(), catalog.clone());
            // Without its names, a catalog has the bytes (and hash) of the
            // layout alone, as before flag names existed.
            let mut unnamed = catalog.clone();
            for point in unnamed.groups.iter_mut().flat_map(|g| &mut g.points) {
                point.flags.clear();
            }
            let layout = postcard::to_stdvec(&crate::catalog::Layout::of(&unnamed)).unwrap();
            prop_assert_eq!(unnamed.to_bytes(), layout);
        }

        #[test]
        fn damaged_flag_names_never_panic(
            flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        ) {
            let mut bytes = batch_with_flag_names().encode(Codec::None).unwrap();
            let n = bytes.len();
            for (at, mask) in flips {
                bytes[at.index(n)] ^= mask;
            }
            if let Ok(batch) = Batch::decode(&bytes) {
                let again = batch.encode(Codec::None).unwrap();
                prop_assert_eq!(Batch::decode(&again).unwrap().encode(Codec::None).unwrap(), again);
            }
        }

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
