//! Throughput measurements for `ferry bench light-client` and the criterion bench:
//! header verifications and receipt-proof verifications per second on one core, each
//! beside bare `keccak256` over the same bytes, measured in the same run (the bound).

use std::time::{Duration, Instant};

use alloy::{
    consensus::{EMPTY_OMMER_ROOT_HASH, Eip658Value, Header, Receipt, ReceiptEnvelope, ReceiptWithBloom},
    eips::eip1559::BaseFeeParams,
    primitives::{Address, B256, Bloom, Bytes, Log, LogData, keccak256},
    rlp::Encodable,
};
use serde::Serialize;

use crate::{HeaderRules, ReceiptProof, SealedHeader, verify};

/// Inputs: a chain of full-width headers (with their RLP), and proofs of every receipt
/// of a block.
#[derive(Debug, Clone)]
pub struct Fixtures {
    /// Headers, each the parent of the next.
    pub headers: Vec<SealedHeader>,
    /// Each header's RLP encoding.
    pub encoded: Vec<Vec<u8>>,
    /// The receipts root the proofs are against.
    pub receipts_root: B256,
    /// One proof per receipt.
    pub proofs: Vec<ReceiptProof>,
}

/// Builds `headers` linked headers (21 fields, Prague layout) and a block of `receipts`
/// receipts of every type with three logs each.
pub fn fixtures(headers: usize, receipts: usize) -> Fixtures {
    let mut chain: Vec<SealedHeader> = Vec::with_capacity(headers);
    let mut header = Header {
        gas_limit: 30_000_000,
        base_fee_per_gas: Some(1_000_000_000),
        timestamp: 1_700_000_000,
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        logs_bloom: Bloom::repeat_byte(0x11),
        extra_data: Bytes::from(vec![0xfe; 32]),
        withdrawals_root: Some(B256::repeat_byte(1)),
        blob_gas_used: Some(0),
        excess_blob_gas: Some(0),
        parent_beacon_block_root: Some(B256::repeat_byte(2)),
        requests_hash: Some(B256::repeat_byte(3)),
        ..Default::default()
    };
    for i in 0..headers {
        let hash = header.hash_slow();
        let sealed = SealedHeader::new_unchecked(header.clone(), hash);
        header = Header {
            parent_hash: hash,
            number: header.number + 1,
            timestamp: header.timestamp + 12,
            gas_used: 10_000_000 + (i as u64 % 7) * 1_000_000,
            state_root: keccak256(hash),
            base_fee_per_gas: sealed.next_block_base_fee(BaseFeeParams::ethereum()),
            ..header
        };
        chain.push(sealed);
    }
    let encoded = chain
        .iter()
        .map(|h| {
            let mut out = Vec::with_capacity(h.length());
            h.inner().encode(&mut out);
            out
        })
        .collect();
    let block: Vec<ReceiptEnvelope> = (0..receipts).map(receipt).collect();
    let receipts_root = alloy::consensus::proofs::calculate_receipt_root(&block);
    let proofs = (0..receipts as u64).filter_map(|i| ReceiptProof::build(&block, i, receipts_root).ok()).collect();
    Fixtures { headers: chain, encoded, receipts_root, proofs }
}

fn receipt(i: usize) -> ReceiptEnvelope {
    let logs = (0..3)
        .map(|j| Log {
            address: Address::with_last_byte(j),
            data: LogData::new_unchecked(vec![keccak256([i as u8, j]), B256::repeat_byte(j)], Bytes::from(vec![j; 64])),
        })
        .collect();
    let inner = ReceiptWithBloom::from(Receipt {
        status: Eip658Value::Eip658(true),
        cumulative_gas_used: 50_000 * (i as u64 + 1),
        logs,
    });
    match i % 5 {
        0 => ReceiptEnvelope::Legacy(inner),
        1 => ReceiptEnvelope::Eip2930(inner),
        2 => ReceiptEnvelope::Eip1559(inner),
        3 => ReceiptEnvelope::Eip4844(inner),
        _ => ReceiptEnvelope::Eip7702(inner),
    }
}

/// Verifies every header after the first against its parent, as the light client does
/// (hash from the fields, then the rules). Returns how many passed.
pub fn verify_headers(f: &Fixtures) -> usize {
    let rules = HeaderRules { blob_schedule: crate::BlobSchedule::Prague, ..HeaderRules::ethereum() };
    f.headers
        .windows(2)
        .filter(|pair| {
            verify::seal(pair[1].inner().clone(), pair[1].hash())
                .and_then(|h| verify::check_against_parent(&pair[0], &h, &rules, verify::Position::default()))
                .is_ok()
        })
        .count()
}

/// The bound: `keccak256` over the same headers' RLP.
pub fn keccak_headers(f: &Fixtures) -> usize {
    f.encoded[1..].iter().filter(|rlp| keccak256(rlp.as_slice()) != B256::ZERO).count()
}

/// Verifies every receipt proof. Returns how many passed.
pub fn verify_proofs(f: &Fixtures) -> usize {
    f.proofs.iter().filter(|p| p.verify(f.receipts_root).is_ok()).count()
}

/// The bound: `keccak256` over every node of every proof (a verifier hashes each once).
pub fn keccak_proofs(f: &Fixtures) -> usize {
    f.proofs.iter().filter(|p| p.nodes.iter().fold(B256::ZERO, |acc, n| acc ^ keccak256(n)) != B256::ZERO).count()
}

/// Rates measured in one run, per second on one core.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Report {
    /// Header verifications.
    pub headers_per_s: f64,
    /// keccak256 over the same headers' bytes.
    pub keccak_headers_per_s: f64,
    /// Receipt-proof verifications.
    pub proofs_per_s: f64,
    /// keccak256 over the same proofs' nodes.
    pub keccak_proofs_per_s: f64,
}

/// Measures each of the four for at least `budget`, alternating them so that a busy
/// moment hits all alike.
pub fn run(f: &Fixtures, budget: Duration) -> Report {
    let mut totals = [(0usize, Duration::ZERO); 4];
    let work: [fn(&Fixtures) -> usize; 4] = [verify_headers, keccak_headers, verify_proofs, keccak_proofs];
    while totals.iter().any(|(_, t)| *t < budget) {
        for (slot, job) in totals.iter_mut().zip(work) {
            let start = Instant::now();
            let done = std::hint::black_box(job(std::hint::black_box(f)));
            slot.1 += start.elapsed();
            slot.0 += done;
        }
    }
    let rate = |(n, t): (usize, Duration)| n as f64 / t.as_secs_f64().max(f64::MIN_POSITIVE);
    Report {
        headers_per_s: rate(totals[0]),
        keccak_headers_per_s: rate(totals[1]),
        proofs_per_s: rate(totals[2]),
        keccak_proofs_per_s: rate(totals[3]),
    }
}
