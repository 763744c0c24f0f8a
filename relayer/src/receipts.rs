//! A block's receipts as `eth_getBlockReceipts` serves them, decoded straight into
//! consensus receipts: the fields the receipt trie commits to (type, status, cumulative
//! gas, bloom, logs' address, topics and data) and nothing else.
//!
//! The watcher proves every message against the block's receipts root, so it needs the
//! consensus receipts only. alloy's RPC receipt type decodes each receipt's envelope by
//! its `type` tag, buffering the whole receipt first, and then every per-receipt and
//! per-log field the RPC adds (hashes, indices, prices); for a block of hundreds of
//! receipts that was the largest part of the watcher's own CPU. The fields skipped here
//! are ones the trie does not hold, so a node that lies in them changes nothing proven.

use alloy::{
    consensus::{Eip658Value, Receipt, ReceiptEnvelope, ReceiptWithBloom},
    primitives::{Address, B256, Bloom, Bytes, Log, LogData, U8, U64},
};
use serde::Deserialize;

/// One receipt on the wire, reduced to what the receipt trie commits to.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireReceipt {
    /// The transaction type (absent on nodes that predate typed transactions: legacy).
    #[serde(rename = "type", default)]
    kind: U8,
    /// Success or failure (Byzantium on).
    #[serde(default)]
    status: Option<U8>,
    /// The post-transaction state root (before Byzantium).
    #[serde(default)]
    root: Option<B256>,
    cumulative_gas_used: U64,
    logs_bloom: Bloom,
    logs: Vec<WireLog>,
}

/// One log on the wire: its address, topics and data.
#[derive(Debug, Deserialize)]
struct WireLog {
    address: Address,
    topics: Vec<B256>,
    data: Bytes,
}

/// Why a served receipt cannot be a consensus receipt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReceiptError {
    /// A transaction type this code does not know.
    #[error("receipt {index}: unknown transaction type {kind}")]
    UnknownType {
        /// The receipt's position in its block.
        index: usize,
        /// The type it claims.
        kind: u8,
    },
    /// Neither a status nor a state root.
    #[error("receipt {index}: neither status nor root")]
    NoOutcome {
        /// The receipt's position in its block.
        index: usize,
    },
    /// A log with more topics than the EVM can emit.
    #[error("receipt {index}: a log with {topics} topics")]
    TooManyTopics {
        /// The receipt's position in its block.
        index: usize,
        /// How many it has.
        topics: usize,
    },
}

/// A block's served receipts, `None` when the node does not know the block.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct BlockReceipts(Option<Vec<WireReceipt>>);

impl BlockReceipts {
    /// The consensus receipts, in block order (`None` when the node does not know the
    /// block).
    pub(crate) fn into_consensus(self) -> Result<Option<Vec<ReceiptEnvelope>>, ReceiptError> {
        let Some(receipts) = self.0 else { return Ok(None) };
        receipts.into_iter().enumerate().map(|(index, r)| r.into_consensus(index)).collect::<Result<_, _>>().map(Some)
    }
}

