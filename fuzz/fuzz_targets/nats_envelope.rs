//! Arbitrary bytes as the two NATS envelopes (a validator's signed attestation and a
//! deliverable): decoding and opening never panic, and what decodes survives a round
//! trip through its encoding.
#![no_main]

use ferry_messages::wire::{Deliverable, SignedAttestation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(signed) = SignedAttestation::decode(data) {
        let again = SignedAttestation::decode(&signed.encode()).expect("an encoded envelope decodes");
        assert_eq!(again, signed);
        if let Ok((message, attestation, _)) = signed.open() {
            assert_eq!(attestation.id, message.id());
            assert_eq!(attestation.block_hash, signed.block.hash);
        }
    }
    if let Ok(deliverable) = Deliverable::decode(data) {
        let again = Deliverable::decode(&deliverable.encode()).expect("an encoded envelope decodes");
        assert_eq!(again, deliverable);
        if let Ok((message, attestation, qc)) = deliverable.open() {
            assert_eq!(attestation.id, message.id());
            assert_eq!(qc.block_hash, deliverable.block.hash);
            assert_eq!(qc.metadata(), deliverable.metadata.to_vec());
        }
    }
});
