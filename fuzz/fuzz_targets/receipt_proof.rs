//! Arbitrary receipt proofs and proven messages: verification never panics and never
//! accepts a proof against a root it was not built for.
#![no_main]

use alloy::primitives::{B256, Bytes};
use ferry_light_client::ReceiptProof;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 41 {
        return;
    }
    let root = B256::from_slice(&data[..32]);
    let index = u64::from_be_bytes(data[32..40].try_into().unwrap_or_default());
    // The rest: a receipt and nodes, split at 0xff bytes.
    let mut parts = data[40..].split(|b| *b == 0xff).map(|p| Bytes::copy_from_slice(p));
    let receipt = parts.next().unwrap_or_default();
    let proof = ReceiptProof { index, receipt, nodes: parts.collect() };
    if proof.verify(root).is_ok() {
        // Only possible if the input really is a proof for this root: then any other
        // root must refuse it.
        assert!(proof.verify(root ^ B256::with_last_byte(1)).is_err());
    }
});
