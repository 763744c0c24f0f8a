//! State forked from a live chain at a pinned block, read through the caller's provider
//! (its transport: timeouts, retries, metrics) with a cache shared by every worker, and
//! prefetching of what the same (contract, selector) touched before.
//!
//! A fork follows its chain: [`ForkedState::follow`] moves to a later block keeping the
//! codes (immutable by hash, and an account's code with it while its nonce stays) and
//! the keys the last block's batches read (through a diff laid over the fork as well),
//! which the next prefetch re-reads at the new block together with what that round
//! predicts, in one batched request. A round's own slots
//! ([`ForkedState::prefetch_round`]) are not carried. In steady state a round costs a
//! constant number of round trips, not one per read.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use alloy::{
    eips::BlockId,
    primitives::U64,
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
/// Calls per batched request at most (a node may cap a batch; anvil takes far more).
const MAX_BATCH: usize = 1_000;

/// A cached value, whether a batch read it, and whether to carry it to the next block
/// once read (what is read is carried, except one round's own slots: see
/// [`ForkedState::prefetch_round`]).
#[derive(Debug)]
struct Cached<T> {
    value: T,
    read: AtomicBool,
    carry: bool,
}

impl<T: Clone> Cached<T> {
    fn new(value: T, read: bool) -> Self {
        Self { value, read: AtomicBool::new(read), carry: true }
    }

    fn carried(&self) -> bool {
        self.carry && self.read.load(Ordering::Relaxed)
    }

    fn take(&self) -> T {
        if !self.read.load(Ordering::Relaxed) {
            self.read.store(true, Ordering::Relaxed);
        }
        self.value.clone()
    }
}

/// An account's code as last seen, kept while its nonce stays: code changes only with
/// the nonce (creation, EIP-7702 delegation; a self-destructed account loses its nonce).
#[derive(Debug, Clone)]
struct KnownCode {
    nonce: u64,
    hash: B256,
    code: Bytecode,
}

/// How the reads of a fork were answered.
#[derive(Debug, Default)]
struct ReadCounts {
    cache: AtomicU64,
    rpc: AtomicU64,
    batched: AtomicU64,
    batches: AtomicU64,
}

/// Reads answered so far: from the cache, by a round trip of their own, and fetched in
/// batched requests (prefetches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateReads {
    /// Reads the cache answered.
    pub cache: u64,
    /// Reads that went to the node on their own, one round trip each.
    pub rpc: u64,
    /// Calls sent in batched requests.
    pub batched: u64,
    /// Batched requests sent.
    pub batches: u64,
}

