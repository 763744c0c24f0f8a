//! The parallel engine: Block-STM over the worker pool, then an ordered commit that
//! settles the lazily accounted balances and checks what speculation assumed.

use std::sync::{Arc, Mutex};

use revm::{
    bytecode::Bytecode,
    context::{TxEnv, result::EVMError},
    primitives::{Address, B256, KECCAK_EMPTY, U256},
};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::{
    BlockContext, StateError, StateSource,
    evm::{self, Run, WorkerEvm},
    mv_memory::{AccountLite, Location, MvMemory, ReadItem, TxIdx, Value},
    overlay::lite,
    scheduler::{Scheduler, Task, Version},
    view::{CodeCache, MOCK_BALANCE, Speculation, StateView, ViewError},
};

/// What the last incarnation of a transaction produced, outcome included (its diff is
/// exact once validated, except for lazy accounts, which the ordered settle patches).
pub(crate) struct Executed {
    pub outcome: crate::TxOutcome,
    /// What the beneficiary is owed (zero for an invalid transaction).
    pub fee: U256,
    /// It saw its sender's balance and nonce mocked.
    pub mocked: bool,
    /// It read the mocked balance explicitly (then speculation cannot stand).
    pub read_mocked_balance: bool,
    /// What it touched, when the pool records access.
    pub access: Option<crate::AccessSet>,
}

/// Everything the workers share for one batch.
pub(crate) struct Batch {
    pub base: Arc<dyn StateSource>,
    pub ctx: BlockContext,
    pub txs: Vec<TxEnv>,
    pub mv: MvMemory,
    pub scheduler: Scheduler,
    /// Accounts kept as deltas: the beneficiary and senders of several transactions.
    pub lazy: FxHashSet<Address>,
    /// Per transaction: its sender is lazy.
    pub lazy_sender: Vec<bool>,
    pub results: Vec<Mutex<Option<Executed>>>,
    /// Code deployed by the batch.
    pub codes: std::sync::RwLock<FxHashMap<B256, Bytecode>>,
    pub fatal: Mutex<Option<StateError>>,
    /// Report what each transaction touched.
    pub record_access: bool,
    /// The next shard of the multi-version memory to read the batch's changes off.
    next_shard: std::sync::atomic::AtomicUsize,
    /// What the workers read off it.
    pub pieces: Mutex<Vec<Piece>>,
}

/// Final values one worker read off the multi-version memory once the batch was done,
/// each list sorted by address (and slot).
#[derive(Default)]
pub(crate) struct Piece {
    /// Accounts whose fields were written: the last value, and the last transaction
    /// that destroyed the account (its earlier storage is gone).
    pub accounts: Vec<(Address, Option<AccountLite>, Option<TxIdx>)>,
    /// Slots written: the last value and its writer.
    pub slots: Vec<(Address, U256, U256, TxIdx)>,
}

impl Batch {
    /// A batch over `base`, using `mv` (prepared for it) as its multi-version memory.
    pub(crate) fn new(
        base: Arc<dyn StateSource>,
        ctx: BlockContext,
        txs: Vec<TxEnv>,
        mv: MvMemory,
    ) -> Result<Self, StateError> {
        let n = txs.len();
        let beneficiary = ctx.block.beneficiary;
        let mut count: FxHashMap<Address, usize> = FxHashMap::default();
        for tx in &txs {
            *count.entry(tx.caller).or_default() += 1;
        }
        // A sender is lazy when it sends several transactions, has no code, and no
        // transaction could give it some (EIP-7702).
        let delegations = txs.iter().any(|tx| !tx.authorization_list.is_empty());
        let mut lazy: FxHashSet<Address> = FxHashSet::default();
        lazy.insert(beneficiary);
        if !delegations {
            for (sender, _) in count.iter().filter(|(_, c)| **c > 1) {
                if base.account(*sender)?.is_none_or(|i| i.code_hash == KECCAK_EMPTY) {
                    lazy.insert(*sender);
                }
            }
        }
        let lazy_sender: Vec<bool> = txs.iter().map(|tx| lazy.contains(&tx.caller)).collect();
        for (idx, tx) in txs.iter().enumerate() {
            // A lazy sender's own transactions change it: readers wait for them. (Fees
            // owed to the beneficiary stay with each transaction's result instead: a
            // write per transaction to one location would be the hottest spot of all.)
            if lazy_sender[idx] && tx.caller != beneficiary {
                mv.seed_estimate(Location::Basic(tx.caller), idx);
            }
        }
        Ok(Self {
            base,
            ctx,
            scheduler: Scheduler::new(n),
            mv,
            lazy,
            lazy_sender,
            results: (0..n).map(|_| Mutex::new(None)).collect(),
            codes: Default::default(),
            fatal: Mutex::new(None),
            record_access: false,
            next_shard: Default::default(),
            pieces: Mutex::new(Vec::new()),
            txs,
        })
    }

