//! Site signatures (format version 2, SPEC section 11): each site signs its
//! batches with its own Ed25519 key, so a reader that knows the site's
//! public keys can tell a batch the site sealed from one anybody else
//! wrote, altered or re-numbered.
//!
//! A signed message is a version-1 envelope and body with version 2 and
//! flag bit 1 set, followed by a trailer: the signer — its key id (8
//! bytes), or with flag bit 3 its whole public key (32 bytes, on batches
//! that carry the catalog, so a reader can learn a new site's key) — and
//! the Ed25519 signature (64 bytes) over every byte before the signature. Decoding ([`crate::Batch::decode`]) reads a signed message
//! like any other; checking the signature ([`verify`], [`verify_all`])
//! needs the site's key and is the reader's business.

use std::fmt;

use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Bytes after the body of a signed message naming its signer by key id:
/// key id, then signature (with the whole public key: 96).
pub const TRAILER_LEN: usize = KEY_ID_LEN + SIGNATURE_LEN;
pub(crate) const KEY_ID_LEN: usize = 8;
pub(crate) const PUBLIC_KEY_LEN: usize = 32;
pub(crate) const SIGNATURE_LEN: usize = 64;
/// How a public key is written for people: `ed25519:` and base64.
const PUBLIC_KEY_PREFIX: &str = "ed25519:";

/// A public key's id: the first 8 bytes of SHA-256 over its 32 bytes. Sent
/// in every signed message; shown as 16 hex digits (its fingerprint).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl KeyId {
    pub fn of(key: &VerifyingKey) -> KeyId {
        let digest = Sha256::digest(key.as_bytes());
        KeyId(digest[..KEY_ID_LEN].try_into().expect("8 bytes"))
    }

    /// Parse the 16 hex digits [`fmt::Display`] writes.
    pub fn parse(text: &str) -> Result<KeyId, KeyError> {
        let text = text.trim();
        if text.len() != 2 * KEY_ID_LEN || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KeyError::KeyId(text.to_owned()));
        }
        let mut id = [0u8; KEY_ID_LEN];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex digits");
        }
        Ok(KeyId(id))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0:?} is not a public key: expected \"ed25519:\" and 44 characters of base64")]
    PublicKey(String),
    #[error("{0:?} is not a key id: expected 16 hex digits")]
    KeyId(String),
    #[error("not an Ed25519 private key in PKCS#8 PEM: {0}")]
    PrivateKey(String),
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// Why a signed message does not verify. Each variant is a reason a
/// reader can put in a dead-letter record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the message is not signed")]
    Unsigned,
    #[error("the signature does not match the message and key {0}")]
    Mismatch(KeyId),
}

/// Write a public key as `ed25519:` and its base64 (the form
/// `bess-edge key show` prints and enrolment takes).
pub fn format_public_key(key: &VerifyingKey) -> String {
    format!(
        "{PUBLIC_KEY_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
    )
}

/// Read a public key written by [`format_public_key`].
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, KeyError> {
    let bad = || KeyError::PublicKey(text.to_owned());
    let encoded = text
        .trim()
        .strip_prefix(PUBLIC_KEY_PREFIX)
        .ok_or_else(bad)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| bad())?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
}

/// A site's private key, with its id; what the edge signs batches with.
#[derive(Clone)]
pub struct SiteSigner {
    key: SigningKey,
    id: KeyId,
}

impl fmt::Debug for SiteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteSigner").field("id", &self.id).finish()
    }
}

impl SiteSigner {
    pub fn new(key: SigningKey) -> SiteSigner {
        let id = KeyId::of(&key.verifying_key());
        SiteSigner { key, id }
    }

    /// A new key from the operating system's randomness.
    pub fn generate() -> Result<SiteSigner, KeyError> {
        let mut seed = [0u8; 32];
        getrandom_seed(&mut seed)?;
        Ok(SiteSigner::new(SigningKey::from_bytes(&seed)))
    }

    /// A key from a 32-byte seed: for simulators and tests that need a
    /// site's key to be the same on every run.
    pub fn from_seed(seed: [u8; 32]) -> SiteSigner {
        SiteSigner::new(SigningKey::from_bytes(&seed))
    }

