//! Turning executions into outcomes: the ordered commit of the parallel engine, and
//! plain sequential execution (small batches, fallbacks, and the sampled re-check).

use std::sync::Arc;

use revm::{
    context::{
        TxEnv,
        result::{EVMError, ExecutionResult, Output},
    },
    primitives::{Address, Bytes, KECCAK_EMPTY, U256, hardfork::SpecId},
};
use rustc_hash::FxHashMap;

use crate::{
    AccountDiff, AccountState, BlockContext, ExecutorError, StateDiff, StateError, StateSource, TxOutcome, TxStatus,
    evm::{self, WorkerEvm},
    mv_memory::AccountLite,
    overlay::{Overlay, credit_fee, lite},
    parallel::{Batch, Executed, lazy_assumptions_hold, settle_mocked},
    view::{StateView, ViewError},
};

/// Outcomes of a run of transactions.
pub(crate) struct Committed {
    pub outcomes: Vec<TxOutcome>,
    /// What each transaction touched, when asked for.
    pub access: Vec<crate::AccessSet>,
    /// Seconds each transaction took to execute (sequential runs only: the pool learns
    /// from them).
    pub seconds: Vec<f64>,
}

/// The ordered settle of a parallel batch, done as far as it can go while the batch
/// still runs (by the calling thread, between its tasks) and finished at the end.
///
/// It settles in order: checks each lazily accounted sender's assumptions against the
/// running real balance and patches the lazy accounts (senders' balances, the
/// beneficiary's fees) into the outcomes. A transaction settled early may be executed
/// again afterwards; its new result then sits in its slot again, and the final pass
/// settles again from the first such transaction, putting back the results it had
/// settled after it (each settle can be undone).
#[derive(Default)]
pub(crate) struct Settle {
    /// The next transaction to settle.
    next: usize,
    outcomes: Vec<TxOutcome>,
    /// Per settled transaction: how to undo its settle.
    undo: Vec<Undo>,
    /// The beneficiary as settled so far (`None` until read from the base).
    paid: Option<Option<AccountLite>>,
    /// Lazy senders as settled so far.
    senders: FxHashMap<Address, Option<AccountLite>>,
}

/// What settling one transaction changed in its outcome, and the rest of its result.
struct Undo {
    /// The result without its outcome (settled, it is in the list).
    executed: Settled,
    /// The sender's mocked balance, replaced by the real one.
    mocked_balance: Option<U256>,
    /// The beneficiary's entry before its fee was credited: absent, or its fields.
    beneficiary: Option<Option<Option<AccountState>>>,
}