    /// Code by hash: deployed in this batch, or from the base state.
    pub(crate) fn code(&self, hash: B256) -> Result<Bytecode, StateError> {
        let deployed = self.codes.read().ok().and_then(|codes| codes.get(&hash).cloned());
        match deployed {
            Some(code) => Ok(code),
            None => self.base.code_by_hash(hash),
        }
    }

    /// The full value of a lazy account below `idx`, or the transaction to wait for.
    pub(crate) fn lazy_value(
        &self,
        address: Address,
        idx: TxIdx,
    ) -> Result<Result<Option<AccountLite>, StateError>, TxIdx> {
        let sum = if address == self.ctx.block.beneficiary {
            self.beneficiary_sum(idx)?
        } else {
            self.mv.read_lazy(address, idx)?
        };
        let start = match sum.start {
            Some(value) => value,
            None => match self.base.account(address) {
                Ok(info) => info,
                Err(e) => return Ok(Err(e)),
            },
        };
        if start.is_none() && sum.add.is_zero() && sum.sub.is_zero() && sum.nonce.is_none() {
            return Ok(Ok(None));
        }
        let mut value = start.unwrap_or_else(AccountLite::empty);
        value.balance = value.balance + sum.add - sum.sub;
        if let Some(nonce) = sum.nonce {
            value.nonce = nonce;
        }
        Ok(Ok(Some(value)))
    }

    /// The beneficiary below `idx`: explicit writes from the multi-version memory, and
    /// between them the fees of every executed transaction (a transaction not executed
    /// yet blocks the read).
    fn beneficiary_sum(&self, idx: TxIdx) -> Result<crate::mv_memory::LazySum, TxIdx> {
        let beneficiary = self.ctx.block.beneficiary;
        let mut sum = crate::mv_memory::LazySum::default();
        for t in (0..idx).rev() {
            match self.mv.entry_at(&Location::Basic(beneficiary), t) {
                Some(Err(())) => return Err(t),
                Some(Ok(value)) if sum.absorb(&value) => break,
                Some(Ok(_)) => {}
                None => {
                    if !self.scheduler.is_executed(t) {
                        return Err(t);
                    }
                    let fee = self.results[t].lock().ok().and_then(|r| r.as_ref().map(|e| e.fee));
                    sum.add += fee.ok_or(t)?;
                }
            }
        }
        Ok(sum)
    }

    fn fail(&self, error: StateError) {
        if let Ok(mut fatal) = self.fatal.lock() {
            fatal.get_or_insert(error);
        }
        self.scheduler.halt();
    }
}

/// A worker's share of a batch: take tasks until the scheduler says done. Returns how
/// many executions it ran (counted per worker: a shared counter is a contended line).
pub(crate) fn work(evm: &mut WorkerEvm, batch: &Arc<Batch>, codes: &mut CodeCache) -> usize {
    let mut executions = 0;
    let mut reads: Vec<ReadItem> = Vec::with_capacity(16);
    evm.ctx.journaled_state.database = StateView::Parallel(Box::new(Speculation {
        batch: Arc::clone(batch),
        idx: 0,
        mocked: None,
        read_mocked_balance: false,
        reads: Vec::with_capacity(16),
        served: Vec::with_capacity(8),
        codes: std::mem::take(codes),
    }));
    let mut task: Option<Task> = None;
    let mut idle = 0u32;
    loop {
        task = match task {
            Some(Task::Execute(version)) => execute(evm, batch, version, &mut reads, &mut executions),
            Some(Task::Validate(version)) => validate(batch, version),
            None => batch.scheduler.next_task(),
        };
        if task.is_none() {
            if batch.scheduler.done() {
                break;
            }
            // Nothing to take: back off, so that polling does not steal cycles and
            // cache lines from the worker that has the work.
            idle += 1;
            if idle < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        } else {
            idle = 0;
        }
    }
    if let StateView::Parallel(spec) = std::mem::take(&mut evm.ctx.journaled_state.database) {
        *codes = spec.codes;
    }
    let t = std::time::Instant::now();
    if batch.fatal.lock().is_ok_and(|f| f.is_none()) {
        read_off(batch);
    }
    tracing::trace!(executions, read_off = ?t.elapsed(), "worker done");
    executions
}