impl WireReceipt {
    fn into_consensus(self, index: usize) -> Result<ReceiptEnvelope, ReceiptError> {
        let status = match (self.status, self.root) {
            (Some(status), _) => Eip658Value::Eip658(status != U8::ZERO),
            (None, Some(root)) => Eip658Value::PostState(root),
            (None, None) => return Err(ReceiptError::NoOutcome { index }),
        };
        let logs = self
            .logs
            .into_iter()
            .map(|log| {
                let topics = log.topics.len();
                LogData::new(log.topics, log.data)
                    .map(|data| Log { address: log.address, data })
                    .ok_or(ReceiptError::TooManyTopics { index, topics })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let receipt = Receipt { status, cumulative_gas_used: self.cumulative_gas_used.to(), logs };
        let with_bloom = ReceiptWithBloom { receipt, logs_bloom: self.logs_bloom };
        Ok(match self.kind.to::<u8>() {
            0 => ReceiptEnvelope::Legacy(with_bloom),
            1 => ReceiptEnvelope::Eip2930(with_bloom),
            2 => ReceiptEnvelope::Eip1559(with_bloom),
            3 => ReceiptEnvelope::Eip4844(with_bloom),
            4 => ReceiptEnvelope::Eip7702(with_bloom),
            kind => return Err(ReceiptError::UnknownType { index, kind }),
        })
    }
}

#[cfg(test)]
mod tests {
    use alloy::{
        consensus::TxReceipt,
        primitives::{address, b256, bytes},
        rpc::types::{Log as RpcLog, TransactionReceipt},
    };

    use super::*;

    /// Receipts of every type as alloy's RPC types serialize them (anvil's own
    /// serializer), with logs of 0 to 4 topics and the per-receipt fields the trie
    /// does not hold.
    fn served() -> Vec<TransactionReceipt> {
        let log = |n: usize| {
            let topics = (0..n).map(|i| B256::with_last_byte(i as u8 + 1)).collect();
            let data = LogData::new_unchecked(topics, bytes!("c0ffee"));
            RpcLog {
                inner: Log { address: address!("00000000000000000000000000000000000000aa"), data },
                block_hash: Some(B256::repeat_byte(9)),
                block_number: Some(7),
                transaction_hash: Some(B256::repeat_byte(8)),
                transaction_index: Some(1),
                log_index: Some(n as u64),
                ..Default::default()
            }
        };
        (0..5u8)
            .map(|kind| {
                let receipt = Receipt {
                    status: Eip658Value::Eip658(kind % 2 == 0),
                    cumulative_gas_used: 21_000 * (u64::from(kind) + 1),
                    logs: (0..=kind as usize).map(log).collect(),
                };
                let logs_bloom = receipt.bloom();
                let with_bloom = ReceiptWithBloom { receipt, logs_bloom };
                let inner = match kind {
                    0 => ReceiptEnvelope::Legacy(with_bloom),
                    1 => ReceiptEnvelope::Eip2930(with_bloom),
                    2 => ReceiptEnvelope::Eip1559(with_bloom),
                    3 => ReceiptEnvelope::Eip4844(with_bloom),
                    _ => ReceiptEnvelope::Eip7702(with_bloom),
                };
                TransactionReceipt {
                    inner,
                    transaction_hash: b256!("0101010101010101010101010101010101010101010101010101010101010101"),
                    transaction_index: Some(u64::from(kind)),
                    block_hash: Some(B256::repeat_byte(9)),
                    block_number: Some(7),
                    gas_used: 21_000,
                    effective_gas_price: 1_000_000_007,
                    blob_gas_used: (kind == 3).then_some(131_072),
                    blob_gas_price: (kind == 3).then_some(1),
                    from: Address::repeat_byte(2),
                    to: Some(Address::repeat_byte(3)),
                    contract_address: None,
                }
            })
            .collect()
    }

    #[test]
    fn served_receipts_decode_to_the_consensus_receipts_alloy_reads() {
        let served = served();
        let json = serde_json::to_string(&served).unwrap_or_else(|e| panic!("{e}"));
        let ours = serde_json::from_str::<BlockReceipts>(&json)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_consensus()
            .unwrap_or_else(|e| panic!("{e}"));
        let alloys: Vec<ReceiptEnvelope> = serde_json::from_str::<Vec<TransactionReceipt>>(&json)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|r| r.inner.into_primitives_receipt())
            .collect();
        assert_eq!(ours, Some(alloys));
        let none = serde_json::from_str::<BlockReceipts>("null").map(|r| r.into_consensus());
        assert_eq!(none.ok(), Some(Ok(None)), "an unknown block is None, not an error");
    }

    #[test]
    fn a_receipt_that_cannot_be_a_consensus_receipt_is_refused_with_its_reason() {
        let json = serde_json::to_value(served()).unwrap_or_else(|e| panic!("{e}"));
        let with = |index: usize, change: &dyn Fn(&mut serde_json::Value)| {
            let mut json = json.clone();
            change(&mut json[index]);
            serde_json::from_value::<BlockReceipts>(json).map(BlockReceipts::into_consensus)
        };
        let unknown = with(2, &|r| r["type"] = "0x7e".into());
        assert!(matches!(unknown, Ok(Err(ReceiptError::UnknownType { index: 2, kind: 0x7e }))), "{unknown:?}");
        let no_outcome = with(1, &|r| {
            r.as_object_mut().map(|o| o.remove("status"));
        });
        assert!(matches!(no_outcome, Ok(Err(ReceiptError::NoOutcome { index: 1 }))), "{no_outcome:?}");
        let topics =
            with(0, &|r| r["logs"][0]["topics"] = serde_json::to_value(vec![B256::ZERO; 5]).unwrap_or_default());
        assert!(matches!(topics, Ok(Err(ReceiptError::TooManyTopics { index: 0, topics: 5 }))), "{topics:?}");
        // Malformed JSON is serde's error (the watcher counts it as bad input).
        assert!(with(3, &|r| r["cumulativeGasUsed"] = "lots".into()).is_err());
        assert!(with(3, &|r| r["logsBloom"] = "0x12".into()).is_err());
        // A pre-Byzantium receipt carries its state root instead of a status.
        let root = with(0, &|r| {
            let o = r.as_object_mut();
            o.map(|o| {
                o.remove("status");
                o.insert("root".into(), serde_json::to_value(B256::repeat_byte(5)).unwrap_or_default())
            });
        });
        let root = root.ok().and_then(Result::ok).flatten().and_then(|r| r.first().cloned());
        assert_eq!(root.map(|r| r.status_or_post_state()), Some(Eip658Value::PostState(B256::repeat_byte(5))));
    }
}