impl Settle {
    /// Settles what is ready, in order, without waiting: stops at a transaction not
    /// executed, not validated yet, or whose lazy assumptions do not hold (yet).
    pub(crate) fn advance(&mut self, batch: &Batch) {
        while self.next < batch.txs.len()
            && batch.scheduler.is_executed(self.next)
            && batch.scheduler.validated_past(self.next)
        {
            match self.try_step(batch) {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
        }
    }

    /// Settles transaction `self.next` if its result is there and its assumptions hold.
    fn try_step(&mut self, batch: &Batch) -> Result<bool, ExecutorError> {
        let idx = self.next;
        let beneficiary = batch.ctx.block.beneficiary;
        let mut paid = match self.paid {
            Some(paid) => paid,
            None => *self.paid.insert(batch.base.account(beneficiary)?),
        };
        let mut slot = batch.results[idx].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(executed) = slot.as_ref() else { return Ok(false) };
        let valid = !matches!(executed.outcome.status, TxStatus::Invalid { .. });
        let mut before = None;
        if valid && executed.mocked {
            let caller = executed.caller;
            let sender = if caller == beneficiary {
                paid
            } else {
                match self.senders.get(&caller) {
                    Some(value) => *value,
                    None => batch.base.account(caller)?,
                }
            };
            if !lazy_assumptions_hold(executed, sender) {
                return Ok(false);
            }
            before = Some(sender);
        }
        // Before taking it, under its lock: a worker storing a new result after this
        // sees that it was settled.
        batch.settled.store(idx + 1, std::sync::atomic::Ordering::SeqCst);
        let Some(executed) = slot.take() else { return Ok(false) };
        drop(slot);
        let Executed { mut outcome, fee, mocked, read_mocked_balance, access, caller, nonce, upfront } = executed;
        let mut undo = Undo {
            executed: Settled { fee, mocked, read_mocked_balance, access, caller, nonce, upfront },
            mocked_balance: None,
            beneficiary: None,
        };
        if valid {
            if let Some(sender) = before
                && let Some(info) = outcome.state.get_mut(&caller).and_then(|e| e.info.as_mut())
            {
                undo.mocked_balance = Some(info.balance);
                settle_mocked(info, sender);
            }
            follow_lazy(batch, &outcome.state, &mut paid, &mut self.senders);
            let credited_over = outcome.state.get(&beneficiary).map(|e| e.info);
            if let Some(after) = credit_fee(beneficiary, paid, fee, batch.ctx.spec, &mut outcome.state) {
                paid = Some(after);
                undo.beneficiary = Some(credited_over);
            }
        }
        self.paid = Some(paid);
        if self.outcomes.capacity() == 0 {
            self.outcomes.reserve(batch.txs.len());
            self.undo.reserve(batch.txs.len());
        }
        self.outcomes.push(outcome);
        self.undo.push(undo);
        self.next += 1;
        Ok(true)
    }

    /// Undoes the settle from `idx` on: the results of the transactions that were not
    /// executed again go back to their slots (one that was holds its new result), and
    /// the running values are rebuilt from the outcomes before `idx`.
    fn rewind(&mut self, batch: &Batch, idx: usize) -> Result<(), StateError> {
        let beneficiary = batch.ctx.block.beneficiary;
        let outcomes = self.outcomes.split_off(idx);
        let undos = self.undo.split_off(idx);
        for (at, (outcome, undo)) in outcomes.into_iter().zip(undos).enumerate() {
            let mut slot = batch.results[idx + at].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(undo.restore(outcome, beneficiary));
            }
        }
        self.next = idx;
        batch.settled.store(idx, std::sync::atomic::Ordering::SeqCst);
        self.senders.clear();
        let mut paid = batch.base.account(beneficiary)?;
        for outcome in &self.outcomes {
            follow_lazy(batch, &outcome.state, &mut paid, &mut self.senders);
        }
        self.paid = Some(paid);
        Ok(())
    }

    /// Finishes the settle once the batch is done. Returns the settled outcomes and, if
    /// a lazy assumption failed, the first transaction to re-run one by one.
    pub(crate) fn finish(mut self, batch: &Batch) -> Result<(Committed, Option<usize>), ExecutorError> {
        // A transaction executed again after it was settled (its worker said so).
        let again = batch.resettle_from.load(std::sync::atomic::Ordering::SeqCst);
        if again < self.next {
            self.rewind(batch, again)?;
        }
        let stopped = loop {
            if self.next == batch.txs.len() {
                break None;
            }
            if !self.try_step(batch)? {
                break Some(self.next);
            }
        };
        let access = self.undo.into_iter().filter_map(|u| u.executed.access).collect();
        Ok((Committed { outcomes: self.outcomes, access, seconds: Vec::new() }, stopped))
    }
}

/// Takes in the lazy accounts of one settled diff: the beneficiary into `paid`, lazy
/// senders into `senders`.
fn follow_lazy(
    batch: &Batch,
    diff: &StateDiff,
    paid: &mut Option<AccountLite>,
    senders: &mut FxHashMap<Address, Option<AccountLite>>,
) {
    let beneficiary = batch.ctx.block.beneficiary;
    if batch.lazy.len() == 1 {
        // Only the beneficiary is lazy (the common case): one lookup, not a walk.
        if let Some(entry) = diff.get(&beneficiary) {
            *paid = entry.info;
        }
        return;
    }
    for (address, entry) in diff.iter() {
        if *address == beneficiary {
            *paid = entry.info;
        } else if batch.lazy.contains(address) {
            senders.insert(*address, entry.info);
        }
    }
}