/// Once the batch is done: takes shards of the multi-version memory until none is left,
/// reading off each location's final value (the lazy accounts' come from the settle).
fn read_off(batch: &Batch) {
    let mut piece = Piece::default();
    loop {
        let shard = batch.next_shard.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if shard >= batch.mv.shard_count() {
            break;
        }
        batch.mv.for_each_in(shard, |location, versions| {
            let Some((writer, Ok(value))) = versions.last() else { return };
            match (location, value) {
                (Location::Storage(address, slot), Value::Storage(v)) => {
                    piece.slots.push((*address, *slot, *v, writer))
                }
                (Location::Basic(address), Value::Basic(info)) => {
                    piece.accounts.push((*address, *info, versions.last_destroyed()));
                }
                (Location::Basic(address), _) => piece.accounts.push((*address, None, versions.last_destroyed())),
                _ => {}
            }
        });
    }
    piece.accounts.sort_unstable_by_key(|(address, ..)| *address);
    piece.slots.sort_unstable_by_key(|(address, slot, ..)| (*address, *slot));
    if let Ok(mut pieces) = batch.pieces.lock() {
        pieces.push(piece);
    }
}

fn execute(
    evm: &mut WorkerEvm,
    batch: &Arc<Batch>,
    version: Version,
    reads: &mut Vec<ReadItem>,
    executions: &mut usize,
) -> Option<Task> {
    let Version { idx, incarnation } = version;
    let tx = &batch.txs[idx];
    let mocked = batch.lazy_sender[idx].then_some(tx.caller);
    loop {
        *executions += 1;
        if let StateView::Parallel(spec) = &mut evm.ctx.journaled_state.database {
            spec.idx = idx;
            spec.mocked = mocked;
            spec.read_mocked_balance = false;
            spec.reads.clear();
            spec.served.clear();
        }
        let run = evm::run(evm, tx.clone());
        let StateView::Parallel(spec) = &mut evm.ctx.journaled_state.database else {
            return None;
        };
        match &run.result {
            Err(EVMError::Database(ViewError::Blocked(blocking))) => {
                if batch.scheduler.add_dependency(idx, *blocking) {
                    return None;
                }
                continue; // the blocker finished meanwhile: run again now
            }
            Err(EVMError::Database(ViewError::State(e))) => {
                batch.fail(e.clone());
                return None;
            }
            Err(EVMError::Database(ViewError::Idle)) => {
                batch.fail(StateError("executor view detached mid-run".into()));
                return None;
            }
            _ => {}
        }
        let read_mocked_balance = spec.read_mocked_balance;
        let writes = writes_of(batch, &run, &spec.served, mocked);
        std::mem::swap(reads, &mut spec.reads);
        let access = batch.record_access.then(|| crate::commit::access_of(&run.state));
        let executed = match crate::commit::speculative_outcome(run, &spec.served) {
            Ok((outcome, fee)) => Executed { outcome, fee, mocked: mocked.is_some(), read_mocked_balance, access },
            Err(e) => {
                batch.fail(StateError(e.to_string()));
                return None;
            }
        };
        let mut writes = writes;
        let wrote_new = batch.mv.record(idx, incarnation, &mut writes, reads);
        if let Ok(mut slot) = batch.results[idx].lock() {
            *slot = Some(executed);
        }
        return batch.scheduler.finish_execution(idx, incarnation, wrote_new);
    }
}

