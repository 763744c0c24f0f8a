//! Properties over random input: a mutated header never passes for the original, no
//! decoder or verifier panics on junk, and a receipt proof holds exactly when untouched.

use alloy::{
    consensus::{EMPTY_OMMER_ROOT_HASH, Eip658Value, Header, Receipt, ReceiptEnvelope, ReceiptWithBloom},
    primitives::{Address, B64, B256, Bloom, Bytes, Log, LogData, U256, keccak256},
    rlp::Decodable,
};
use ferry_light_client::{LightClient, LightClientConfig, ReceiptProof, ReceiptTrie, SealedHeader, verify};
use proptest::prelude::*;

fn parent() -> SealedHeader {
    let header = Header {
        number: 100,
        gas_limit: 30_000_000,
        gas_used: 12_000_000,
        base_fee_per_gas: Some(7_000_000_000),
        timestamp: 1_700_000_000,
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        withdrawals_root: Some(B256::repeat_byte(1)),
        blob_gas_used: Some(0),
        excess_blob_gas: Some(0),
        parent_beacon_block_root: Some(B256::repeat_byte(2)),
        requests_hash: Some(B256::repeat_byte(3)),
        ..Default::default()
    };
    let hash = header.hash_slow();
    SealedHeader::new_unchecked(header, hash)
}

fn child_of(parent: &SealedHeader, gas_used: u64, seed: u8) -> Header {
    let rules = ferry_light_client::HeaderRules::ethereum();
    Header {
        parent_hash: parent.hash(),
        number: parent.number + 1,
        timestamp: parent.timestamp + 12,
        gas_used,
        state_root: B256::repeat_byte(seed),
        base_fee_per_gas: parent.next_block_base_fee(alloy::eips::eip1559::BaseFeeParams::ethereum()),
        excess_blob_gas: parent.next_block_excess_blob_gas(rules.blob_schedule.params()),
        ..parent.inner().clone()
    }
}

/// Changes field `field` (0..21) of `h` using `noise`.
fn mutate(h: &mut Header, field: u8, noise: u64) {
    let word = B256::from(U256::from(noise));
    match field % 21 {
        0 => h.parent_hash ^= word,
        1 => h.ommers_hash ^= word,
        2 => h.beneficiary = Address::from_word(h.beneficiary.into_word() ^ word),
        3 => h.state_root ^= word,
        4 => h.transactions_root ^= word,
        5 => h.receipts_root ^= word,
        6 => h.logs_bloom ^= Bloom::repeat_byte(noise as u8 | 1),
        7 => h.difficulty ^= U256::from(noise),
        8 => h.number ^= noise,
        9 => h.gas_limit ^= noise,
        10 => h.gas_used ^= noise,
        11 => h.timestamp ^= noise,
        12 => h.extra_data = Bytes::from(noise.to_be_bytes().to_vec()),
        13 => h.mix_hash ^= word,
        14 => h.nonce ^= B64::from(noise),
        15 => h.base_fee_per_gas = h.base_fee_per_gas.map(|f| f ^ noise),
        16 => h.withdrawals_root = h.withdrawals_root.map(|r| r ^ word),
        17 => h.blob_gas_used = h.blob_gas_used.map(|g| g ^ noise),
        18 => h.excess_blob_gas = h.excess_blob_gas.map(|g| g ^ noise),
        19 => h.parent_beacon_block_root = h.parent_beacon_block_root.map(|r| r ^ word),
        _ => h.requests_hash = h.requests_hash.map(|r| r ^ word),
    }
}

fn receipt(kind: u8, logs: usize, seed: u64) -> ReceiptEnvelope {
    let logs = (0..logs)
        .map(|i| Log {
            address: Address::with_last_byte(i as u8),
            data: LogData::new_unchecked(vec![keccak256(seed.to_be_bytes())], Bytes::from(vec![i as u8; i * 7])),
        })
        .collect();
    let inner = ReceiptWithBloom::from(Receipt {
        status: Eip658Value::Eip658(!seed.is_multiple_of(5)),
        cumulative_gas_used: seed * 21_000,
        logs,
    });
    match kind % 5 {
        0 => ReceiptEnvelope::Legacy(inner),
        1 => ReceiptEnvelope::Eip2930(inner),
        2 => ReceiptEnvelope::Eip1559(inner),
        3 => ReceiptEnvelope::Eip4844(inner),
        _ => ReceiptEnvelope::Eip7702(inner),
    }
}