impl Undo {
    /// The result as it was before it was settled.
    fn restore(self, mut outcome: TxOutcome, beneficiary: Address) -> Executed {
        match self.beneficiary {
            Some(None) => {
                outcome.state.remove(&beneficiary);
            }
            Some(Some(info)) => {
                if let Some(entry) = outcome.state.get_mut(&beneficiary) {
                    entry.info = info;
                }
            }
            None => {}
        }
        if let Some(balance) = self.mocked_balance
            && let Some(info) = outcome.state.get_mut(&self.executed.caller).and_then(|e| e.info.as_mut())
        {
            info.balance = balance;
        }
        let Settled { fee, mocked, read_mocked_balance, access, caller, nonce, upfront } = self.executed;
        Executed { outcome, fee, mocked, read_mocked_balance, access, caller, nonce, upfront }
    }
}

/// A result's fields but its outcome.
struct Settled {
    fee: U256,
    mocked: bool,
    read_mocked_balance: bool,
    access: Option<crate::AccessSet>,
    caller: Address,
    nonce: u64,
    upfront: U256,
}

/// Whether `account` is still what the transaction loaded: its balance, nonce and code
/// are as loaded, and it existed, or (from Spurious Dragon on) it did not and is still
/// empty. EIP-161 deletes an account a transaction touched and left empty, so an absent
/// account merely called (a precompile, most often) is no change; were it one, every
/// transaction that calls the same precompile would write it, and each would depend on
/// the one before in a parallel run. Read off revm's own record of the load: the view
/// serves each account once per transaction (revm keeps it after), so this compares with
/// exactly what the view served.
pub(crate) fn unchanged(account: &revm::state::Account, spec: SpecId) -> bool {
    if account.is_loaded_as_not_existing() {
        stays_absent(spec, account.info.is_empty())
    } else {
        !account.is_changed()
    }
}

/// Whether an account that did not exist, touched and `left_empty`, still does not
/// (EIP-161, from Spurious Dragon on; before it, touching creates it). The one rule for
/// a transaction's accounts ([`unchanged`]) and the beneficiary's fee
/// ([`crate::overlay::credit_fee`]).
pub(crate) fn stays_absent(spec: SpecId, left_empty: bool) -> bool {
    left_empty && spec.is_enabled_in(SpecId::SPURIOUS_DRAGON)
}

/// The outcome of one run (its `result` and the `state` it touched), with its changes
/// read off against what it read (exact once validated).
pub(crate) fn speculative_outcome(
    result: Result<ExecutionResult, evm::EvmError>,
    state: &revm::state::EvmState,
    spec: SpecId,
) -> Result<TxOutcome, ExecutorError> {
    let result = match result {
        Ok(result) => result,
        Err(EVMError::Transaction(invalid)) => return Ok(invalid_outcome(invalid.to_string())),
        Err(EVMError::Database(ViewError::State(e))) => return Err(e.into()),
        Err(other) => return Err(ExecutorError::Evm(other.to_string())),
    };
    // One spare: the beneficiary's fee is credited into the diff at commit.
    let mut accounts = Vec::with_capacity(state.len() + 1);
    // Sorted by address as references, so that the diffs are built in order rather than
    // moved about by the sort (a 2016 state-clearing transaction touches hundreds).
    // On the stack for the usual few: this runs once per transaction.
    let mut touched: smallvec::SmallVec<[(&Address, &revm::state::Account); 8]> = state.iter().collect();
    touched.sort_unstable_by_key(|(address, _)| **address);
    accounts.extend(touched.into_iter().filter_map(|(address, account)| account_diff(address, account, spec)));
    Ok(outcome(result, StateDiff::from_sorted_accounts(accounts)))
}