fn validate(batch: &Arc<Batch>, version: Version) -> Option<Task> {
    let valid =
        batch.mv.validate(version.idx, |address| batch.lazy_value(address, version.idx).ok().and_then(Result::ok));
    let aborted = !valid && batch.scheduler.try_validation_abort(version.idx, version.incarnation);
    if aborted {
        batch.mv.convert_writes_to_estimates(version.idx);
    }
    batch.scheduler.finish_validation(version.idx, aborted)
}

/// The locations an incarnation wrote, with their values. Only real changes count:
/// an account merely called is read, not written.
fn writes_of(
    batch: &Batch,
    run: &Run,
    served: &[(Address, Option<AccountLite>)],
    mocked: Option<Address>,
) -> Vec<(Location, Value)> {
    let mut writes = Vec::with_capacity(8);
    let beneficiary = batch.ctx.block.beneficiary;
    if run.result.is_ok() {
        for (address, account) in &run.state {
            if !account.is_touched() {
                continue;
            }
            if let Some(code) = &account.info.code
                && account.is_created()
                && let Ok(mut codes) = batch.codes.write()
            {
                codes.insert(account.info.code_hash, code.clone());
            }
            for (slot, value) in account.changed_storage_slots() {
                writes.push((Location::Storage(*address, *slot), Value::Storage(value.present_value)));
            }
            let after = (!account.is_selfdestructed()).then(|| lite(&account.info));
            let before = served.iter().find(|(a, _)| a == address).map(|(_, v)| *v);
            if Some(*address) == mocked {
                // Settled at commit: keep the change, not the mocked absolute value.
                let (add, sub) = mock_change(after.map_or(U256::ZERO, |a| a.balance));
                let fee = if *address == beneficiary { run.fee } else { U256::ZERO };
                writes.push((
                    Location::Basic(*address),
                    Value::Delta { add: add + fee, sub, nonce: after.map(|a| a.nonce) },
                ));
                continue;
            }
            if *address == beneficiary {
                let value = after.map(|mut a| {
                    a.balance += run.fee;
                    a
                });
                writes.push((Location::Basic(*address), Value::Basic(value)));
                continue;
            }
            if before != Some(after) || account.is_created() {
                writes.push((Location::Basic(*address), Value::Basic(after)));
            }
        }
    }
    if let Some(sender) = mocked
        && !run.state.contains_key(&sender)
        && sender != beneficiary
    {
        // An invalid transaction changes nothing, but its seeded estimate must go.
        writes.push((Location::Basic(sender), Value::Delta { add: U256::ZERO, sub: U256::ZERO, nonce: None }));
    }
    writes
}

/// Whether a lazily accounted transaction's assumptions hold against the committed
/// state: the real balance covers what revm checks up front, the nonce is the one the
/// transaction carries, and nothing read the mocked balance.
pub(crate) fn lazy_assumptions_hold(tx: &TxEnv, read_mocked_balance: bool, committed: Option<AccountLite>) -> bool {
    if read_mocked_balance {
        return false;
    }
    let account = committed.unwrap_or_default();
    if account.nonce != tx.nonce {
        return false;
    }
    let blob_gas = U256::from(tx.blob_hashes.len() as u64 * revm::primitives::eip4844::GAS_PER_BLOB);
    let upfront =
        U256::from(tx.gas_limit) * U256::from(tx.gas_price) + blob_gas * U256::from(tx.max_fee_per_blob_gas) + tx.value;
    account.balance >= upfront
}

/// A mocked sender's balance after the transaction: the real balance before it plus the
/// change the transaction made to the mock.
pub(crate) fn settle_mocked(a: &mut AccountLite, before: Option<AccountLite>) {
    let (add, sub) = mock_change(a.balance);
    a.balance = before.map_or(U256::ZERO, |b| b.balance) + add - sub;
}

/// What a transaction did to a mocked balance, as (added, taken).
fn mock_change(balance: U256) -> (U256, U256) {
    if balance >= MOCK_BALANCE { (balance - MOCK_BALANCE, U256::ZERO) } else { (U256::ZERO, MOCK_BALANCE - balance) }
}
