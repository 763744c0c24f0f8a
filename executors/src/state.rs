//! Where state comes from: one trait, an in-memory implementation, and (in `fork`) a
//! chain read over RPC.

use revm::{
    bytecode::Bytecode,
    primitives::{Address, B256, KECCAK_EMPTY, U256, keccak256},
    state::AccountInfo,
};
use rustc_hash::FxHashMap;

use crate::{AccountState, StateError};

/// Read-only state the executors run against. Shared by every worker of a pool, so it
/// takes `&self` and must be `Send + Sync`.
pub trait StateSource: Send + Sync {
    /// An account's balance, nonce and code hash (`None` if it does not exist).
    fn basic(&self, address: Address) -> Result<Option<AccountInfo>, StateError>;
    /// An account's balance, nonce and code hash without its code: what the parallel
    /// engine reads, serving code from each worker's own copy (cloning a shared
    /// `Bytecode` from two cores makes its reference count a contended line).
    fn account(&self, address: Address) -> Result<Option<AccountState>, StateError> {
        Ok(self.basic(address)?.as_ref().map(crate::overlay::lite))
    }
    /// Code by its hash.
    fn code_by_hash(&self, hash: B256) -> Result<Bytecode, StateError>;
    /// A storage slot (zero if unset).
    fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError>;
    /// The hash of block `number`.
    fn block_hash(&self, number: u64) -> Result<B256, StateError>;
    /// Hints that a batch is about to read `accounts` and `slots`, so that a remote source
    /// can fetch them together rather than one by one; returns how many it fetched.
    /// Nothing to do for a local source.
    fn prefetch(&self, accounts: &[Address], slots: &[(Address, U256)]) -> Result<usize, StateError> {
        let _ = (accounts, slots);
        Ok(0)
    }
    /// Notes that a read of `address` (its `slot`, or the account itself) was answered
    /// by a diff laid over this source ([`LayeredState`]) instead. Once the diff's
    /// transactions are mined the same read comes here: a source that carries what was
    /// read to a later block carries this too. Nothing to do for a local source.
    fn read_above(&self, address: Address, slot: Option<U256>) {
        let _ = (address, slot);
    }
}

/// State in memory: for tests, benchmarks, and real blocks run from their pre-state.
#[derive(Debug, Clone, Default)]
pub struct InMemoryState {
    accounts: FxHashMap<Address, AccountInfo>,
    storage: FxHashMap<(Address, U256), U256>,
    code: FxHashMap<B256, Bytecode>,
    /// The chain's block hashes, for BLOCKHASH.
    block_hashes: FxHashMap<u64, B256>,
}

impl InMemoryState {
    /// Empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets an account's balance and nonce, keeping its code.
    pub fn set_account(&mut self, address: Address, balance: U256, nonce: u64) {
        let info = self
            .accounts
            .entry(address)
            .or_insert_with(|| AccountInfo { code_hash: KECCAK_EMPTY, ..Default::default() });
        info.balance = balance;
        info.nonce = nonce;
    }

    /// Puts code at an address, keeping its balance and nonce (a contract's nonce is
    /// whatever the chain says: 0 for one created before EIP-161, 1 or more after).
    pub fn set_code(&mut self, address: Address, code: Bytecode) {
        let hash = keccak256(code.original_byte_slice());
        let info = self.accounts.entry(address).or_default();
        info.code_hash = hash;
        info.code = Some(code.clone());
        self.code.insert(hash, code);
    }

    /// Records the hash of block `number`, for BLOCKHASH.
    pub fn set_block_hash(&mut self, number: u64, hash: B256) {
        self.block_hashes.insert(number, hash);
    }

    /// Sets a storage slot.
    pub fn set_storage(&mut self, address: Address, slot: U256, value: U256) {
        self.storage.insert((address, slot), value);
        self.accounts.entry(address).or_insert_with(|| AccountInfo { code_hash: KECCAK_EMPTY, ..Default::default() });
    }

