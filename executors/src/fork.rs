//! State forked from a live chain at a pinned block, read through the caller's provider
//! (its transport: timeouts, retries, metrics) with a cache shared by every worker, and
//! prefetching of what the same (contract, selector) touched before.

use std::collections::HashSet;

use alloy::{
    eips::BlockId,
    providers::{DynProvider, Provider},
};
use dashmap::DashMap;
use revm::{
    bytecode::Bytecode,
    context::TxEnv,
    primitives::{Address, B256, Bytes, KECCAK_EMPTY, TxKind, U256, keccak256},
    state::AccountInfo,
};
use rustc_hash::FxBuildHasher;
use tokio::runtime::Handle;

use crate::{StateError, StateSource};

/// Longest a worker waits for one read. The provider's own layers time a request out
/// first; this only keeps a provider without one from holding a worker forever.
const READ_BACKSTOP: std::time::Duration = std::time::Duration::from_secs(60);

/// A chain's state at one block, read over RPC on first use and cached.
pub struct ForkedState {
    provider: DynProvider,
    runtime: Handle,
    block: u64,
    accounts: DashMap<Address, Option<AccountInfo>, FxBuildHasher>,
    storage: DashMap<(Address, U256), U256, FxBuildHasher>,
    code: DashMap<B256, Bytecode, FxBuildHasher>,
    hashes: DashMap<u64, B256, FxBuildHasher>,
}

impl std::fmt::Debug for ForkedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForkedState").field("block", &self.block).field("accounts", &self.accounts.len()).finish()
    }
}

impl ForkedState {
    /// Forks the chain `provider` reads at block `block`. Reads run as tasks on `runtime`
    /// (the caller's) and are waited for on the reading thread: read from plain threads
    /// (the executor's workers, `spawn_blocking`), never from one of `runtime`'s own.
    pub fn new(provider: DynProvider, runtime: Handle, block: u64) -> Self {
        Self {
            provider,
            runtime,
            block,
            accounts: DashMap::default(),
            storage: DashMap::default(),
            code: DashMap::default(),
            hashes: DashMap::default(),
        }
    }

    /// The pinned block.
    pub fn block(&self) -> u64 {
        self.block
    }

    /// Runs `future` on the runtime and waits for it on this thread.
    fn wait<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = Result<T, StateError>> + Send + 'static,
    ) -> Result<T, StateError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv_timeout(READ_BACKSTOP).map_err(|e| match e {
            std::sync::mpsc::RecvTimeoutError::Timeout => StateError(format!("no RPC answer in {READ_BACKSTOP:?}")),
            std::sync::mpsc::RecvTimeoutError::Disconnected => StateError("RPC runtime stopped".into()),
        })?
    }

    async fn fetch_account(
        provider: DynProvider,
        block: u64,
        address: Address,
    ) -> Result<Option<AccountInfo>, StateError> {
        let at = BlockId::number(block);
        let (balance, nonce, code) = tokio::join!(
            provider.get_balance(address).block_id(at).into_future(),
            provider.get_transaction_count(address).block_id(at).into_future(),
            provider.get_code_at(address).block_id(at).into_future(),
        );
        let rpc = |e: alloy::transports::TransportError| StateError(format!("account {address} at {block}: {e}"));
        let (balance, nonce, code): (U256, u64, Bytes) =
            (balance.map_err(rpc)?, nonce.map_err(rpc)?, code.map_err(rpc)?);
        if balance.is_zero() && nonce == 0 && code.is_empty() {
            return Ok(None);
        }
        let bytecode = Bytecode::new_raw(code.clone());
        let code_hash = if code.is_empty() { KECCAK_EMPTY } else { keccak256(&code) };
        let mut info = AccountInfo::default().with_code_hash(code_hash);
        info.balance = balance;
        info.nonce = nonce;
        info.code = Some(bytecode);
        Ok(Some(info))
    }

    async fn fetch_slot(provider: DynProvider, block: u64, address: Address, slot: U256) -> Result<U256, StateError> {
        provider
            .get_storage_at(address, slot)
            .block_id(BlockId::number(block))
            .await
            .map_err(|e| StateError(format!("slot {slot} of {address} at {block}: {e}")))
    }

    fn remember(&self, address: Address, info: Option<AccountInfo>) {
        if let Some(code) = info.as_ref().and_then(|i| i.code.clone()) {
            self.code.insert(info.as_ref().map_or(KECCAK_EMPTY, |i| i.code_hash), code);
        }
        self.accounts.insert(address, info);
    }

    /// Fetches, concurrently, whatever of `accounts` and `slots` is not cached yet.
    pub fn prefetch(&self, accounts: &[Address], slots: &[(Address, U256)]) -> Result<usize, StateError> {
        let accounts: Vec<Address> = accounts
            .iter()
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .filter(|a| !self.accounts.contains_key(a))
            .collect();
        let slots: Vec<(Address, U256)> = slots
            .iter()
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .filter(|s| !self.storage.contains_key(s))
            .collect();
        let (provider, block) = (self.provider.clone(), self.block);
        let (a, s) = (accounts.clone(), slots.clone());
        let (infos, values) = self.wait(async move {
            let mut infos = tokio::task::JoinSet::new();
            for address in a {
                let p = provider.clone();
                infos.spawn(async move { (address, Self::fetch_account(p, block, address).await) });
            }
            let mut values = tokio::task::JoinSet::new();
            for (address, slot) in s {
                let p = provider.clone();
                values.spawn(async move { ((address, slot), Self::fetch_slot(p, block, address, slot).await) });
            }
            let (mut i, mut v) = (Vec::new(), Vec::new());
            while let Some(done) = infos.join_next().await {
                i.push(done.map_err(|e| StateError(e.to_string()))?);
            }
            while let Some(done) = values.join_next().await {
                v.push(done.map_err(|e| StateError(e.to_string()))?);
            }
            Ok((i, v))
        })?;
        for (address, info) in infos {
            self.remember(address, info?);
        }
        for (key, value) in values {
            self.storage.insert(key, value?);
        }
        Ok(accounts.len() + slots.len())
    }
}