    pub fn from_pkcs8_pem(pem: &str) -> Result<SiteSigner, KeyError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(SiteSigner::new)
            .map_err(|e| KeyError::PrivateKey(e.to_string()))
    }

    pub fn to_pkcs8_pem(&self) -> String {
        self.key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .expect("an Ed25519 key always encodes")
            .to_string()
    }

    pub fn key_id(&self) -> KeyId {
        self.id
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Append the trailer to `message` (envelope and body): the key id
    /// (or with `public_key` the whole key), then the signature over
    /// everything before it.
    pub(crate) fn append_trailer(&self, message: &mut Vec<u8>, public_key: bool) {
        if public_key {
            message.extend_from_slice(self.key.verifying_key().as_bytes());
        } else {
            message.extend_from_slice(&self.id.0);
        }
        let signature = self.key.sign(message).to_bytes();
        message.extend_from_slice(&signature);
    }
}

fn getrandom_seed(seed: &mut [u8; 32]) -> Result<(), KeyError> {
    getrandom::getrandom(seed).map_err(|e| KeyError::Random(e.to_string()))
}

/// A signed message's trailer and the bytes it signs, as [`signed_part`]
/// finds them.
#[derive(Debug, Clone, Copy)]
pub struct SignedPart<'a> {
    pub key_id: KeyId,
    /// The signer's public key, when the message carries it (flag bit 3);
    /// `None` also for 32 bytes that are not a valid key.
    pub public_key: Option<VerifyingKey>,
    signature: [u8; SIGNATURE_LEN],
    signed: &'a [u8],
}

/// The signature of a message whose header parsed as signed, or `None`
/// for an unsigned one. Takes the message's whole bytes.
pub fn signed_part<'a>(message: &'a [u8], header: &crate::Header) -> Option<SignedPart<'a>> {
    let signed_len = header.signed_len()?;
    let signer = message.get(signed_len - header.signer_len()..signed_len)?;
    let signature = message.get(signed_len..signed_len + SIGNATURE_LEN)?;
    let (key_id, public_key) = if header.has_public_key {
        let bytes: [u8; PUBLIC_KEY_LEN] = signer.try_into().expect("32 bytes");
        let key = VerifyingKey::from_bytes(&bytes).ok();
        // The id of the bytes as sent, valid key or not.
        let digest = Sha256::digest(bytes);
        (
            KeyId(digest[..KEY_ID_LEN].try_into().expect("8 bytes")),
            key,
        )
    } else {
        (KeyId(signer.try_into().expect("8 bytes")), None)
    };
    Some(SignedPart {
        key_id,
        public_key,
        signature: signature.try_into().expect("64 bytes"),
        signed: &message[..signed_len],
    })
}

/// Check one signature against the key its id names.
pub fn verify(part: &SignedPart<'_>, key: &VerifyingKey) -> Result<(), SignatureError> {
    let signature = ed25519_dalek::Signature::from_bytes(&part.signature);
    key.verify_strict(part.signed, &signature)
        .map_err(|_| SignatureError::Mismatch(part.key_id))
}

