//! Where state comes from: one trait, an in-memory implementation, and (in `fork`) a
//! chain read over RPC.

use revm::{
    bytecode::Bytecode,
    primitives::{Address, B256, KECCAK_EMPTY, U256, keccak256},
    state::AccountInfo,
};
use rustc_hash::FxHashMap;

use crate::StateError;

/// Read-only state the executors run against. Shared by every worker of a pool, so it
/// takes `&self` and must be `Send + Sync`.
pub trait StateSource: Send + Sync {
    /// An account's balance, nonce and code hash (`None` if it does not exist).
    fn basic(&self, address: Address) -> Result<Option<AccountInfo>, StateError>;
    /// Code by its hash.
    fn code_by_hash(&self, hash: B256) -> Result<Bytecode, StateError>;
    /// A storage slot (zero if unset).
    fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError>;
    /// The hash of block `number`.
    fn block_hash(&self, number: u64) -> Result<B256, StateError>;
}

/// State in memory, for tests and benchmarks.
#[derive(Debug, Clone, Default)]
pub struct InMemoryState {
    accounts: FxHashMap<Address, AccountInfo>,
    storage: FxHashMap<(Address, U256), U256>,
    code: FxHashMap<B256, Bytecode>,
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

    /// Puts code at an address (nonce 1, as a deployed contract has).
    pub fn set_code(&mut self, address: Address, code: Bytecode) {
        let hash = keccak256(code.original_byte_slice());
        let info = self.accounts.entry(address).or_default();
        info.code_hash = hash;
        info.nonce = info.nonce.max(1);
        info.code = Some(code.clone());
        self.code.insert(hash, code);
    }

    /// Sets a storage slot.
    pub fn set_storage(&mut self, address: Address, slot: U256, value: U256) {
        self.storage.insert((address, slot), value);
        self.accounts.entry(address).or_insert_with(|| AccountInfo { code_hash: KECCAK_EMPTY, ..Default::default() });
    }

    /// Applies a batch's merged changes, so that the next batch runs on top of them.
    pub fn apply(&mut self, diff: &crate::StateDiff) {
        for (address, account) in diff.iter() {
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
                    self.storage.retain(|(a, _), _| a != address);
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

    fn code_by_hash(&self, hash: B256) -> Result<Bytecode, StateError> {
        Ok(self.code.get(&hash).cloned().unwrap_or_default())
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError> {
        Ok(self.storage.get(&(address, slot)).copied().unwrap_or_default())
    }

    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        Ok(keccak256(number.to_string()))
    }
}

impl<T: StateSource + ?Sized> StateSource for std::sync::Arc<T> {
    fn basic(&self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        (**self).basic(address)
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
}
