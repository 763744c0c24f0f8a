//! What goes into an executor and what comes out.

use std::collections::BTreeMap;

use revm::{
    bytecode::Bytecode,
    context::BlockEnv,
    primitives::{Address, B256, Bytes, Log, U256, hardfork::SpecId},
};

/// The block a batch executes in and the chain's rules.
#[derive(Debug, Clone)]
pub struct BlockContext {
    /// The block environment (number, timestamp, beneficiary, base fee, gas limit...).
    pub block: BlockEnv,
    /// The chain id transactions must carry.
    pub chain_id: u64,
    /// The EVM fork.
    pub spec: SpecId,
}

/// How one transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxStatus {
    /// It succeeded.
    Success,
    /// It reverted; `reason` is the decoded `Error(string)` or custom error selector.
    Revert {
        /// Human-readable reason, when the revert data decodes.
        reason: String,
    },
    /// It halted (out of gas, invalid opcode...).
    Halt {
        /// What halted it.
        reason: String,
    },
    /// It is not a valid transaction in this state (nonce, funds, gas limit...): it
    /// changes nothing and uses no gas.
    Invalid {
        /// Why.
        reason: String,
    },
}

/// One transaction's result: exactly what sequential execution in batch order gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxOutcome {
    /// How it ended.
    pub status: TxStatus,
    /// Gas used (what the receipt will say).
    pub gas_used: u64,
    /// Logs emitted.
    pub logs: Vec<Log>,
    /// Return data, or revert data.
    pub output: Bytes,
    /// What it changed.
    pub state: StateDiff,
}

/// An account as a transaction left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountState {
    /// Balance.
    pub balance: U256,
    /// Nonce.
    pub nonce: u64,
    /// Code hash.
    pub code_hash: B256,
}

/// Changes to one account.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountDiff {
    /// New balance, nonce and code hash; `None` if the account was destroyed.
    pub info: Option<AccountState>,
    /// New code, when the account got code.
    pub code: Option<Bytecode>,
    /// Storage slots whose value changed, with their new values.
    pub storage: BTreeMap<U256, U256>,
}

/// Changes to state, by account, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateDiff(pub BTreeMap<Address, AccountDiff>);

impl StateDiff {
    /// Accounts changed.
    pub fn iter(&self) -> impl Iterator<Item = (&Address, &AccountDiff)> {
        self.0.iter()
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Folds a later diff into this one.
    pub fn merge(&mut self, later: &StateDiff) {
        for (address, diff) in later.iter() {
            let entry = self.0.entry(*address).or_default();
            if diff.info.is_none() {
                entry.storage.clear();
            }
            entry.info = diff.info;
            if diff.code.is_some() {
                entry.code.clone_from(&diff.code);
            }
            entry.storage.extend(diff.storage.iter().map(|(k, v)| (*k, *v)));
        }
    }
}

/// How a batch was executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionMode {
    /// On the parallel engine.
    Parallel,
    /// One by one (small batches, or a fallback).
    Sequential,
}

impl ExecutionMode {
    /// `parallel` or `sequential`, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parallel => "parallel",
            Self::Sequential => "sequential",
        }
    }
}

/// A batch's results.
#[derive(Debug, Clone)]
pub struct BatchOutcome {
    /// One per transaction, in batch order.
    pub outcomes: Vec<TxOutcome>,
    /// Everything the batch changed, merged.
    pub state: StateDiff,
    /// What each transaction touched (empty unless the pool records access).
    pub access: Vec<crate::AccessSet>,
    /// How it ran.
    pub mode: ExecutionMode,
    /// Executions beyond the first per transaction (conflicts).
    pub reexecutions: usize,
    /// Transactions re-run one by one at commit because a lazy assumption failed.
    pub fallbacks: usize,
}