/// What a transaction did to one account it loaded, if anything.
fn account_diff(address: &Address, account: &revm::state::Account, spec: SpecId) -> Option<(Address, AccountDiff)> {
    if !account.is_touched() {
        return None;
    }
    if account.is_selfdestructed() {
        // Whatever it wrote before it was destroyed is gone with it.
        return Some((*address, AccountDiff::destroyed()));
    }
    // A created account starts with empty storage, whatever its address held.
    let created = account.is_created();
    let mut storage: Vec<(U256, U256)> =
        account.changed_storage_slots().map(|(slot, value)| (*slot, value.present_value)).collect();
    if !created && storage.is_empty() && unchanged(account, spec) {
        return None;
    }
    storage.sort_unstable_by_key(|(slot, _)| *slot);
    let info = Some(lite(&account.info));
    Some((*address, AccountDiff { info, code: new_code(account), storage_cleared: created, storage }))
}

/// The account's code, when the transaction gave it code it did not have: by creation or
/// by an EIP-7702 delegation (or its removal to none, which needs no code).
pub(crate) fn new_code(account: &revm::state::Account) -> Option<revm::bytecode::Bytecode> {
    let hash = account.info.code_hash;
    // An account that has code is not empty: it is new code unless the account existed
    // and nothing of it changed.
    if hash == KECCAK_EMPTY || (!account.is_loaded_as_not_existing() && !account.is_changed()) {
        return None;
    }
    // Changed or absent when loaded (then it had no code): the original is read only for
    // an account that has code and changed, which is rare.
    let had = if account.is_loaded_as_not_existing() { KECCAK_EMPTY } else { account.original_info().code_hash };
    if had == hash { None } else { account.info.code.clone() }
}

fn invalid_outcome(reason: String) -> TxOutcome {
    TxOutcome {
        status: TxStatus::Invalid { reason },
        gas_used: 0,
        logs: vec![],
        output: Bytes::new(),
        state: StateDiff::default(),
    }
}

/// What a sequential run keeps besides outcomes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    /// What each transaction touched.
    pub record: bool,
    /// How long each transaction took (to learn from).
    pub timed: bool,
}

/// Runs `txs` one by one on `evm` over `overlay`, committing each.
pub(crate) fn run_sequential(
    evm: &mut WorkerEvm,
    overlay: Overlay,
    ctx: &BlockContext,
    txs: Vec<TxEnv>,
    Run { record, timed }: Run,
) -> Result<Committed, ExecutorError> {
    evm::prepare(evm, ctx);
    evm.ctx.journaled_state.database = StateView::Sequential(Box::new(overlay));
    let mut outcomes = Vec::with_capacity(txs.len());
    let mut seconds = Vec::with_capacity(if timed { txs.len() } else { 0 });
    let mut access = Vec::new();
    let result = (|| {
        // One clock reading per transaction: each one's time runs to the end of its
        // commit, which is what it costs this mode.
        let mut last = std::time::Instant::now();
        for tx in txs {
            outcomes.push(step(evm, ctx, tx, record.then_some(&mut access))?);
            if timed {
                let now = std::time::Instant::now();
                seconds.push((now - last).as_secs_f64());
                last = now;
            }
        }
        Ok(())
    })();
    evm.ctx.journaled_state.database = StateView::Idle;
    result.map(|()| Committed { outcomes, access, seconds })
}

/// One step of sequential execution: runs `tx` on the overlay the EVM's view holds and
/// commits it there, noting what it touched in `access` when given.
pub(crate) fn step(
    evm: &mut WorkerEvm,
    ctx: &BlockContext,
    tx: TxEnv,
    access: Option<&mut Vec<crate::AccessSet>>,
) -> Result<TxOutcome, ExecutorError> {
    let run = evm::run(evm, tx);
    if let Some(access) = access {
        access.push(access_of(&run.state));
    }
    let outcome = speculative_outcome(run.result, &run.state, ctx.spec)?;
    evm::recycle(evm, run.state);
    commit_to_view(evm, ctx, outcome, run.fee)
}

