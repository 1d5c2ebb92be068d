//! Wire format of BESS telemetry: the batch envelope, the point catalog and
//! the frames inside a batch.
//!
//! This crate turns bytes into types and back and does nothing else: no I/O,
//! no clocks, no async. `protocol/SPEC.md` documents every byte so that a
//! consumer in another language can be written from it; the golden vectors
//! in `protocol/tests/golden/` pin the encoding.
//!
//! ```
//! use bess_protocol::*;
//!
//! let catalog = Catalog {
//!     devices: vec![DeviceInfo { name: "bms-1".into(), model: "demo".into() }],
//!     groups: vec![GroupInfo {
//!         device: 0,
//!         name: "fast".into(),
//!         interval_ms: 1000,
//!         points: vec![PointInfo::new("soc", "%", PointKind::Analog, 0.01, 0.0)],
//!     }],
//! };
//! let batch = Batch {
//!     site: SiteId::new("site-1").unwrap(),
//!     seq: BatchSeq(7),
//!     catalog_hash: catalog.hash(),
//!     catalog: Some(catalog),
//!     frames: vec![Frame { group: GroupIndex(0), ts_ms: 1_700_000_000_000, values: vec![Reading::Int(5012)] }],
//!     gaps: vec![],
//! };
//! let bytes = batch.encode(Codec::Zstd).unwrap();
//! assert_eq!(Batch::decode(&bytes).unwrap(), batch);
//! ```

mod batch;
mod catalog;
mod envelope;
mod ids;
mod live;
mod reading;
pub mod signature;

pub use batch::{Batch, Frame, Gap, GapReason};
pub use catalog::{
    engineering_value, Catalog, CatalogBytesError, DeviceInfo, FlagName, FlagNamesError, GroupInfo,
    PointInfo, PointKind,
};
/// The Ed25519 key types signatures are checked with.
pub use ed25519_dalek::VerifyingKey;
pub use envelope::{
    Codec, DecodeError, Effort, EncodeError, Header, FORMAT_VERSION, MAGIC, MAX_BODY_BYTES,
    SIGNED_FORMAT_VERSION,
};
pub use ids::{BatchSeq, CatalogHash, GroupIndex, InvalidSiteId, SiteId};
pub use live::{
    LiveDecodeError, LiveDecoder, LiveEncoder, LiveUpdate, DEFAULT_KEYFRAME_EVERY_MS,
    LIVE_FORMAT_VERSION, MAX_LIVE_BYTES,
};
pub use reading::{MissingReason, Quality, Reading};
pub use signature::{KeyId, SiteSigner};