/// A chain's state at one block, read over RPC on first use and cached.
pub struct ForkedState {
    provider: DynProvider,
    runtime: Handle,
    block: u64,
    accounts: DashMap<Address, Cached<Option<AccountInfo>>, FxBuildHasher>,
    storage: DashMap<(Address, U256), Cached<U256>, FxBuildHasher>,
    /// Codes by hash: immutable, shared along the chain.
    code: Arc<DashMap<B256, Bytecode, FxBuildHasher>>,
    /// Accounts' codes at the previous block, reused while the nonce stays.
    known_code: DashMap<Address, KnownCode, FxBuildHasher>,
    hashes: DashMap<u64, B256, FxBuildHasher>,
    /// What the previous block's batches read, re-read with the first prefetch.
    carried: Mutex<Option<AccessSet>>,
    reads: ReadCounts,
    /// Slots read on demand (not prefetched), for the caller to learn from.
    missed: Mutex<Vec<(Address, U256)>>,
    /// Accounts (`None`) and slots read through a diff laid over this fork, carried
    /// like the ones read here (see [`StateSource::read_above`]).
    above: DashMap<(Address, Option<U256>), (), FxBuildHasher>,
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
            code: Arc::default(),
            known_code: DashMap::default(),
            hashes: DashMap::default(),
            carried: Mutex::new(None),
            reads: ReadCounts::default(),
            missed: Mutex::new(Vec::new()),
            above: DashMap::default(),
        }
    }

    /// The same chain at `block` (a later block, or another fork's after a reorg): keeps
    /// the codes, and carries the accounts and slots this fork's batches read (here or
    /// through a diff laid over it; not a round's own slots) so that the first prefetch
    /// at `block` re-reads them with the rest, in batched requests. No value is carried:
    /// every balance, nonce and slot is read again at `block`.
    pub fn follow(&self, block: u64) -> Self {
        let mut accounts: Vec<Address> =
            self.accounts.iter().filter(|e| e.value().carried()).map(|e| *e.key()).collect();
        let mut slots: Vec<(Address, U256)> =
            self.storage.iter().filter(|e| e.value().carried()).map(|e| *e.key()).collect();
        // What a diff laid over this fork answered (values our transactions in flight
        // wrote): once they are mined, the next block's batches read it here.
        for entry in self.above.iter() {
            match *entry.key() {
                (address, None) => accounts.push(address),
                (address, Some(slot)) => slots.push((address, slot)),
            }
        }
        let known_code = DashMap::default();
        for entry in self.accounts.iter() {
            if let Some(info) = &entry.value().value
                && let Some(code) = &info.code
            {
                let known = KnownCode { nonce: info.nonce, hash: info.code_hash, code: code.clone() };
                known_code.insert(*entry.key(), known);
            }
        }
        let mut next = Self::new(self.provider.clone(), self.runtime.clone(), block);
        next.code = Arc::clone(&self.code);
        next.known_code = known_code;
        next.carried = Mutex::new(Some(AccessSet { accounts, slots }));
        next
    }

    /// The pinned block.
    pub fn block(&self) -> u64 {
        self.block
    }

    /// How this fork's reads were answered so far.
    pub fn reads(&self) -> StateReads {
        StateReads {
            cache: self.reads.cache.load(Ordering::Relaxed),
            rpc: self.reads.rpc.load(Ordering::Relaxed),
            batched: self.reads.batched.load(Ordering::Relaxed),
            batches: self.reads.batches.load(Ordering::Relaxed),
        }
    }

    /// The slots read on demand since the last call: what a prefetch did not foresee.
    pub fn take_missed_slots(&self) -> Vec<(Address, U256)> {
        self.missed.lock().map(|mut m| std::mem::take(&mut *m)).unwrap_or_default()
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
        Ok(account_info(balance, nonce, Some(&code), None))
    }

    async fn fetch_slot(provider: DynProvider, block: u64, address: Address, slot: U256) -> Result<U256, StateError> {
        provider
            .get_storage_at(address, slot)
            .block_id(BlockId::number(block))
            .await
            .map_err(|e| StateError(format!("slot {slot} of {address} at {block}: {e}")))
    }

    fn remember(&self, address: Address, info: Option<AccountInfo>, read: bool) {
        if let Some(info) = &info
            && let Some(code) = &info.code
        {
            self.code.entry(info.code_hash).or_insert_with(|| code.clone());
        }
        self.accounts.insert(address, Cached::new(info, read));
    }

    /// Fetches whatever of `accounts` and `slots` (and of what the previous block's
    /// batches read) is not cached yet, in batched requests. Returns how many values it
    /// fetched.
    pub fn prefetch(&self, accounts: &[Address], slots: &[(Address, U256)]) -> Result<usize, StateError> {
        self.prefetch_round(accounts, slots, &[])
    }

    /// [`prefetch`](Self::prefetch) with `round_slots` as well: slots that follow from
    /// this round's own inputs (a message's `delivered[id]` entry, its recipient's
    /// balance), fetched in the same requests but not carried to the next block even once
    /// read. The next round derives its own; carried, each round's would be re-read at
    /// the next block for nothing, doubling the request.
    pub fn prefetch_round(
        &self,
        accounts: &[Address],
        slots: &[(Address, U256)],
        round_slots: &[(Address, U256)],
    ) -> Result<usize, StateError> {
        let carried = self.carried.lock().ok().and_then(|mut c| c.take()).unwrap_or_default();
        let accounts: Vec<Address> = accounts
            .iter()
            .chain(&carried.accounts)
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .filter(|a| !self.accounts.contains_key(a))
            .collect();
        let lasting: HashSet<(Address, U256)> = slots.iter().chain(&carried.slots).copied().collect();
        // A round's slot that something else asks for too (last block's batches read it)
        // stays carried.
        let once: HashSet<(Address, U256)> = round_slots.iter().copied().filter(|s| !lasting.contains(s)).collect();
        let slots: Vec<(Address, U256)> =
            lasting.iter().chain(&once).copied().filter(|s| !self.storage.contains_key(s)).collect();
        if accounts.is_empty() && slots.is_empty() {
            return Ok(0);
        }
        let known: Vec<Option<KnownCode>> =
            accounts.iter().map(|a| self.known_code.get(a).map(|k| k.value().clone())).collect();
        let (provider, block) = (self.provider.clone(), self.block);
        let (a, s) = (accounts.clone(), slots.clone());
        let (fetched, calls, batches) = self.wait(fetch_batched(provider, block, a, known, s))?;
        self.reads.batched.fetch_add(calls, Ordering::Relaxed);
        self.reads.batches.fetch_add(batches, Ordering::Relaxed);
        let (infos, values) = fetched;
        for (address, info) in infos {
            self.remember(address, info, false);
        }
        for (key, value) in values {
            let carry = !once.contains(&key);
            self.storage.insert(key, Cached { carry, ..Cached::new(value, false) });
        }
        Ok(accounts.len() + slots.len())
    }
}

