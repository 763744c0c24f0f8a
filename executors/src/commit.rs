//! Turning executions into outcomes: the ordered commit of the parallel engine, and
//! plain sequential execution (small batches, fallbacks, and the sampled re-check).

use std::sync::Arc;

use revm::{
    context::{
        TxEnv,
        result::{EVMError, ExecutionResult, Output},
    },
    primitives::{Address, Bytes, KECCAK_EMPTY, U256},
};
use rustc_hash::FxHashMap;

use crate::{
    AccountDiff, BlockContext, ExecutorError, StateDiff, StateError, StateSource, TxOutcome, TxStatus,
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
}

/// The ordered settle of a parallel batch, done as far as it can go while the batch
/// still runs (by the calling thread, between its tasks) and finished at the end.
///
/// It settles in order: checks each lazily accounted sender's assumptions against the
/// running real balance and patches the lazy accounts (senders' balances, the
/// beneficiary's fees) into the outcomes. A transaction settled early may be executed
/// again afterwards; its new result then sits in its slot again, and the final pass
/// settles again from the first such transaction.
#[derive(Default)]
pub(crate) struct Settle {
    /// The next transaction to settle.
    next: usize,
    outcomes: Vec<TxOutcome>,
    access: Vec<crate::AccessSet>,
    /// The beneficiary as settled so far (`None` until read from the base).
    paid: Option<Option<AccountLite>>,
    /// Lazy senders as settled so far.
    senders: FxHashMap<Address, Option<AccountLite>>,
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
        let paid = match self.paid {
            Some(paid) => paid,
            None => *self.paid.insert(batch.base.account(beneficiary)?),
        };
        let tx = batch.txs[idx].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut slot = batch.results[idx].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(executed) = slot.as_ref() else { return Ok(false) };
        let valid = !matches!(executed.outcome.status, TxStatus::Invalid { .. });
        let mut before = None;
        if valid && executed.mocked {
            let sender = match self.senders.get(&tx.caller) {
                Some(value) => *value,
                None => batch.base.account(tx.caller)?,
            };
            if !lazy_assumptions_hold(&tx, executed.read_mocked_balance, sender) {
                return Ok(false);
            }
            before = Some(sender);
        }
        let Some(Executed { mut outcome, fee, access, .. }) = slot.take() else { return Ok(false) };
        let caller = tx.caller;
        drop((slot, tx));
        let mut paid = paid;
        if valid {
            if let Some(sender) = before
                && let Some(info) = outcome.state.get_mut(&caller).and_then(|e| e.info.as_mut())
            {
                settle_mocked(info, sender);
            }
            for (address, entry) in outcome.state.iter() {
                if *address == beneficiary {
                    paid = entry.info;
                } else if batch.lazy.contains(address) {
                    self.senders.insert(*address, entry.info);
                }
            }
            if let Some(after) = credit_fee(beneficiary, paid, fee, &mut outcome.state) {
                paid = Some(after);
            }
        }
        self.paid = Some(paid);
        self.outcomes.push(outcome);
        self.access.extend(access);
        self.next += 1;
        Ok(true)
    }

    /// Forgets what was settled from `idx` on, and rebuilds the running values from the
    /// outcomes before it.
    fn rewind(&mut self, batch: &Batch, idx: usize) -> Result<(), StateError> {
        let beneficiary = batch.ctx.block.beneficiary;
        self.outcomes.truncate(idx);
        self.access.truncate(if batch.record_access { idx } else { 0 });
        self.next = idx;
        self.senders.clear();
        let mut paid = None;
        for outcome in &self.outcomes {
            for (address, entry) in outcome.state.iter() {
                if *address == beneficiary {
                    paid = Some(entry.info);
                } else if batch.lazy.contains(address) {
                    self.senders.insert(*address, entry.info);
                }
            }
        }
        self.paid = Some(match paid {
            Some(paid) => paid,
            None => batch.base.account(beneficiary)?,
        });
        Ok(())
    }

    /// Finishes the settle once the batch is done. Returns the settled outcomes and, if
    /// a lazy assumption failed, the first transaction to re-run one by one.
    pub(crate) fn finish(mut self, batch: &Batch) -> Result<(Committed, Option<usize>), ExecutorError> {
        // A transaction executed again after it was settled has a result in its slot.
        if let Some(again) = (0..self.next).find(|&idx| batch.results[idx].lock().is_ok_and(|slot| slot.is_some())) {
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
        Ok((Committed { outcomes: self.outcomes, access: self.access }, stopped))
    }
}

/// The outcome of one run, with its changes read off against what it read (exact once
/// validated), and the fee it owes the beneficiary (zero for an invalid transaction).
pub(crate) fn speculative_outcome(
    run: evm::Run,
    served: &[(Address, Option<AccountLite>)],
) -> Result<(TxOutcome, U256), ExecutorError> {
    let result = match run.result {
        Ok(result) => result,
        Err(EVMError::Transaction(invalid)) => return Ok((invalid_outcome(invalid.to_string()), U256::ZERO)),
        Err(EVMError::Database(ViewError::State(e))) => return Err(e.into()),
        Err(other) => return Err(ExecutorError::Evm(other.to_string())),
    };
    // One spare: the beneficiary's fee is credited into the diff at commit.
    let mut accounts = Vec::with_capacity(run.state.len() + 1);
    for (address, account) in &run.state {
        if !account.is_touched() {
            continue;
        }
        let before = served.iter().find(|(a, _)| a == address).and_then(|(_, v)| *v);
        let after = (!account.is_selfdestructed()).then(|| lite(&account.info));
        let mut storage: Vec<(U256, U256)> =
            account.changed_storage_slots().map(|(slot, value)| (*slot, value.present_value)).collect();
        storage.sort_unstable_by_key(|(slot, _)| *slot);
        let info_changed = after != before || account.is_created();
        if !info_changed && storage.is_empty() {
            continue;
        }
        let code = match (after, before) {
            (Some(a), b) if b.map(|b| b.code_hash) != Some(a.code_hash) && a.code_hash != KECCAK_EMPTY => {
                account.info.code.clone()
            }
            _ => None,
        };
        accounts.push((*address, AccountDiff { info: after, code, storage }));
    }
    Ok((outcome(result, StateDiff::from_accounts(accounts)), run.fee))
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

/// Runs `txs` one by one on `evm` over `overlay`, committing each.
pub(crate) fn run_sequential(
    evm: &mut WorkerEvm,
    overlay: Overlay,
    ctx: &BlockContext,
    txs: Vec<TxEnv>,
    record: bool,
) -> Result<Committed, ExecutorError> {
    evm::prepare(evm, ctx);
    evm.ctx.journaled_state.database = StateView::Sequential(Box::new(overlay));
    let mut outcomes = Vec::with_capacity(txs.len());
    let mut access = Vec::new();
    let beneficiary = ctx.block.beneficiary;
    let result = (|| {
        for tx in txs {
            let run = evm::run(evm, tx);
            let StateView::Sequential(overlay) = &mut evm.ctx.journaled_state.database else {
                return Err(ExecutorError::Evm("sequential view detached".into()));
            };
            if record {
                access.push(access_of(&run.state));
            }
            let (mut outcome, fee) = speculative_outcome(run, &overlay.served)?;
            overlay.served.clear();
            if !matches!(outcome.status, TxStatus::Invalid { .. }) {
                overlay.apply(&outcome.state);
                overlay.credit(beneficiary, fee, &mut outcome.state)?;
            }
            outcomes.push(outcome);
        }
        Ok(())
    })();
    evm.ctx.journaled_state.database = StateView::Idle;
    result.map(|()| Committed { outcomes, access })
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