/// Commits `outcome` and the beneficiary's `fee` to the overlay the EVM's view holds (an
/// invalid transaction changes nothing), returning the outcome with the fee credited.
pub(crate) fn commit_to_view(
    evm: &mut WorkerEvm,
    ctx: &BlockContext,
    mut outcome: TxOutcome,
    fee: U256,
) -> Result<TxOutcome, ExecutorError> {
    let StateView::Sequential(overlay) = &mut evm.ctx.journaled_state.database else {
        return Err(ExecutorError::Evm("sequential view detached".into()));
    };
    if !matches!(outcome.status, TxStatus::Invalid { .. }) {
        overlay.apply(&outcome.state);
        overlay.credit(ctx.block.beneficiary, fee, ctx.spec, &mut outcome.state)?;
    }
    Ok(outcome)
}

/// The outcome of an execution result and its changes.
pub(crate) fn outcome(result: ExecutionResult, state: StateDiff) -> TxOutcome {
    let gas_used = result.tx_gas_used();
    match result {
        ExecutionResult::Success { logs, output, .. } => {
            let output = match output {
                Output::Call(bytes) => bytes,
                Output::Create(bytes, _) => bytes,
            };
            TxOutcome { status: TxStatus::Success, gas_used, logs, output, state }
        }
        ExecutionResult::Revert { logs, output, .. } => {
            let reason =
                alloy::sol_types::decode_revert_reason(&output).unwrap_or_else(|| format!("revert data {output}"));
            TxOutcome { status: TxStatus::Revert { reason }, gas_used, logs, output, state }
        }
        ExecutionResult::Halt { reason, logs, .. } => TxOutcome {
            status: TxStatus::Halt { reason: format!("{reason:?}") },
            gas_used,
            logs,
            output: Bytes::new(),
            state,
        },
    }
}

/// The accounts and slots an execution loaded.
pub(crate) fn access_of(state: &revm::state::EvmState) -> crate::AccessSet {
    let mut set = crate::AccessSet::default();
    for (address, account) in state {
        set.accounts.push(*address);
        set.slots.extend(account.storage.keys().map(|slot| (*address, *slot)));
    }
    set
}

