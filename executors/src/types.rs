//! What goes into an executor and what comes out.

use revm::{
    bytecode::Bytecode,
    context::BlockEnv,
    primitives::{Address, B256, Bytes, Log, U256, hardfork::SpecId},
};
use rustc_hash::FxHashMap;

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

impl BlockContext {
    /// The block a node builds on `parent`: the next number, one second later, the same
    /// beneficiary and gas limit, and the EIP-1559 base fee that follows the parent's.
    pub fn after(parent: &alloy::consensus::Header, chain_id: u64, spec: SpecId) -> Self {
        let block = BlockEnv {
            number: U256::from(parent.number + 1),
            beneficiary: parent.beneficiary,
            timestamp: U256::from(parent.timestamp + 1),
            gas_limit: parent.gas_limit,
            basefee: parent.next_block_base_fee(alloy::eips::eip1559::BaseFeeParams::ethereum()).unwrap_or_default(),
            prevrandao: Some(parent.mix_hash),
            ..Default::default()
        };
        Self { block, chain_id, spec }
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountState {
    /// Balance.
    pub balance: U256,
    /// Nonce.
    pub nonce: u64,
    /// Code hash.
    pub code_hash: B256,
}

impl AccountState {
    /// An account that does not exist yet: no balance, no nonce, no code.
    pub fn empty() -> Self {
        Self { code_hash: revm::primitives::KECCAK_EMPTY, ..Default::default() }
    }
}

/// Changes to one account.
///
/// A destroyed account has `info: None`, `storage_cleared` and no slots: nothing it
/// wrote before it was destroyed survives. A created account (CREATE or CREATE2, even
/// onto an address that held storage) has `storage_cleared` too: its storage starts
/// empty, and only `storage` is in it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountDiff {
    /// New balance, nonce and code hash; `None` if the account was destroyed.
    pub info: Option<AccountState>,
    /// New code, when the account got code.
    pub code: Option<Bytecode>,
    /// The account's storage before this change is gone: every slot not in `storage`
    /// reads as zero.
    pub storage_cleared: bool,
    /// Storage slots whose value changed, with their new values, sorted by slot.
    pub storage: Vec<(U256, U256)>,
}

impl AccountDiff {
    /// The account destroyed: no fields, no storage.
    pub fn destroyed() -> Self {
        Self { info: None, code: None, storage_cleared: true, storage: Vec::new() }
    }

    /// Whether the account's storage before this change is gone: it was destroyed or
    /// created anew.
    pub fn clears_storage(&self) -> bool {
        self.storage_cleared || self.info.is_none()
    }

    /// Folds a later change to the same account into this one.
    pub fn merge(&mut self, later: &AccountDiff) {
        if self.merge_fields(later) {
            self.storage.clear();
        }
        for (slot, value) in &later.storage {
            self.set_slot(*slot, *value);
        }
    }

    /// Folds a later change's fields, code and clearing into this one, not its slots;
    /// says whether the later change cleared the storage (the slots so far are gone).
    fn merge_fields(&mut self, later: &AccountDiff) -> bool {
        let clears = later.clears_storage();
        self.storage_cleared |= clears;
        if later.code.is_some() {
            self.code.clone_from(&later.code);
        } else if code_hash(later.info) != code_hash(self.info) {
            // The code changed to one the account had before (or none).
            self.code = None;
        }
        self.info = later.info;
        clears
    }

    /// Sets a slot's new value, keeping the slots sorted.
    pub fn set_slot(&mut self, slot: U256, value: U256) {
        match self.storage.binary_search_by_key(&slot, |(s, _)| *s) {
            Ok(at) => self.storage[at].1 = value,
            Err(at) => self.storage.insert(at, (slot, value)),
        }
    }
}

/// Changes to state, by account, sorted by address (a flat vector: a transaction
/// touches a handful of accounts, and this is built for every one of them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateDiff {
    accounts: Vec<(Address, AccountDiff)>,
}

impl StateDiff {
    /// No changes, with room for `accounts` accounts.
    pub fn with_capacity(accounts: usize) -> Self {
        Self { accounts: Vec::with_capacity(accounts) }
    }