impl StateSource for ForkedState {
    fn basic(&self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        if let Some(info) = self.accounts.get(&address) {
            return Ok(info.clone());
        }
        let (provider, block) = (self.provider.clone(), self.block);
        let info = self.wait(Self::fetch_account(provider, block, address))?;
        self.remember(address, info.clone());
        Ok(info)
    }

    fn account(&self, address: Address) -> Result<Option<crate::AccountState>, StateError> {
        // Cached: the fields only (no clone of the shared code, whose reference count two
        // workers would trade on every read).
        if let Some(info) = self.accounts.get(&address) {
            return Ok(info.value().as_ref().map(crate::overlay::lite));
        }
        Ok(self.basic(address)?.as_ref().map(crate::overlay::lite))
    }

    fn code_by_hash(&self, hash: B256) -> Result<Bytecode, StateError> {
        // Accounts carry their code, so a hash is only asked for after its account.
        self.code.get(&hash).map(|c| c.clone()).ok_or_else(|| StateError(format!("code {hash} not fetched")))
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError> {
        if let Some(value) = self.storage.get(&(address, slot)) {
            return Ok(*value);
        }
        let (provider, block) = (self.provider.clone(), self.block);
        let value = self.wait(Self::fetch_slot(provider, block, address, slot))?;
        self.storage.insert((address, slot), value);
        Ok(value)
    }

    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        if let Some(hash) = self.hashes.get(&number) {
            return Ok(*hash);
        }
        let provider = self.provider.clone();
        let hash = self.wait(async move {
            let block = provider
                .get_block_by_number(number.into())
                .await
                .map_err(|e| StateError(format!("block {number}: {e}")))?
                .ok_or_else(|| StateError(format!("block {number} not found")))?;
            Ok(block.header.hash)
        })?;
        self.hashes.insert(number, hash);
        Ok(hash)
    }

    fn prefetch(&self, accounts: &[Address], slots: &[(Address, U256)]) -> Result<usize, StateError> {
        ForkedState::prefetch(self, accounts, slots)
    }
}

/// What a (contract, selector) touched last time, to prefetch before the next batch.
#[derive(Debug, Default)]
pub struct AccessPredictor {
    learned: DashMap<(Address, [u8; 4]), AccessSet, FxBuildHasher>,
}

/// The accounts and slots one transaction touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessSet {
    /// Accounts loaded.
    pub accounts: Vec<Address>,
    /// Slots loaded.
    pub slots: Vec<(Address, U256)>,
}

impl AccessPredictor {
    /// An empty predictor.
    pub fn new() -> Self {
        Self::default()
    }

    fn key(tx: &TxEnv) -> Option<(Address, [u8; 4])> {
        let TxKind::Call(to) = tx.kind else { return None };
        let selector: [u8; 4] = tx.data.get(..4)?.try_into().ok()?;
        Some((to, selector))
    }

    /// Remembers what each transaction touched.
    pub fn learn(&self, txs: &[TxEnv], access: &[AccessSet]) {
        for (tx, set) in txs.iter().zip(access) {
            if let Some(key) = Self::key(tx) {
                self.learned.insert(key, set.clone());
            }
        }
    }

    /// What the batch will probably touch: each transaction's sender and target, plus
    /// what its (contract, selector) touched last time.
    pub fn predict(&self, txs: &[TxEnv]) -> AccessSet {
        let mut set = AccessSet::default();
        for tx in txs {
            set.accounts.push(tx.caller);
            if let TxKind::Call(to) = tx.kind {
                set.accounts.push(to);
            }
            if let Some(learned) = Self::key(tx).and_then(|k| self.learned.get(&k)) {
                set.accounts.extend(learned.accounts.iter().copied());
                set.slots.extend(learned.slots.iter().copied());
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use alloy::providers::ProviderBuilder;

    use super::*;

    #[test]
    fn an_unreachable_node_is_an_error_not_a_hang() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let provider = ProviderBuilder::new().connect_http("http://127.0.0.1:9".parse().unwrap()).erased();
        let fork = ForkedState::new(provider, runtime.handle().clone(), 1);
        assert_eq!(fork.block(), 1);
        assert!(fork.basic(Address::ZERO).is_err());
        assert!(fork.storage(Address::ZERO, U256::ZERO).is_err());
    }
}