    /// Applies a batch's merged changes, so that the next batch runs on top of them.
    pub fn apply(&mut self, diff: &crate::StateDiff) {
        for (address, account) in diff.iter() {
            if account.clears_storage() {
                self.storage.retain(|(a, _), _| a != address);
            }
            match &account.info {
                Some(info) => {
                    if let Some(code) = &account.code {
                        self.code.insert(info.code_hash, code.clone());
                    }
                    let entry = self.accounts.entry(*address).or_default();
                    entry.balance = info.balance;
                    entry.nonce = info.nonce;
                    entry.code_hash = info.code_hash;
                    entry.code = self.code.get(&info.code_hash).cloned();
                }
                None => {
                    self.accounts.remove(address);
                }
            }
            for (slot, value) in &account.storage {
                self.storage.insert((*address, *slot), *value);
            }
        }
    }
}

impl StateSource for InMemoryState {
    fn basic(&self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        Ok(self.accounts.get(&address).cloned())
    }

    fn account(&self, address: Address) -> Result<Option<AccountState>, StateError> {
        Ok(self.accounts.get(&address).map(crate::overlay::lite))
    }

    fn code_by_hash(&self, hash: B256) -> Result<Bytecode, StateError> {
        if hash == KECCAK_EMPTY {
            return Ok(Bytecode::default());
        }
        // An unknown hash is missing state, never empty code: running it as empty would
        // hide the miss behind a wrong result.
        self.code.get(&hash).cloned().ok_or_else(|| StateError(format!("no code with hash {hash}")))
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError> {
        Ok(self.storage.get(&(address, slot)).copied().unwrap_or_default())
    }

    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        self.block_hashes.get(&number).copied().ok_or_else(|| StateError(format!("no hash for block {number}")))
    }
}

impl<T: StateSource + ?Sized> StateSource for std::sync::Arc<T> {
    fn basic(&self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        (**self).basic(address)
    }
    fn account(&self, address: Address) -> Result<Option<AccountState>, StateError> {
        (**self).account(address)
    }
    fn code_by_hash(&self, hash: B256) -> Result<Bytecode, StateError> {
        (**self).code_by_hash(hash)
    }
    fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError> {
        (**self).storage(address, slot)
    }
    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        (**self).block_hash(number)
    }
    fn prefetch(&self, accounts: &[Address], slots: &[(Address, U256)]) -> Result<usize, StateError> {
        (**self).prefetch(accounts, slots)
    }
    fn read_above(&self, address: Address, slot: Option<U256>) {
        (**self).read_above(address, slot)
    }
}

/// A state source with a diff laid over it: the state once transactions that were sent
/// but are not yet mined have run, so that the next batch can be predicted on top of
/// them while they wait for a block. The diff's values are the ones the transactions
/// left (as in [`TxOutcome::state`](crate::TxOutcome)), merged in order.
pub struct LayeredState {
    base: std::sync::Arc<dyn StateSource>,
    diff: crate::StateDiff,
}

impl LayeredState {
    /// `diff` over `base`.
    pub fn new(base: std::sync::Arc<dyn StateSource>, diff: crate::StateDiff) -> Self {
        Self { base, diff }
    }
}

impl StateSource for LayeredState {
    fn basic(&self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        let Some(account) = self.diff.get(&address) else { return self.base.basic(address) };
        self.base.read_above(address, None);
        let Some(info) = account.info else { return Ok(None) };
        // Code the diff did not change is the base's: served with the account, as a
        // source that fetches code with accounts (a fork) expects.
        let code = match &account.code {
            Some(code) => Some(code.clone()),
            None if info.code_hash == KECCAK_EMPTY => None,
            None => self.base.basic(address)?.filter(|base| base.code_hash == info.code_hash).and_then(|b| b.code),
        };
        Ok(Some(AccountInfo {
            balance: info.balance,
            nonce: info.nonce,
            code_hash: info.code_hash,
            code,
            ..Default::default()
        }))
    }

