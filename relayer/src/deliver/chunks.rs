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

/// What a chunk's prediction says of it (of its items, each a `T`).
#[derive(Debug, PartialEq)]
pub(super) enum ChunkFate<T> {
    /// Every item delivered: send it as predicted.
    Ready(Vec<T>),
    /// The transaction itself is invalid (our funds or nonce), with why.
    Invalid(Vec<T>, String),
    /// Some items' deliveries failed (label and reason each); the rest are to be
    /// predicted again without them.
    Failed { kept: Vec<T>, failed: Vec<(T, &'static str, String)> },
    /// The chunk ran out of gas as a whole: to be split.
    TooBig(Vec<T>),
}

/// Each item's fate in a predicted `processBatch` of `items` (message ids by `id`) with
/// `gas_limit`, from the `ProcessFailed` logs of `mailbox` (a recipient could log the same
/// event itself).
pub(super) fn read_chunk<T>(
    items: Vec<T>,
    id: impl Fn(&T) -> B256,
    outcome: &TxOutcome,
    gas_limit: u64,
    mailbox: Address,
) -> ChunkFate<T> {
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
        match failures.get(&id(&item)) {
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

#[cfg(test)]
mod tests {
    use alloy::primitives::{Log, LogData};
    use ferry_executors::StateDiff;

    use super::*;

    const GAS: u64 = 1_000_000;

    fn outcome(status: TxStatus, gas_used: u64, logs: Vec<Log>) -> TxOutcome {
        TxOutcome { status, gas_used, logs, output: Bytes::new(), state: StateDiff::default() }
    }

    fn failed_log(emitter: Address, id: B256, reason: Vec<u8>) -> Log {
        let data: LogData = Mailbox::ProcessFailed { id, reason: reason.into() }.encode_log_data();
        Log { address: emitter, data }
    }

    fn ids() -> Vec<B256> {
        (1..=4u8).map(B256::repeat_byte).collect()
    }

    fn read(outcome: &TxOutcome) -> ChunkFate<B256> {
        read_chunk(ids(), |id| *id, outcome, GAS, Address::repeat_byte(0xaa))
    }

    #[test]
    fn a_chunk_without_failures_is_ready_and_an_invalid_one_is_set_apart_whole() {
        assert_eq!(read(&outcome(TxStatus::Success, 400_000, vec![])), ChunkFate::Ready(ids()));
        let invalid = outcome(TxStatus::Invalid { reason: "nonce too low".into() }, 0, vec![]);
        assert_eq!(read(&invalid), ChunkFate::Invalid(ids(), "nonce too low".into()));
    }

    #[test]
    fn items_the_mailbox_logs_as_failed_are_set_apart_with_their_reason() {
        let mailbox = Address::repeat_byte(0xaa);
        let revert = alloy::sol_types::SolError::abi_encode(&alloy::sol_types::Revert::from("no thanks"));
        let logs = vec![
            failed_log(mailbox, B256::repeat_byte(2), revert),
            // A recipient logging the same event does not fail an item.
            failed_log(Address::repeat_byte(0xbb), B256::repeat_byte(3), vec![]),
        ];
        let ChunkFate::Failed { kept, failed } = read(&outcome(TxStatus::Success, 300_000, logs)) else {
            panic!("not failed")
        };
        assert_eq!(kept, vec![B256::repeat_byte(1), B256::repeat_byte(3), B256::repeat_byte(4)]);
        assert_eq!(failed.len(), 1);
        assert_eq!((failed[0].0, failed[0].1, failed[0].2.as_str()), (B256::repeat_byte(2), "recipient", "no thanks"));
    }

    #[test]
    fn a_chunk_out_of_gas_is_split_and_a_lone_item_that_fails_is_its_own_fault() {
        let mailbox = Address::repeat_byte(0xaa);
        let starved = vec![failed_log(mailbox, B256::repeat_byte(4), vec![])];
        assert_eq!(read(&outcome(TxStatus::Success, GAS - 100, starved)), ChunkFate::TooBig(ids()));
        let halted = outcome(TxStatus::Halt { reason: "OutOfGas".into() }, GAS, vec![]);
        assert_eq!(read(&halted), ChunkFate::TooBig(ids()));
        let alone = read_chunk(vec![B256::ZERO], |id| *id, &halted, GAS, mailbox);
        assert!(matches!(alone, ChunkFate::Failed { kept, failed } if kept.is_empty() && failed[0].1 == "halt"));
    }
}