/// An account from what the node said (`None`: it does not exist). `code` is what
/// eth_getCode said; without it, `known` is the code kept from an earlier block.
fn account_info(balance: U256, nonce: u64, code: Option<&Bytes>, known: Option<&KnownCode>) -> Option<AccountInfo> {
    let (hash, bytecode) = match (code, known) {
        (Some(code), _) if code.is_empty() => (KECCAK_EMPTY, Bytecode::default()),
        (Some(code), _) => (keccak256(code), Bytecode::new_raw(code.clone())),
        (None, Some(known)) => (known.hash, known.code.clone()),
        (None, None) => (KECCAK_EMPTY, Bytecode::default()),
    };
    if balance.is_zero() && nonce == 0 && hash == KECCAK_EMPTY {
        return None;
    }
    let mut info = AccountInfo::default().with_code_hash(hash);
    info.balance = balance;
    info.nonce = nonce;
    info.code = Some(bytecode);
    Some(info)
}

/// What one prefetch fetched: accounts, slots; calls and requests it took.
type Fetched = ((Vec<(Address, Option<AccountInfo>)>, Vec<((Address, U256), U256)>), u64, u64);

/// Fetches `accounts` (balance and nonce, and the code unless `known` holds it at the
/// same nonce) and `slots` at `block` in batched requests of at most [`MAX_BATCH`] calls.
async fn fetch_batched(
    provider: DynProvider,
    block: u64,
    accounts: Vec<Address>,
    known: Vec<Option<KnownCode>>,
    slots: Vec<(Address, U256)>,
) -> Result<Fetched, StateError> {
    let at = BlockId::number(block);
    let rpc = |what: &str, e: alloy::transports::TransportError| StateError(format!("{what} at {block}: {e}"));
    let (mut calls, mut requests) = (0u64, 0u64);
    // Balances and nonces, and the slots.
    let mut heads: Vec<(U256, u64)> = Vec::with_capacity(accounts.len());
    let mut values: Vec<((Address, U256), U256)> = Vec::with_capacity(slots.len());
    let account_calls = accounts.iter().map(|a| Call::Account(*a));
    let slot_calls = slots.iter().map(|(a, s)| Call::Slot(*a, *s));
    let all: Vec<Call> = account_calls.chain(slot_calls).collect();
    for part in all.chunks(MAX_BATCH) {
        let mut batch = alloy::rpc::client::BatchRequest::new(provider.client());
        let mut waiters = Vec::with_capacity(part.len());
        for call in part {
            let waiter = match call {
                Call::Account(address) => {
                    let balance = batch.add_call::<_, U256>("eth_getBalance", &(address, at));
                    let nonce = batch.add_call::<_, U64>("eth_getTransactionCount", &(address, at));
                    Waiting::Account(balance.map_err(|e| rpc("balance", e))?, nonce.map_err(|e| rpc("nonce", e))?)
                }
                Call::Slot(address, slot) => {
                    let value = batch.add_call::<_, U256>("eth_getStorageAt", &(address, slot, at));
                    Waiting::Slot(*address, *slot, value.map_err(|e| rpc("slot", e))?)
                }
            };
            calls += if matches!(call, Call::Account(_)) { 2 } else { 1 };
            waiters.push(waiter);
        }
        requests += 1;
        batch.send().await.map_err(|e| rpc("batch", e))?;
        for waiter in waiters {
            match waiter {
                Waiting::Account(balance, nonce) => {
                    let balance = balance.await.map_err(|e| rpc("balance", e))?;
                    let nonce = nonce.await.map_err(|e| rpc("nonce", e))?;
                    heads.push((balance, nonce.to::<u64>()));
                }
                Waiting::Slot(address, slot, value) => {
                    values.push(((address, slot), value.await.map_err(|e| rpc("slot", e))?));
                }
            }
        }
    }
    // Codes: only where no code is kept at the nonce the node says now.
    let stale: Vec<usize> =
        (0..accounts.len()).filter(|i| known[*i].as_ref().is_none_or(|k| k.nonce != heads[*i].1)).collect();
    let mut codes: Vec<Option<Bytes>> = vec![None; accounts.len()];
    for part in stale.chunks(MAX_BATCH) {
        let mut batch = alloy::rpc::client::BatchRequest::new(provider.client());
        let mut waiters = Vec::with_capacity(part.len());
        for i in part {
            let waiter = batch.add_call::<_, Bytes>("eth_getCode", &(accounts[*i], at)).map_err(|e| rpc("code", e))?;
            waiters.push((*i, waiter));
        }
        calls += part.len() as u64;
        requests += 1;
        batch.send().await.map_err(|e| rpc("batch", e))?;
        for (i, waiter) in waiters {
            codes[i] = Some(waiter.await.map_err(|e| rpc("code", e))?);
        }
    }
    let infos = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| (*a, account_info(heads[i].0, heads[i].1, codes[i].as_ref(), known[i].as_ref())))
        .collect();
    Ok(((infos, values), calls, requests))
}