    fn account(&self, address: Address) -> Result<Option<AccountState>, StateError> {
        match self.diff.get(&address) {
            Some(account) => {
                self.base.read_above(address, None);
                Ok(account.info)
            }
            None => self.base.account(address),
        }
    }

    fn code_by_hash(&self, hash: B256) -> Result<Bytecode, StateError> {
        let new =
            self.diff.iter().find_map(|(_, a)| a.code.as_ref().filter(|_| a.info.is_some_and(|i| i.code_hash == hash)));
        match new {
            Some(code) => Ok(code.clone()),
            None => self.base.code_by_hash(hash),
        }
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError> {
        let Some(account) = self.diff.get(&address) else { return self.base.storage(address, slot) };
        match account.storage.binary_search_by_key(&slot, |(s, _)| *s) {
            Ok(at) => {
                self.base.read_above(address, Some(slot));
                Ok(account.storage[at].1)
            }
            Err(_) if account.clears_storage() => {
                self.base.read_above(address, Some(slot));
                Ok(U256::ZERO)
            }
            Err(_) => self.base.storage(address, slot),
        }
    }

    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        self.base.block_hash(number)
    }

    fn prefetch(&self, accounts: &[Address], slots: &[(Address, U256)]) -> Result<usize, StateError> {
        self.base.prefetch(accounts, slots)
    }

    fn read_above(&self, address: Address, slot: Option<U256>) {
        self.base.read_above(address, slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccountDiff, StateDiff};

    #[test]
    fn applied_changes_never_bring_back_a_destroyed_accounts_storage() {
        let (a, u) = (Address::repeat_byte(0xaa), U256::from);
        let mut state = InMemoryState::new();
        state.set_code(a, Bytecode::new_raw(vec![0x00].into()));
        state.set_storage(a, u(1), u(10));
        state.set_storage(a, u(2), u(20));
        let mut destroyed = state.clone();
        destroyed.apply(&StateDiff::from_accounts(vec![(a, AccountDiff::destroyed())]));
        assert_eq!(destroyed.basic(a).unwrap(), None);
        assert_eq!(destroyed.storage(a, u(1)).unwrap(), U256::ZERO);

        let info = Some(crate::AccountState { balance: u(5), nonce: 1, code_hash: KECCAK_EMPTY });
        let created = AccountDiff { info, storage_cleared: true, storage: vec![(u(2), u(7))], ..Default::default() };
        let diff = StateDiff::from_accounts(vec![(a, created)]);
        let layered = LayeredState::new(std::sync::Arc::new(state.clone()), diff.clone());
        let mut applied = state;
        applied.apply(&diff);
        for source in [&applied as &dyn StateSource, &layered] {
            assert_eq!(source.storage(a, u(1)).unwrap(), U256::ZERO, "a created account's old slot reads empty");
            assert_eq!(source.storage(a, u(2)).unwrap(), u(7));
        }
    }

    #[test]
    fn state_is_given_as_the_chain_has_it_and_unknown_state_is_an_error() {
        let a = Address::repeat_byte(0xaa);
        let mut state = InMemoryState::new();
        state.set_code(a, Bytecode::new_raw(vec![0x00].into()));
        assert_eq!(state.basic(a).unwrap().map(|i| i.nonce), Some(0), "a contract of nonce 0 keeps it");
        assert!(state.code_by_hash(B256::repeat_byte(9)).is_err(), "an unknown code hash is an error");
        assert!(state.code_by_hash(KECCAK_EMPTY).unwrap().is_empty());
        assert!(state.block_hash(7).is_err(), "an unknown block hash is an error");
        state.set_block_hash(7, B256::repeat_byte(7));
        assert_eq!(state.block_hash(7).unwrap(), B256::repeat_byte(7));
    }
}
