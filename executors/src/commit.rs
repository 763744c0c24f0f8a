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
    AccountDiff, AccountState, BlockContext, ExecutorError, StateDiff, StateError, StateSource, TxOutcome, TxStatus,
    evm::{self, WorkerEvm},
    mv_memory::AccountLite,
    overlay::{Overlay, credit_fee, lite},
    parallel::{Batch, Executed, lazy_assumptions_hold, settle_mocked},
    view::{StateView, ViewError},
};

/// Outcomes of a run of transactions and their merged changes.
pub(crate) struct Committed {
    pub outcomes: Vec<TxOutcome>,
    pub state: StateDiff,
    /// What each transaction touched, when asked for.
    pub access: Vec<crate::AccessSet>,
}

/// Settles a finished parallel batch in order: checks each lazily accounted sender's
/// assumptions against the running real balance, patches the lazy accounts (senders'
/// balances, the beneficiary's fees) into the outcomes, and merges the changes. Stops
/// at the first transaction whose assumptions fail and returns its index, so that the
/// rest can be re-run one by one.
pub(crate) fn commit_batch(batch: &Batch) -> Result<(Committed, Option<usize>), ExecutorError> {
    let beneficiary = batch.ctx.block.beneficiary;
    let mut running: FxHashMap<Address, Option<AccountLite>> = FxHashMap::default();
    let current =
        |running: &FxHashMap<Address, Option<AccountLite>>, a: Address| -> Result<Option<AccountLite>, StateError> {
            match running.get(&a) {
                Some(v) => Ok(*v),
                None => Ok(batch.base.basic(a)?.map(|i| lite(&i))),
            }
        };
    let mut builder = DiffBuilder::with_capacity(batch.txs.len() * 2);
    let mut done =
        Committed { outcomes: Vec::with_capacity(batch.txs.len()), state: StateDiff::default(), access: Vec::new() };
    for (idx, tx) in batch.txs.iter().enumerate() {
        let executed = batch.results[idx].lock().ok().and_then(|mut slot| slot.take());
        let Some(Executed { mut outcome, fee, mocked, read_mocked_balance, access }) = executed else {
            done.state = builder.finish();
            return Ok((done, Some(idx)));
        };
        if !matches!(outcome.status, TxStatus::Invalid { .. }) {
            if mocked {
                let before = current(&running, tx.caller)?;
                if !lazy_assumptions_hold(tx, read_mocked_balance, before) {
                    done.state = builder.finish();
                    return Ok((done, Some(idx)));
                }
                if let Some(info) = outcome.state.get_mut(&tx.caller).and_then(|e| e.info.as_mut()) {
                    settle_mocked(info, before);
                    running.insert(tx.caller, Some(*info));
                }
            }
            for (address, entry) in outcome.state.iter() {
                if batch.lazy.contains(address) && !(mocked && *address == tx.caller) {
                    running.insert(*address, entry.info);
                }
            }
            let before = current(&running, beneficiary)?;
            if let Some(after) = credit_fee(beneficiary, before, fee, &mut outcome.state) {
                running.insert(beneficiary, Some(after));
            }
        }
        builder.merge(&outcome.state);
        done.outcomes.push(outcome);
        done.access.extend(access);
    }
    done.state = builder.finish();
    Ok((done, None))
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
    let mut accounts = Vec::with_capacity(run.state.len());
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

/// Merges per-transaction changes in hash maps; sorted once at the end.
#[derive(Default)]
pub(crate) struct DiffBuilder {
    accounts: FxHashMap<Address, PendingAccount>,
}

/// An account's merged changes so far: info, code, storage.
type PendingAccount = (Option<AccountState>, Option<revm::bytecode::Bytecode>, FxHashMap<U256, U256>);

impl DiffBuilder {
    pub(crate) fn with_capacity(accounts: usize) -> Self {
        Self { accounts: FxHashMap::with_capacity_and_hasher(accounts, Default::default()) }
    }

    pub(crate) fn merge(&mut self, later: &StateDiff) {
        for (address, diff) in later.iter() {
            let entry = self.accounts.entry(*address).or_default();
            if diff.info.is_none() {
                entry.2.clear();
            }
            entry.0 = diff.info;
            if diff.code.is_some() {
                entry.1.clone_from(&diff.code);
            }
            entry.2.extend(diff.storage.iter().map(|(k, v)| (*k, *v)));
        }
    }

    pub(crate) fn finish(self) -> StateDiff {
        StateDiff::from_accounts(
            self.accounts
                .into_iter()
                .map(|(address, (info, code, storage))| {
                    let mut storage: Vec<(U256, U256)> = storage.into_iter().collect();
                    storage.sort_unstable_by_key(|(slot, _)| *slot);
                    (address, AccountDiff { info, code, storage })
                })
                .collect(),
        )
    }
}

/// Runs `txs` one by one on `evm` over `overlay`, committing each.
pub(crate) fn run_sequential(
    evm: &mut WorkerEvm,
    overlay: Overlay,
    ctx: &BlockContext,
    txs: &[TxEnv],
    record: bool,
) -> Result<Committed, ExecutorError> {
    evm::prepare(evm, ctx);
    evm.ctx.journaled_state.database = StateView::Sequential(Box::new(overlay));
    let mut done =
        Committed { outcomes: Vec::with_capacity(txs.len()), state: StateDiff::default(), access: Vec::new() };
    let mut builder = DiffBuilder::with_capacity(txs.len() * 2);
    let beneficiary = ctx.block.beneficiary;
    let result = (|| {
        for tx in txs {
            let run = evm::run(evm, tx);
            let StateView::Sequential(overlay) = &mut evm.ctx.journaled_state.database else {
                return Err(ExecutorError::Evm("sequential view detached".into()));
            };
            if record {
                done.access.push(access_of(&run.state));
            }
            let served = std::mem::take(&mut overlay.served);
            let (mut outcome, fee) = speculative_outcome(run, &served)?;
            overlay.served = served;
            overlay.served.clear();
            if !matches!(outcome.status, TxStatus::Invalid { .. }) {
                overlay.apply(&outcome.state);
                overlay.credit(beneficiary, fee, &mut outcome.state)?;
            }
            builder.merge(&outcome.state);
            done.outcomes.push(outcome);
        }
        Ok(())
    })();
    done.state = builder.finish();
    evm.ctx.journaled_state.database = StateView::Idle;
    result.map(|()| done)
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
