//! Chunking a round's messages into `processBatch` transactions (each within half a
//! block by the gas a delivery was last seen to need), and reading each item's fate off
//! a predicted chunk.

use std::sync::atomic::{AtomicU64, Ordering};

use alloy::{
    primitives::{Address, B256, Bytes},
    sol_types::{SolCall, SolEvent},
};
use ferry_executors::{TxOutcome, TxStatus};
use ferry_messages::contracts::Mailbox;

use super::{
    Item,
    revert::{decode_revert, revert_reason},
};

/// Gas a delivery is assumed to add to a `processBatch` until one has been predicted:
/// above a token transfer's delivery (about 62,000). A chunk of heavier ones runs out
/// and is split before it is sent; one of lighter ones only carries fewer than it could.
const UNSEEN_ITEM_GAS: u64 = 100_000;

/// Splits rounds into chunks, learning the gas per delivery from predictions.
#[derive(Debug)]
pub(super) struct Chunker {
    /// Gas one delivery adds to a `processBatch`, learned (0: not yet).
    item_gas: AtomicU64,
    /// Messages per chunk at most.
    batch_size: usize,
}

impl Chunker {
    /// A chunker of at most `batch_size` messages per chunk.
    pub(super) fn new(batch_size: usize) -> Self {
        Self { item_gas: AtomicU64::new(0), batch_size }
    }

    /// Takes in a predicted chunk's gas per item, for the next rounds' chunking.
    pub(super) fn learn(&self, gas_used: u64, items: usize) {
        if items == 0 {
            return;
        }
        let per_item = gas_used / items as u64;
        let known = self.item_gas.load(Ordering::Relaxed);
        // A quick average: a kind of message that costs more shows within a few rounds.
        let updated = if known == 0 { per_item } else { (known * 3 + per_item) / 4 };
        self.item_gas.store(updated, Ordering::Relaxed);
    }

    /// Splits `items` into `processBatch` transactions of the configured batch size,
    /// each within `gas_cap` by the gas a delivery was last seen to need.
    pub(super) fn split(&self, items: Vec<Item>, gas_cap: u64) -> Vec<Vec<Item>> {
        let learned = self.item_gas.load(Ordering::Relaxed);
        let item_gas = if learned == 0 { UNSEEN_ITEM_GAS } else { learned + learned / 10 };
        let per_chunk = ((gas_cap / item_gas.max(1)) as usize).clamp(1, self.batch_size.max(1));
        let mut chunks: Vec<Vec<Item>> = Vec::with_capacity(items.len().div_ceil(per_chunk));
        for item in items {
            match chunks.last_mut() {
                Some(chunk) if chunk.len() < per_chunk => chunk.push(item),
                _ => chunks.push(vec![item]),
            }
        }
        chunks
    }
}

/// What a chunk's prediction says of it.
pub(super) enum ChunkFate {
    /// Every item delivered: send it as predicted.
    Ready(Vec<Item>),
    /// The transaction itself is invalid (our funds or nonce), with why.
    Invalid(Vec<Item>, String),
    /// Some items' deliveries failed (label and reason each); the rest are to be
    /// predicted again without them.
    Failed { kept: Vec<Item>, failed: Vec<(Item, &'static str, String)> },
    /// The chunk ran out of gas as a whole: to be split.
    TooBig(Vec<Item>),
}

/// Each item's fate in a predicted `processBatch` of `items` with `gas_limit`, from the
/// `ProcessFailed` logs of `mailbox` (a recipient could log the same event itself).
pub(super) fn read_chunk(items: Vec<Item>, outcome: &TxOutcome, gas_limit: u64, mailbox: Address) -> ChunkFate {
    let ran_out = outcome.gas_used >= gas_limit - gas_limit / 32;
    match &outcome.status {
        TxStatus::Invalid { reason } => return ChunkFate::Invalid(items, reason.clone()),
        TxStatus::Revert { .. } | TxStatus::Halt { .. } if items.len() > 1 => return ChunkFate::TooBig(items),
        TxStatus::Revert { .. } | TxStatus::Halt { .. } => {
            let (label, reason) = revert_reason(outcome);
            return ChunkFate::Failed {
                kept: Vec::new(),
                failed: items.into_iter().map(|i| (i, label, reason.clone())).collect(),
            };
        }
        TxStatus::Success => {}
    }
    let failures: std::collections::HashMap<B256, Bytes> = outcome
        .logs
        .iter()
        .filter(|log| log.address == mailbox)
        .filter_map(|log| Mailbox::ProcessFailed::decode_log_data(&log.data).ok())
        .map(|e| (e.id, e.reason))
        .collect();
    if failures.is_empty() {
        return ChunkFate::Ready(items);
    }
    // An item that failed without a reason while the chunk used up its gas may have
    // failed for want of the chunk's gas, not its own fault: split first.
    if ran_out && items.len() > 1 {
        return ChunkFate::TooBig(items);
    }
    let (mut kept, mut failed) = (Vec::new(), Vec::new());
    for item in items {
        match failures.get(&item.record.id) {
            Some(reason) => {
                let (label, reason) = decode_revert(reason, "revert");
                failed.push((item, label, reason));
            }
            None => kept.push(item),
        }
    }
    ChunkFate::Failed { kept, failed }
}

/// The calldata of `processBatch` for `items`.
pub(super) fn process_batch(items: &[Item]) -> Vec<u8> {
    Mailbox::processBatchCall {
        metadata: items.iter().map(|i| i.metadata.clone()).collect(),
        messages: items.iter().map(|i| Bytes::from(i.message.encode())).collect(),
    }
    .abi_encode()
}