fn receipts_root(receipts: &[ReceiptEnvelope]) -> B256 {
    alloy::consensus::proofs::calculate_receipt_root(receipts)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_header_never_passes_for_the_original(gas in 0u64..30_000_000, seed: u8, field in 0u8..21, noise in 1u64..) {
        let parent = parent();
        let good = child_of(&parent, gas, seed);
        let hash = good.hash_slow();
        let mut client = LightClient::new(LightClientConfig::new(1, 64), parent.clone());
        let mut bad = good.clone();
        mutate(&mut bad, field, noise);
        prop_assume!(bad != good);
        let err = client.insert(bad.clone(), hash).unwrap_err();
        prop_assert_eq!(err.reason(), "hash_mismatch");
        // Re-hashed it may pass or fail the rules, but never panics, and the genuine one
        // still goes in afterwards.
        let _ = client.insert(bad.clone(), bad.hash_slow());
        prop_assert!(client.insert(good, hash).is_ok());
    }

    #[test]
    fn header_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        if let Ok(header) = Header::decode(&mut bytes.as_slice()) {
            let hash = header.hash_slow();
            prop_assert!(verify::seal(header, hash).is_ok());
        }
    }

    #[test]
    fn receipt_proofs_hold_exactly_when_untouched(
        kinds in proptest::collection::vec((0u8..5, 0usize..4), 1..140),
        pick: prop::sample::Index,
        node_pick: prop::sample::Index,
        byte_pick: prop::sample::Index,
        flip in 1u8..,
    ) {
        let receipts: Vec<ReceiptEnvelope> =
            kinds.iter().enumerate().map(|(i, (kind, logs))| receipt(*kind, *logs, i as u64)).collect();
        let root = receipts_root(&receipts);
        let index = pick.index(receipts.len());
        let proof = ReceiptProof::build(&receipts, index as u64, root).unwrap();
        prop_assert_eq!(&proof.verify(root).unwrap(), &receipts[index]);

        let mut bad = proof.clone();
        let node = node_pick.index(bad.nodes.len());
        let mut bytes = bad.nodes[node].to_vec();
        let at = byte_pick.index(bytes.len());
        bytes[at] ^= flip;
        bad.nodes[node] = bytes.into();
        prop_assert!(bad.verify(root).is_err());
        prop_assert!(proof.verify(root ^ B256::with_last_byte(flip)).is_err());
    }

    #[test]
    fn junk_proofs_are_refused_without_panicking(
        nodes in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..8),
        receipt_bytes in proptest::collection::vec(any::<u8>(), 0..300),
        index: u64,
        root: [u8; 32],
    ) {
        let proof = ReceiptProof { index, receipt: receipt_bytes.into(), nodes: nodes.into_iter().map(Bytes::from).collect() };
        prop_assert!(proof.verify(B256::from(root)).is_err());
    }
}

proptest! {
    // Each case hashes a block's receipts once per target: fewer, larger cases.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn one_trie_proves_each_target_as_a_single_build_does(
        kinds in proptest::collection::vec((0u8..5, 0usize..4), 1..140),
        chosen in proptest::collection::vec(any::<prop::sample::Index>(), 1..20),
    ) {
        let receipts: Vec<ReceiptEnvelope> =
            kinds.iter().enumerate().map(|(i, (kind, logs))| receipt(*kind, *logs, i as u64)).collect();
        let root = receipts_root(&receipts);
        let mut targets: Vec<u64> = chosen.iter().map(|c| c.index(receipts.len()) as u64).collect();
        targets.sort_unstable();
        targets.dedup();
        let trie = ReceiptTrie::build(&receipts, &targets, root).unwrap();
        for &index in &targets {
            let proof = trie.proof(index).unwrap();
            prop_assert_eq!(&proof, &ReceiptProof::build(&receipts, index, root).unwrap());
            prop_assert_eq!(&proof.verify(root).unwrap(), &receipts[index as usize]);
        }
        // A receipt it was not built for has no proof in it, and a wrong root is refused.
        if let Some(other) = (0..receipts.len() as u64).find(|i| !targets.contains(i)) {
            prop_assert!(trie.proof(other).is_err());
        }
        prop_assert!(ReceiptTrie::build(&receipts, &targets, root ^ B256::with_last_byte(1)).is_err());
        prop_assert!(ReceiptTrie::build(&receipts, &[receipts.len() as u64], root).is_err());
    }
}
