//! Arbitrary bytes as `Mailbox.process` metadata: parsing never panics, what parses
//! re-encodes to the same bytes, and checking it against a fixed validator set is
//! refused with a reason unless it really holds a quorum of that set's signatures.
#![no_main]

use std::sync::OnceLock;

use alloy::primitives::{Address, B256};
use ferry_light_client::{ValidatorKey, ValidatorSet};
use ferry_messages::{Attestation, QuorumCertificate};
use libfuzzer_sys::fuzz_target;

fn set() -> &'static ValidatorSet {
    static SET: OnceLock<ValidatorSet> = OnceLock::new();
    SET.get_or_init(|| {
        let keys: Vec<Address> =
            (1u8..=3).map(|i| ValidatorKey::from_bytes(&B256::with_last_byte(i)).expect("key").address()).collect();
        ValidatorSet::new(keys, 2).expect("set")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(qc) = QuorumCertificate::from_metadata(data) else { return };
    assert_eq!(qc.metadata(), data, "parse then encode is the identity");
    let attestation = Attestation {
        origin: 31337,
        origin_mailbox: B256::with_last_byte(0xaa),
        destination: 31338,
        block_hash: qc.block_hash,
        id: B256::with_last_byte(0xbb),
    };
    if set().verify(&attestation, &qc).is_ok() {
        // Random bytes cannot hold two signatures by these keys over this attestation.
        panic!("a fuzzed certificate verified");
    }
});
