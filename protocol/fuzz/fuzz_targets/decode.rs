//! Feed arbitrary bytes to `Batch::decode`. Decoding must never panic, and
//! whatever it accepts must survive a round trip: re-encoded with
//! `Codec::None` and decoded again, it is the same batch. A catalog it
//! accepts, flag names included, must also survive its canonical bytes
//! (`Catalog::to_bytes` / `from_bytes`), and the re-encoded envelope sets
//! flag bit 2 exactly when the catalog has flag names. A signed message
//! it accepts has a signature trailer where the header says, and a
//! re-signed copy reads back as the same batch.

#![no_main]

use bess_protocol::{signature, Batch, Catalog, Codec, Effort, EncodeError, Header, Reading, SiteSigner};
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
    let original = Header::parse(data).expect("an accepted message's header parses");
    if original.signed {
        let part = signature::signed_part(data, &original).expect("a signed message has a trailer");
        assert_eq!(original.signed_len(), Some(data.len() - 64));
        let _ = part.key_id;
        let signer = SiteSigner::from_seed([1; 32]);
        let resigned = batch
            .encode_signed(Codec::None, Effort::Fast, &signer)
            .expect("re-signs");
        let header = Header::parse(&resigned).expect("a re-signed header parses");
        let part = signature::signed_part(&resigned, &header).expect("has a trailer");
        signature::verify(&part, &signer.public_key()).expect("its own signature verifies");
    }
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
