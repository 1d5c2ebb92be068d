//! Feed arbitrary bytes to `Batch::decode`. Decoding must never panic, and
//! whatever it accepts must survive a round trip: re-encoded with
//! `Codec::None` and decoded again, it is the same batch.

#![no_main]

use bess_protocol::{Batch, Codec, EncodeError, Reading};
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