/// Check many signatures at once (Ed25519 batch verification, about twice
/// as fast per message); `true` when every one is good. On `false`, check
/// them one by one with [`verify`] to find which.
pub fn verify_all(parts: &[(SignedPart<'_>, &VerifyingKey)]) -> bool {
    if parts.is_empty() {
        return true;
    }
    let messages: Vec<&[u8]> = parts.iter().map(|(p, _)| p.signed).collect();
    let signatures: Vec<ed25519_dalek::Signature> = parts
        .iter()
        .map(|(p, _)| ed25519_dalek::Signature::from_bytes(&p.signature))
        .collect();
    let keys: Vec<VerifyingKey> = parts.iter().map(|(_, k)| **k).collect();
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use proptest::prelude::*;

    fn batch(site: &str, seq: u64) -> Batch {
        let catalog = Catalog {
            devices: vec![DeviceInfo {
                name: "bms-1".into(),
                model: "m".into(),
            }],
            groups: vec![GroupInfo {
                device: 0,
                name: "fast".into(),
                interval_ms: 1000,
                points: vec![PointInfo::new("soc", "%", PointKind::Analog, 0.01, 0.0)],
            }],
        };
        Batch {
            site: SiteId::new(site).unwrap(),
            seq: BatchSeq(seq),
            catalog_hash: catalog.hash(),
            catalog: Some(catalog),
            frames: (0..15)
                .map(|s| Frame {
                    group: GroupIndex(0),
                    ts_ms: 1_764_000_000_000 + s * 1000,
                    values: vec![Reading::Int(5000 + s)],
                })
                .collect(),
            gaps: vec![],
        }
    }

    fn signer(n: u8) -> SiteSigner {
        SiteSigner::from_seed([n; 32])
    }

    fn check(message: &[u8], key: &VerifyingKey) -> Result<Batch, String> {
        let header = Header::parse(message).map_err(|e| e.to_string())?;
        let part = signed_part(message, &header).ok_or("unsigned")?;
        verify(&part, key).map_err(|e| e.to_string())?;
        Batch::decode(message).map_err(|e| e.to_string())
    }

    #[test]
    fn a_signed_batch_decodes_as_itself_and_verifies_with_its_key_only() {
        let b = batch("site-a", 7);
        let message = b
            .encode_signed(Codec::Zstd, Effort::Fast, &signer(1))
            .unwrap();
        assert_eq!(message[4], SIGNED_FORMAT_VERSION);
        assert_eq!(Batch::decode(&message).unwrap(), b);
        let header = Header::parse(&message).unwrap();
        assert!(header.signed);
        let part = signed_part(&message, &header).unwrap();
        assert_eq!(part.key_id, signer(1).key_id());
        assert_eq!(check(&message, &signer(1).public_key()).unwrap(), b);
        assert_eq!(
            verify(&part, &signer(2).public_key()),
            Err(SignatureError::Mismatch(signer(1).key_id()))
        );
    }

    #[test]
    fn an_unsigned_batch_is_still_version_1_and_has_no_signed_part() {
        let message = batch("site-a", 7).encode(Codec::Zstd).unwrap();
        assert_eq!(message[4], FORMAT_VERSION);
        let header = Header::parse(&message).unwrap();
        assert!(!header.signed && header.signed_len().is_none());
        assert!(signed_part(&message, &header).is_none());
    }

    #[test]
    fn a_renumbered_or_resited_copy_fails_verification() {
        let message = batch("site-a", 7)
            .encode_signed(Codec::None, Effort::Fast, &signer(1))
            .unwrap();
        // The sequence number: bytes 8 + L .. 16 + L ("site-a" is 6 bytes).
        let mut renumbered = message.clone();
        renumbered[8 + 6 + 7] = 8;
        assert_eq!(Batch::decode(&renumbered).unwrap().seq, BatchSeq(8));
        assert!(check(&renumbered, &signer(1).public_key())
            .unwrap_err()
            .contains("does not match"));
        let mut resited = message.clone();
        resited[8 + 5] = b'b';
        assert_eq!(Batch::decode(&resited).unwrap().site.as_str(), "site-b");
        assert!(check(&resited, &signer(1).public_key()).is_err());
    }

    fn without_catalog(mut b: Batch) -> Batch {
        b.catalog = None;
        b
    }

    #[test]
    fn a_batch_with_its_catalog_names_its_signer_by_the_whole_public_key() {
        let with = batch("s", 1)
            .encode_signed(Codec::None, Effort::Fast, &signer(1))
            .unwrap();
        let without = without_catalog(batch("s", 1))
            .encode_signed(Codec::None, Effort::Fast, &signer(1))
            .unwrap();
        let (h_with, h_without) = (
            Header::parse(&with).unwrap(),
            Header::parse(&without).unwrap(),
        );
        assert!(h_with.has_public_key && !h_without.has_public_key);
        assert_eq!(with[6] & 0x08, 0x08);
        let part = signed_part(&with, &h_with).unwrap();
        assert_eq!(part.public_key, Some(signer(1).public_key()));
        assert_eq!(part.key_id, signer(1).key_id());
        verify(&part, &signer(1).public_key()).unwrap();
        let part = signed_part(&without, &h_without).unwrap();
        assert_eq!((part.public_key, part.key_id), (None, signer(1).key_id()));
        verify(&part, &signer(1).public_key()).unwrap();
        // Bit 3 means nothing in version 1: an unknown flag there.
        let mut v1 = batch("s", 1).encode(Codec::None).unwrap();
        v1[6] |= 0x08;
        assert!(matches!(
            Batch::decode(&v1),
            Err(DecodeError::UnknownFlags(_))
        ));
    }

    #[test]
    fn the_signed_flag_and_the_version_go_together() {
        let signed = without_catalog(batch("s", 1))
            .encode_signed(Codec::None, Effort::Fast, &signer(1))
            .unwrap();
        let mut v1_with_flag = signed.clone();
        v1_with_flag[4] = FORMAT_VERSION;
        assert!(matches!(
            Batch::decode(&v1_with_flag),
            Err(DecodeError::SignatureUnsupported)
        ));
        let mut v2_without_flag = signed.clone();
        v2_without_flag[6] &= !0b10;
        assert!(matches!(
            Batch::decode(&v2_without_flag),
            Err(DecodeError::SignatureMissing)
        ));
        let cut = &signed[..signed.len() - 1];
        assert!(matches!(
            Batch::decode(cut),
            Err(DecodeError::BodyLength { .. })
        ));
        let unsigned = without_catalog(batch("s", 1)).encode(Codec::None).unwrap();
        let mut appended = unsigned.clone();
        appended.extend_from_slice(&[0; TRAILER_LEN]);
        assert!(matches!(
            Batch::decode(&appended),
            Err(DecodeError::BodyLength { .. })
        ));
    }

    #[test]
    fn batch_verification_agrees_with_one_by_one() {
        let messages: Vec<(Vec<u8>, SiteSigner)> = (1..=5)
            .map(|n| {
                let s = signer(n);
                (
                    batch("s", u64::from(n))
                        .encode_signed(Codec::Zstd, Effort::Fast, &s)
                        .unwrap(),
                    s,
                )
            })
            .collect();
        let headers: Vec<Header> = messages
            .iter()
            .map(|(m, _)| Header::parse(m).unwrap())
            .collect();
        let keys: Vec<VerifyingKey> = messages.iter().map(|(_, s)| s.public_key()).collect();
        let parts: Vec<(SignedPart<'_>, &VerifyingKey)> = messages
            .iter()
            .zip(&headers)
            .zip(&keys)
            .map(|(((m, _), h), k)| (signed_part(m, h).unwrap(), k))
            .collect();
        assert!(verify_all(&parts));
        assert!(verify_all(&[]));
        let mut wrong = parts.clone();
        wrong[3].1 = &keys[0];
        assert!(!verify_all(&wrong));
        assert!(verify(&wrong[3].0, wrong[3].1).is_err());
    }

    #[test]
    fn keys_round_trip_through_their_text_forms() {
        let s = SiteSigner::generate().unwrap();
        let again = SiteSigner::from_pkcs8_pem(&s.to_pkcs8_pem()).unwrap();
        assert_eq!(again.key_id(), s.key_id());
        let text = format_public_key(&s.public_key());
        assert!(text.starts_with("ed25519:"), "{text}");
        assert_eq!(parse_public_key(&text).unwrap(), s.public_key());
        assert_eq!(KeyId::parse(&s.key_id().to_string()).unwrap(), s.key_id());
        assert!(parse_public_key("ed25519:AAAA").is_err());
        assert!(parse_public_key(&text[8..]).is_err());
        assert!(KeyId::parse("xyz").is_err());
        assert!(SiteSigner::from_pkcs8_pem("-----BEGIN NOTHING-----").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Whatever single bit is flipped, the message either no longer
        /// decodes or no longer verifies: never a different batch accepted.
        #[test]
        fn one_flipped_bit_never_passes(bit in 0usize..8 * 400, catalog: bool) {
            let b = if catalog { batch("site-a", 9) } else { without_catalog(batch("site-a", 9)) };
            let message = b.encode_signed(Codec::Zstd, Effort::Fast, &signer(1)).unwrap();
            let bit = bit % (8 * message.len());
            let mut flipped = message.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(check(&flipped, &signer(1).public_key()).is_err());
        }
    }
}
