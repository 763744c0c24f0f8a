//! Cross-layer validation: what execution predicted against what the chain did, and the
//! parallel engine against a sequential re-run of a sampled fraction of batches.

use std::sync::atomic::{AtomicU64, Ordering};

use alloy::rpc::types::TransactionReceipt;
use revm::primitives::Log;

use crate::{BatchOutcome, TxOutcome, TxStatus};

/// How a receipt differs from the prediction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptMismatch {
    /// Success predicted and revert seen, or the other way round.
    #[error("status: predicted success={predicted}, receipt success={actual}")]
    Status {
        /// Whether success was predicted.
        predicted: bool,
        /// Whether the receipt says success.
        actual: bool,
    },
    /// Different gas used.
    #[error("gas used: predicted {predicted}, receipt {actual}")]
    GasUsed {
        /// Predicted.
        predicted: u64,
        /// From the receipt.
        actual: u64,
    },
    /// Different logs (count, or the first log that differs).
    #[error("logs: predicted {predicted} logs, receipt {actual}; first difference at {first_difference:?}")]
    Logs {
        /// Predicted count.
        predicted: usize,
        /// Receipt count.
        actual: usize,
        /// Index of the first differing log.
        first_difference: Option<usize>,
    },
}

/// How the parallel result differs from the sequential re-run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequentialMismatch {
    /// A different number of outcomes.
    #[error("parallel gave {parallel} outcomes, sequential {sequential}")]
    Count {
        /// Parallel.
        parallel: usize,
        /// Sequential.
        sequential: usize,
    },
    /// One transaction's outcome differs.
    #[error("transaction {index}: parallel {parallel:?}, sequential {sequential:?}")]
    Outcome {
        /// Its index in the batch.
        index: usize,
        /// Parallel outcome.
        parallel: Box<TxOutcome>,
        /// Sequential outcome.
        sequential: Box<TxOutcome>,
    },
    /// The merged final state differs.
    #[error("final state differs")]
    FinalState,
}

/// Compares a predicted outcome with the chain's receipt: status, gas used and logs.
pub fn compare_with_receipt(predicted: &TxOutcome, receipt: &TransactionReceipt) -> Result<(), ReceiptMismatch> {
    let success = predicted.status == TxStatus::Success;
    if success != receipt.status() {
        return Err(ReceiptMismatch::Status { predicted: success, actual: receipt.status() });
    }
    if predicted.gas_used != receipt.gas_used {
        return Err(ReceiptMismatch::GasUsed { predicted: predicted.gas_used, actual: receipt.gas_used });
    }
    let actual: Vec<&Log> = receipt.inner.logs().iter().map(|l| &l.inner).collect();
    let first_difference = predicted.logs.iter().zip(&actual).position(|(p, a)| p != *a);
    if predicted.logs.len() != actual.len() || first_difference.is_some() {
        return Err(ReceiptMismatch::Logs { predicted: predicted.logs.len(), actual: actual.len(), first_difference });
    }
    Ok(())
}

/// Compares a parallel batch with its sequential re-run, transaction by transaction
/// and in the final state.
pub fn compare_with_sequential(parallel: &BatchOutcome, sequential: &BatchOutcome) -> Result<(), SequentialMismatch> {
    if parallel.outcomes.len() != sequential.outcomes.len() {
        return Err(SequentialMismatch::Count {
            parallel: parallel.outcomes.len(),
            sequential: sequential.outcomes.len(),
        });
    }
    for (index, (p, s)) in parallel.outcomes.iter().zip(&sequential.outcomes).enumerate() {
        if p != s {
            return Err(SequentialMismatch::Outcome {
                index,
                parallel: Box::new(p.clone()),
                sequential: Box::new(s.clone()),
            });
        }
    }
    if parallel.state() != sequential.state() {
        return Err(SequentialMismatch::FinalState);
    }
    Ok(())
}

/// Decides which batches get re-run sequentially: one in `every` (default 20).
#[derive(Debug)]
pub struct SampledCheck {
    every: u64,
    seen: AtomicU64,
}

impl SampledCheck {
    /// Checks one batch in `every` (0 never checks; 1 checks all).
    pub fn new(every: u64) -> Self {
        Self { every, seen: AtomicU64::new(0) }
    }

    /// Whether this batch is one to check.
    pub fn pick(&self) -> bool {
        self.every != 0 && self.seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.every)
    }
}

impl Default for SampledCheck {
    fn default() -> Self {
        Self::new(20)
    }
}