    /// Builds a diff from accounts in any order (later duplicates win).
    pub fn from_accounts(mut accounts: Vec<(Address, AccountDiff)>) -> Self {
        accounts.sort_by_key(|(a, _)| *a);
        accounts.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                std::mem::swap(later, earlier);
                true
            } else {
                false
            }
        });
        Self { accounts }
    }

    /// A diff of accounts already sorted by address, each once.
    pub(crate) fn from_sorted_accounts(accounts: Vec<(Address, AccountDiff)>) -> Self {
        debug_assert!(accounts.windows(2).all(|w| w[0].0 < w[1].0), "accounts out of order");
        Self { accounts }
    }

    /// Accounts changed, by address.
    pub fn iter(&self) -> impl Iterator<Item = (&Address, &AccountDiff)> {
        self.accounts.iter().map(|(a, d)| (a, d))
    }

    /// How many accounts changed.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// One account's changes.
    pub fn get(&self, address: &Address) -> Option<&AccountDiff> {
        self.accounts.binary_search_by_key(address, |(a, _)| *a).ok().map(|at| &self.accounts[at].1)
    }

    /// One account's changes, to modify.
    pub fn get_mut(&mut self, address: &Address) -> Option<&mut AccountDiff> {
        self.accounts.binary_search_by_key(address, |(a, _)| *a).ok().map(|at| &mut self.accounts[at].1)
    }

    /// One account's changes, created empty if absent.
    pub fn entry(&mut self, address: Address) -> &mut AccountDiff {
        let at = match self.accounts.binary_search_by_key(&address, |(a, _)| *a) {
            Ok(at) => at,
            Err(at) => {
                self.accounts.insert(at, (address, AccountDiff::default()));
                at
            }
        };
        &mut self.accounts[at].1
    }

    /// Removes one account's changes.
    pub(crate) fn remove(&mut self, address: &Address) {
        if let Ok(at) = self.accounts.binary_search_by_key(address, |(a, _)| *a) {
            self.accounts.remove(at);
        }
    }

    /// Sets one account's changes.
    pub fn insert(&mut self, address: Address, diff: AccountDiff) {
        *self.entry(address) = diff;
    }

    /// `diffs` folded in order with [`StateDiff::merge`], in hash maps sorted once.
    pub fn merged<'a>(diffs: impl IntoIterator<Item = &'a StateDiff>) -> StateDiff {
        /// An account's changes so far, with its slots in a map (sorted once, at the end).
        #[derive(Default)]
        struct Pending {
            diff: AccountDiff,
            slots: FxHashMap<U256, U256>,
        }
        let mut accounts: FxHashMap<Address, Pending> = FxHashMap::default();
        for diff in diffs {
            for (address, account) in diff.iter() {
                let entry = accounts.entry(*address).or_default();
                if entry.diff.merge_fields(account) {
                    entry.slots.clear();
                }
                entry.slots.extend(account.storage.iter().copied());
            }
        }
        let mut merged: Vec<(Address, AccountDiff)> = accounts
            .into_iter()
            .map(|(address, Pending { mut diff, slots })| {
                diff.storage = slots.into_iter().collect();
                diff.storage.sort_unstable_by_key(|(slot, _)| *slot);
                (address, diff)
            })
            .collect();
        merged.sort_unstable_by_key(|(address, _)| *address);
        Self { accounts: merged }
    }

    /// Folds a later diff into this one.
    pub fn merge(&mut self, later: &StateDiff) {
        for (address, diff) in later.iter() {
            self.entry(*address).merge(diff);
        }
    }
}

impl BatchOutcome {
    /// Everything the batch changed, merged: computed on demand from the transactions'
    /// changes (the relayer never needs it, and it costs a tenth of a cheap batch).
    pub fn state(&self) -> StateDiff {
        StateDiff::merged(self.outcomes.iter().map(|o| &o.state))
    }
}

/// An account's code hash, if it exists.
pub(crate) fn code_hash(info: Option<AccountState>) -> Option<B256> {
    info.map(|i| i.code_hash)
}

/// How a batch was executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionMode {
    /// On the parallel (Block-STM) engine.
    Parallel,
    /// One by one (small batches, or a fallback).
    Sequential,
    /// Split execution: cut into pieces run sequentially side by side, each result
    /// checked in order against what was committed before it.
    Split,
}

impl ExecutionMode {
    /// `parallel` or `sequential`, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parallel => "parallel",
            Self::Sequential => "sequential",
            Self::Split => "split",
        }
    }
}

/// A batch's results.
#[derive(Debug, Clone)]
pub struct BatchOutcome {
    /// One per transaction, in batch order, each with its own changes.
    pub outcomes: Vec<TxOutcome>,
    /// What each transaction touched (empty unless the pool records access).
    pub access: Vec<crate::AccessSet>,
    /// How it ran.
    pub mode: ExecutionMode,
    /// Executions beyond the first per transaction (conflicts).
    pub reexecutions: usize,
    /// Transactions re-run one by one at commit because a lazy assumption failed.
    pub fallbacks: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(balance: u64) -> Option<AccountState> {
        Some(AccountState { balance: U256::from(balance), nonce: 1, code_hash: B256::repeat_byte(1) })
    }

    fn diff(address: Address, change: AccountDiff) -> StateDiff {
        StateDiff::from_accounts(vec![(address, change)])
    }

    #[test]
    fn a_destruction_takes_the_slots_written_before_it_and_a_creation_starts_empty() {
        let a = Address::repeat_byte(0xaa);
        let u = U256::from;
        let written = diff(
            a,
            AccountDiff { info: account(1), storage: vec![(u(1), u(10)), (u(2), u(20))], ..Default::default() },
        );
        let destroyed = diff(a, AccountDiff::destroyed());
        let created = diff(
            a,
            AccountDiff { info: account(2), storage_cleared: true, storage: vec![(u(3), u(30))], ..Default::default() },
        );
        let written_again =
            diff(a, AccountDiff { info: account(2), storage: vec![(u(1), u(11))], ..Default::default() });
        let sequence = [&written, &destroyed, &created, &written_again];

        let mut folded = StateDiff::default();
        for d in sequence {
            folded.merge(d);
        }
        let want = AccountDiff {
            info: account(2),
            code: None,
            storage_cleared: true,
            storage: vec![(u(1), u(11)), (u(3), u(30))],
        };
        assert_eq!(folded.get(&a), Some(&want), "merge keeps only what followed the last clearing");
        assert_eq!(StateDiff::merged(sequence), folded, "merged folds the same way");

        let mut gone = StateDiff::default();
        gone.merge(&written);
        gone.merge(&destroyed);
        assert_eq!(gone.get(&a), Some(&AccountDiff::destroyed()), "nothing of a destroyed account survives");
        assert_eq!(StateDiff::merged([&written, &destroyed]), gone);
    }
}