/// A fresh overlay over `base`.
pub(crate) fn overlay(base: Arc<dyn StateSource>, txs: usize) -> Overlay {
    Overlay::with_capacity(base, txs * 2)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{bench, mv_memory::MvMemory, view::CodeCache};

    #[test]
    fn an_account_is_compared_with_what_the_transaction_loaded() {
        let loaded = revm::state::AccountInfo { balance: U256::from(7), nonce: 3, ..Default::default() };
        let mut account = revm::state::Account::from(loaded);
        let spec = SpecId::CANCUN;
        assert!(unchanged(&account, spec), "loaded and left alone");
        account.info.balance = U256::from(2);
        assert!(!unchanged(&account, spec), "its balance changed");
        account.info.balance = U256::from(7);
        assert!(unchanged(&account, spec), "changed back to what was loaded");
        // An existing account with nothing in it is not an absent one.
        assert!(unchanged(&revm::state::Account::from(revm::state::AccountInfo::default()), spec));
        // Absent when loaded and still empty: no change from Spurious Dragon on (EIP-161
        // deletes it again), a change before (touching created it).
        let mut absent = revm::state::Account::new_not_existing(revm::state::TransactionId::ZERO);
        assert!(unchanged(&absent, spec));
        assert!(unchanged(&absent, SpecId::SPURIOUS_DRAGON));
        assert!(!unchanged(&absent, SpecId::TANGERINE));
        // Given something: a change.
        absent.info.balance = U256::from(1);
        assert!(!unchanged(&absent, spec));
    }

    #[test]
    fn new_code_is_code_the_account_did_not_have_when_loaded() {
        let code = revm::bytecode::Bytecode::new_raw(Bytes::from_static(&[0x60, 0x00]));
        let with_code = |info: revm::state::AccountInfo| info.with_code_hash(code.hash_slow()).with_code(code.clone());
        let eoa = revm::state::AccountInfo { balance: U256::from(1), ..Default::default() };
        // Given code (a delegation, say): new.
        let mut account = revm::state::Account::from(eoa.clone());
        account.info = with_code(eoa.clone());
        assert_eq!(new_code(&account).map(|c| c.hash_slow()), Some(code.hash_slow()));
        // A contract whose balance changed keeps the code it had: nothing new.
        let mut contract = revm::state::Account::from(with_code(eoa.clone()));
        contract.info.balance = U256::from(5);
        assert!(new_code(&contract).is_none());
        // Created where nothing was: new. Code removed: nothing to serve.
        let mut created = revm::state::Account::new_not_existing(revm::state::TransactionId::ZERO);
        created.info = with_code(revm::state::AccountInfo::default());
        assert!(new_code(&created).is_some());
        let mut cleared = revm::state::Account::from(with_code(eoa.clone()));
        cleared.info = eoa;
        assert!(new_code(&cleared).is_none());
    }

    /// A batch with lazy senders and fees, executed on one worker: every result is in
    /// its slot, none settled.
    fn executed_batch() -> Arc<Batch> {
        let f = bench::Fixture::new(8).unwrap_or_else(|e| panic!("fixture: {e}"));
        let nonces = f.nonces();
        // Two senders with three transactions each (lazy), interleaved, and one payer
        // of the beneficiary.
        let mut txs = Vec::new();
        for round in 0..3u64 {
            for sender in [1, 2] {
                let to = f.accounts[sender + 3];
                txs.push(bench::call(
                    f.accounts[sender],
                    nonces[sender] + round,
                    to,
                    Bytes::new(),
                    U256::from(5),
                    21_000,
                ));
            }
        }
        txs.push(bench::call(f.accounts[6], nonces[6], f.ctx.block.beneficiary, Bytes::new(), U256::from(9), 21_000));
        let mut mv = MvMemory::default();
        mv.prepare(txs.len());
        let batch = Arc::new(Batch::new(f.state.clone(), f.ctx.clone(), txs, mv).unwrap_or_else(|e| panic!("{e}")));
        let mut evm = crate::evm::build(f.ctx.spec);
        crate::evm::prepare(&mut evm, &f.ctx);
        crate::parallel::work(&mut evm, &batch, &mut CodeCache::default(), false);
        batch
    }

    fn results(batch: &Batch) -> Vec<Option<Executed>> {
        batch.results.iter().map(|slot| slot.lock().ok().and_then(|s| s.clone())).collect()
    }

    #[test]
    fn a_rewound_settle_puts_back_exactly_what_it_took() {
        let batch = executed_batch();
        let before = results(&batch);
        assert!(before.iter().all(Option::is_some), "every transaction executed");
        let mut settle = Settle::default();
        settle.advance(&batch);
        assert_eq!(settle.next, batch.txs.len(), "everything was ready to settle");
        assert!(results(&batch).iter().all(Option::is_none), "the settle took every result");
        // As if transaction 0 had run again after it was settled: its slot is full.
        if let Ok(mut slot) = batch.results[0].lock() {
            *slot = before[0].clone();
        }
        let settled = settle.outcomes.clone();
        settle.rewind(&batch, 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(results(&batch), before, "each result is back as it was before its settle");
        let (again, stopped) = settle.finish(&batch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stopped, None);
        assert_eq!(again.outcomes, settled, "settling again gives the same outcomes");
    }

    #[test]
    fn a_settle_told_to_go_back_to_a_result_it_still_holds_settles_the_same() {
        // A worker may flag a result the settle took after it was stored (the two met on
        // the slot's lock the other way round): going back must lose nothing.
        let batch = executed_batch();
        let mut settle = Settle::default();
        settle.advance(&batch);
        let settled = settle.outcomes.clone();
        batch.resettle_from.store(2, std::sync::atomic::Ordering::SeqCst);
        let (again, stopped) = settle.finish(&batch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stopped, None, "nothing falls back to sequential");
        assert_eq!(again.outcomes, settled);
    }
}