/// One read of a prefetch.
enum Call {
    Account(Address),
    Slot(Address, U256),
}

/// The answers a batched request will fill.
enum Waiting {
    Account(alloy::rpc::client::Waiter<U256>, alloy::rpc::client::Waiter<U64>),
    Slot(Address, U256, alloy::rpc::client::Waiter<U256>),
}

impl StateSource for ForkedState {
    fn basic(&self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        if let Some(info) = self.accounts.get(&address) {
            self.reads.cache.fetch_add(1, Ordering::Relaxed);
            return Ok(info.take());
        }
        self.reads.rpc.fetch_add(1, Ordering::Relaxed);
        let (provider, block) = (self.provider.clone(), self.block);
        let info = self.wait(Self::fetch_account(provider, block, address))?;
        self.remember(address, info.clone(), true);
        Ok(info)
    }

    fn account(&self, address: Address) -> Result<Option<crate::AccountState>, StateError> {
        // Cached: the fields only (no clone of the shared code, whose reference count two
        // workers would trade on every read).
        if let Some(info) = self.accounts.get(&address) {
            self.reads.cache.fetch_add(1, Ordering::Relaxed);
            info.read.store(true, Ordering::Relaxed);
            return Ok(info.value.as_ref().map(crate::overlay::lite));
        }
        Ok(self.basic(address)?.as_ref().map(crate::overlay::lite))
    }

    fn code_by_hash(&self, hash: B256) -> Result<Bytecode, StateError> {
        // Accounts carry their code, so a hash is only asked for after its account.
        self.code.get(&hash).map(|c| c.clone()).ok_or_else(|| StateError(format!("code {hash} not fetched")))
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError> {
        if let Some(value) = self.storage.get(&(address, slot)) {
            self.reads.cache.fetch_add(1, Ordering::Relaxed);
            return Ok(value.take());
        }
        self.reads.rpc.fetch_add(1, Ordering::Relaxed);
        let (provider, block) = (self.provider.clone(), self.block);
        let value = self.wait(Self::fetch_slot(provider, block, address, slot))?;
        self.storage.insert((address, slot), Cached::new(value, true));
        if let Ok(mut missed) = self.missed.lock() {
            missed.push((address, slot));
        }
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

    fn read_above(&self, address: Address, slot: Option<U256>) {
        self.above.insert((address, slot), ());
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
