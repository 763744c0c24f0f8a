//! The parallel engine: Block-STM over the worker pool, then an ordered commit that
//! settles the lazily accounted balances and checks what speculation assumed.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

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

#[derive(Clone, Debug, PartialEq)]
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
    /// Its sender, nonce and up-front cost (what the settle checks a mocked sender
    /// against: the transaction itself may be out of its cell, running again).
    pub caller: Address,
    pub nonce: u64,
    pub upfront: U256,
}

/// Everything the workers share for one batch.
pub(crate) struct Batch {
    pub base: Arc<dyn StateSource>,
    pub ctx: BlockContext,
    /// The transactions, as given (each execution copies its own into the EVM).
    pub txs: Vec<TxEnv>,
    pub mv: MvMemory,
    pub scheduler: Scheduler,
    /// Accounts kept as deltas: the beneficiary and senders of several transactions.
    pub lazy: FxHashSet<Address>,
    /// Per transaction: its sender is lazy.
    pub lazy_sender: Vec<bool>,
    pub results: Vec<Mutex<Option<Executed>>>,
    /// What each executed transaction owes the beneficiary (read by explicit reads of
    /// the beneficiary's balance).
    pub fees: Vec<Mutex<Option<U256>>>,
    /// Nanoseconds each transaction's last execution took (the pool learns from them).
    pub nanos: Vec<std::sync::atomic::AtomicU64>,
    /// Code deployed by the batch.
    pub codes: std::sync::RwLock<FxHashMap<B256, Bytecode>>,
    pub fatal: Mutex<Option<StateError>>,
    /// Report what each transaction touched.
    pub record_access: bool,
    /// The ordered settle, advanced by the calling thread between its tasks.
    pub settle: Mutex<crate::commit::Settle>,
    /// How far the settle has gone (set under a result's lock, before taking it).
    pub settled: AtomicUsize,
    /// The lowest transaction whose result was stored again after it was settled
    /// (`usize::MAX`: none), where the settle must go back to at the end.
    pub resettle_from: AtomicUsize,
    /// When the batch was made (for the trace of how long workers took to start).
    pub created: std::time::Instant,
    /// The pool's workers in the batch.
    pub crew: crate::crew::Crew,
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
            fees: (0..n).map(|_| Mutex::new(None)).collect(),
            nanos: (0..n).map(|_| Default::default()).collect(),
            codes: Default::default(),
            fatal: Mutex::new(None),
            record_access: false,
            settle: Default::default(),
            settled: AtomicUsize::new(0),
            resettle_from: AtomicUsize::new(usize::MAX),
            created: std::time::Instant::now(),
            crew: Default::default(),
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
                    // Its own cell: the settle may have taken the result already.
                    let fee = self.fees[t].lock().ok().and_then(|f| *f);
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
///
/// The settler (the calling thread) also settles, between tasks, what is ready.
pub(crate) fn work(evm: &mut WorkerEvm, batch: &Arc<Batch>, codes: &mut CodeCache, settler: bool) -> usize {
    let mut executions = 0;
    let mut buffers = Buffers::default();
    attach(evm, batch, codes);
    let mut task: Option<Task> = None;
    // Scheduler calls in a row that found nothing to do.
    let mut idle = 0u32;
    loop {
        task = match task {
            Some(Task::Execute(version)) => execute(evm, batch, version, &mut buffers, &mut executions),
            Some(Task::Validate(version)) => validate(batch, version),
            None => {
                // Between tasks, not while idling: polling the settle's lines would slow
                // the worker that writes them.
                if settler
                    && idle == 0
                    && let Ok(mut settle) = batch.settle.try_lock()
                {
                    settle.advance(batch);
                }
                let next = batch.scheduler.next_task();
                if next.is_some() {
                    idle = 0;
                } else if batch.scheduler.done() {
                    break;
                } else {
                    // Nothing to take: back off, so that polling does not steal cycles
                    // and cache lines from the worker that has the work.
                    idle += 1;
                    if idle < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                next
            }
        };
    }
    detach(evm, codes);
    executions
}

/// Points the worker's EVM at `batch`, lending it the worker's code copies.
fn attach(evm: &mut WorkerEvm, batch: &Arc<Batch>, codes: &mut CodeCache) {
    evm.ctx.journaled_state.database = StateView::Parallel(Box::new(Speculation {
        batch: Arc::clone(batch),
        idx: 0,
        nonce: 0,
        mocked: None,
        read_mocked_balance: false,
        reads: Vec::with_capacity(16),
        cleared: Vec::with_capacity(4),
        codes: std::mem::take(codes),
    }));
}

/// Detaches the EVM from its batch, taking the code copies back.
fn detach(evm: &mut WorkerEvm, codes: &mut CodeCache) {
    if let StateView::Parallel(spec) = std::mem::take(&mut evm.ctx.journaled_state.database) {
        *codes = spec.codes;
    }
}

fn execute(
    evm: &mut WorkerEvm,
    batch: &Arc<Batch>,
    version: Version,
    buffers: &mut Buffers,
    executions: &mut usize,
) -> Option<Task> {
    let Version { idx, incarnation } = version;
    // A copy into the EVM's own, warm, transaction: moving the batch's transactions
    // into lockable cells first would write every one of them again, on cold lines.
    evm.ctx.tx.clone_from(&batch.txs[idx]);
    let mocked = batch.lazy_sender[idx].then_some(evm.ctx.tx.caller);
    let task = loop {
        *executions += 1;
        let nonce = evm.ctx.tx.nonce;
        if let StateView::Parallel(spec) = &mut evm.ctx.journaled_state.database {
            spec.idx = idx;
            spec.nonce = nonce;
            spec.mocked = mocked;
            spec.read_mocked_balance = false;
            spec.reads.clear();
            spec.cleared.clear();
        }
        let start = std::time::Instant::now();
        let run = evm::run_current(evm);
        batch.nanos[idx].store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let tx = &evm.ctx.tx;
        let StateView::Parallel(spec) = &mut evm.ctx.journaled_state.database else {
            break None;
        };
        match &run.result {
            Err(EVMError::Database(ViewError::Blocked(blocking))) => {
                // Parked: whichever worker takes it up again copies it afresh.
                let blocking = *blocking;
                if batch.scheduler.add_dependency(idx, blocking) {
                    return None;
                }
                // The blocker finished meanwhile: run again now.
                continue;
            }
            Err(EVMError::Database(ViewError::State(e))) => {
                batch.fail(e.clone());
                break None;
            }
            Err(EVMError::Database(ViewError::Idle)) => {
                batch.fail(StateError("executor view detached mid-run".into()));
                break None;
            }
            _ => {}
        }
        let read_mocked_balance = spec.read_mocked_balance;
        writes_of(batch, &run, mocked, &mut buffers.writes);
        std::mem::swap(&mut buffers.reads, &mut spec.reads);
        let access = batch.record_access.then(|| crate::commit::access_of(&run.state));
        let outcome = crate::commit::speculative_outcome(run.result, &run.state, batch.ctx.spec);
        let executed = match outcome {
            // An invalid transaction owes no fee (the run says zero).
            Ok(outcome) => Executed {
                outcome,
                fee: run.fee,
                mocked: mocked.is_some(),
                read_mocked_balance,
                access,
                caller: tx.caller,
                nonce: tx.nonce,
                upfront: upfront_cost(tx),
            },
            Err(e) => {
                batch.fail(StateError(e.to_string()));
                break None;
            }
        };
        crate::evm::recycle(evm, run.state);
        let wrote_new = batch.mv.record(idx, incarnation, &mut buffers.writes, &mut buffers.reads);
        if let Ok(mut fee) = batch.fees[idx].lock() {
            *fee = Some(executed.fee);
        }
        if let Ok(mut slot) = batch.results[idx].lock() {
            *slot = Some(executed);
        }
        // Settled already (the settle went past it, holding this lock): the settle must
        // go back to it at the end.
        if batch.settled.load(Ordering::SeqCst) > idx {
            batch.resettle_from.fetch_min(idx, Ordering::SeqCst);
        }
        break Some(wrote_new);
    };
    batch.scheduler.finish_execution(idx, incarnation, task?)
}

/// A worker's scratch buffers, reused from one execution to the next.
#[derive(Default)]
pub(crate) struct Buffers {
    reads: Vec<ReadItem>,
    writes: Vec<(Location, Value)>,
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
fn writes_of(batch: &Batch, run: &Run, mocked: Option<Address>, writes: &mut Vec<(Location, Value)>) {
    writes.clear();
    let beneficiary = batch.ctx.block.beneficiary;
    if run.result.is_ok() {
        for (address, account) in &run.state {
            if !account.is_touched() {
                continue;
            }
            // New code (a creation, an EIP-7702 delegation) is served to later
            // transactions from the batch's table.
            if let Some(code) = crate::commit::new_code(account)
                && let Ok(mut codes) = batch.codes.write()
            {
                codes.insert(account.info.code_hash, code);
            }
            let destroyed = account.is_selfdestructed();
            if destroyed || account.is_created() {
                // Every slot of its storage before this transaction now reads as zero.
                writes.push((Location::Cleared(*address), Value::Cleared));
            }
            if !destroyed {
                // A destroyed account's slots are gone with it (the clearing above says
                // so); a created one's are written after its clearing.
                for (slot, value) in account.changed_storage_slots() {
                    writes.push((Location::Storage(*address, *slot), Value::Storage(value.present_value)));
                }
            }
            let after = (!destroyed).then(|| lite(&account.info));
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
            if destroyed || account.is_created() || !crate::commit::unchanged(account, batch.ctx.spec) {
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
}

/// Whether a lazily accounted transaction's assumptions hold against the committed
/// state: the real balance covers what revm checks up front, the nonce is the one the
/// transaction carries, and nothing read the mocked balance.
pub(crate) fn lazy_assumptions_hold(executed: &Executed, committed: Option<AccountLite>) -> bool {
    if executed.read_mocked_balance {
        return false;
    }
    let account = committed.unwrap_or_default();
    account.nonce == executed.nonce && account.balance >= executed.upfront
}

/// What revm checks a sender's balance against before running a transaction.
fn upfront_cost(tx: &TxEnv) -> U256 {
    let blob_gas = U256::from(tx.blob_hashes.len() as u64 * revm::primitives::eip4844::GAS_PER_BLOB);
    U256::from(tx.gas_limit) * U256::from(tx.gas_price) + blob_gas * U256::from(tx.max_fee_per_blob_gas) + tx.value
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use revm::{bytecode::Bytecode, state::AccountInfo};

    use super::*;
    use crate::{Executor, ExecutorConfig, InMemoryState, bench, mv_memory::MvMemory};

    /// State in which one account's balance grows once `moved` is set: what a transaction
    /// reads can change between two of its executions.
    struct Shifting {
        inner: Arc<InMemoryState>,
        account: Address,
        moved: AtomicBool,
    }

    impl StateSource for Shifting {
        fn basic(&self, address: Address) -> Result<Option<AccountInfo>, StateError> {
            let mut info = self.inner.basic(address)?;
            if address == self.account
                && self.moved.load(Ordering::SeqCst)
                && let Some(info) = info.as_mut()
            {
                info.balance += U256::from(1_000_000);
            }
            Ok(info)
        }
        fn code_by_hash(&self, hash: B256) -> Result<Bytecode, StateError> {
            self.inner.code_by_hash(hash)
        }
        fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError> {
            self.inner.storage(address, slot)
        }
        fn block_hash(&self, number: u64) -> Result<B256, StateError> {
            self.inner.block_hash(number)
        }
    }

    #[test]
    fn a_transaction_executed_again_after_its_settle_sends_the_settle_back_to_it() {
        let f = bench::Fixture::new(16).unwrap_or_else(|e| panic!("fixture: {e}"));
        let nonces = f.nonces();
        let txs: Vec<TxEnv> = (0..6)
            .map(|i| {
                let to = f.accounts[i + 8];
                bench::call(f.accounts[i], nonces[i], to, revm::primitives::Bytes::new(), U256::from(7 + i), 21_000)
            })
            .collect();
        // Only transaction 2 pays this account.
        let state =
            Arc::new(Shifting { inner: f.state.clone(), account: f.accounts[10], moved: AtomicBool::new(false) });
        let mut mv = MvMemory::default();
        mv.prepare(txs.len());
        let batch =
            Arc::new(Batch::new(state.clone(), f.ctx.clone(), txs.clone(), mv).unwrap_or_else(|e| panic!("{e}")));
        let mut evm = evm::build(f.ctx.spec);
        evm::prepare(&mut evm, &f.ctx);
        let mut codes = CodeCache::default();
        work(&mut evm, &batch, &mut codes, true);
        // The settler settles between its tasks: nothing is left for the end.
        assert_eq!(batch.settled.load(Ordering::SeqCst), txs.len(), "everything settled during the run");
        assert_eq!(batch.resettle_from.load(Ordering::SeqCst), usize::MAX, "nothing ran again yet");

        // Transaction 2 fails a (late) validation and runs again, after its settle, to a
        // different result: what it read has changed.
        state.moved.store(true, Ordering::SeqCst);
        assert!(batch.scheduler.try_validation_abort(2, 0));
        batch.mv.convert_writes_to_estimates(2);
        let Some(Task::Execute(again)) = batch.scheduler.finish_validation(2, true) else {
            panic!("the aborted transaction is handed back for execution")
        };
        attach(&mut evm, &batch, &mut codes);
        execute(&mut evm, &batch, again, &mut Buffers::default(), &mut 0);
        detach(&mut evm, &mut codes);
        assert_eq!(batch.resettle_from.load(Ordering::SeqCst), 2, "its worker told the settle");

        let settle = std::mem::take(&mut *batch.settle.lock().unwrap_or_else(|e| panic!("{e}")));
        let (committed, stopped) = settle.finish(&batch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stopped, None);
        let executor =
            Executor::new(ExecutorConfig { workers: 1, min_parallel_batch: usize::MAX, record_access: false });
        let sequential = executor.execute_sequential(state, f.ctx.clone(), txs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(committed.outcomes, sequential.outcomes, "settled again, the batch is what sequential gives");
    }
}
