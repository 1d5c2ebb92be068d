//! Feed arbitrary bytes to `Batch::decode`. Decoding must never panic, and
//! whatever it accepts must survive a round trip: re-encoded with
//! `Codec::None` and decoded again, it is the same batch. A catalog it
//! accepts, flag names included, must also survive its canonical bytes
//! (`Catalog::to_bytes` / `from_bytes`), and the re-encoded envelope sets
//! flag bit 2 exactly when the catalog has flag names.

#![no_main]

use bess_protocol::{Batch, Catalog, Codec, EncodeError, Header, Reading};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = Batch::decode(data) else {
        return;
    };
    let bytes = match batch.encode(Codec::None) {
        Ok(bytes) => bytes,
        // The reader does not cap an uncompressed body at MAX_BODY_BYTES,
        // the writer does; such inputs are far above libFuzzer's -max_len.
        Err(EncodeError::TooLarge(_)) => return,
        Err(e) => panic!("a decoded batch does not re-encode: {e}"),
    };
    let again = Batch::decode(&bytes).expect("a re-encoded batch decodes");
    let header = Header::parse(&bytes).expect("a re-encoded header parses");
    assert_eq!(
        header.has_flag_names,
        batch.catalog.as_ref().is_some_and(Catalog::has_flag_names),
        "flag bit 2 disagrees with the catalog"
    );
    if let Some(catalog) = &batch.catalog {
        let canonical = catalog.to_bytes();
        let back = Catalog::from_bytes(&canonical).expect("canonical bytes read back");
        assert_eq!(back.to_bytes(), canonical, "canonical bytes are not stable");
    }

    // NaN never equals itself, so compare floats by their bits: the canonical
    // encoding holds every field bit for bit.
    let bytes_again = again.encode(Codec::None).expect("re-encodes");
    assert_eq!(bytes_again, bytes, "re-encoding is not stable");
    if !has_nan(&batch) {
        assert_eq!(again, batch);
    }
});

fn has_nan(batch: &Batch) -> bool {
    let in_frames = batch
        .frames
        .iter()
        .flat_map(|frame| &frame.values)
        .any(|reading| matches!(reading, Reading::Float(v) if v.is_nan()));
    let in_catalog = batch
        .catalog
        .iter()
        .flat_map(|catalog| &catalog.groups)
        .flat_map(|group| &group.points)
        .any(|point| point.scale.is_nan() || point.offset.is_nan());
    in_frames || in_catalog
}
