//! Turning executions into outcomes: the ordered commit of the parallel engine, and
//! plain sequential execution (small batches, fallbacks, and the sampled re-check).

use std::sync::Arc;

use revm::{
    context::{
        TxEnv,
        result::{EVMError, ExecutionResult, Output},
    },
    primitives::Bytes,
};

use crate::{
    BlockContext, ExecutorError, StateDiff, StateError, StateSource, TxOutcome, TxStatus,
    evm::{self, WorkerEvm},
    overlay::Overlay,
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

/// Commits a finished parallel batch in order. Stops at the first transaction whose
/// lazy assumptions do not hold and returns its index with the overlay as committed so
/// far, so that the rest can be re-run one by one.
pub(crate) fn commit_batch(batch: &Batch, record: bool) -> Result<(Committed, Overlay, Option<usize>), ExecutorError> {
    let mut overlay = Overlay::new(Arc::clone(&batch.base));
    let mut done =
        Committed { outcomes: Vec::with_capacity(batch.txs.len()), state: StateDiff::default(), access: Vec::new() };
    let beneficiary = batch.ctx.block.beneficiary;
    for (idx, tx) in batch.txs.iter().enumerate() {
        let executed = batch.results[idx].lock().ok().and_then(|mut slot| slot.take());
        let Some(Executed { run, mocked, read_mocked_balance }) = executed else {
            return Ok((done, overlay, Some(idx)));
        };
        if mocked && !lazy_assumptions_hold(tx, read_mocked_balance, overlay.basic_lite(tx.caller)?) {
            return Ok((done, overlay, Some(idx)));
        }
        let sender = tx.caller;
        if record {
            done.access.push(access_of(&run.state));
        }
        let outcome = settle(&mut overlay, run, beneficiary, |address, account, before| {
            if mocked && address == sender {
                settle_mocked(account, before);
            }
        })?;
        done.state.merge(&outcome.state);
        done.outcomes.push(outcome);
    }
    Ok((done, overlay, None))
}

/// Runs `txs` one by one on `evm` over `overlay`, committing each.
pub(crate) fn run_sequential(
    evm: &mut WorkerEvm,
    overlay: Overlay,
    ctx: &BlockContext,
    txs: &[TxEnv],
    record: bool,
) -> Result<(Committed, Overlay), ExecutorError> {
    evm::prepare(evm, ctx);
    evm.ctx.journaled_state.database = StateView::Sequential(Box::new(overlay));
    let mut done =
        Committed { outcomes: Vec::with_capacity(txs.len()), state: StateDiff::default(), access: Vec::new() };
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
            let outcome = settle(overlay.as_mut(), run, beneficiary, |_, _, _| {})?;
            done.state.merge(&outcome.state);
            done.outcomes.push(outcome);
        }
        Ok(())
    })();
    let view = std::mem::take(&mut evm.ctx.journaled_state.database);
    result?;
    match view {
        StateView::Sequential(overlay) => Ok((done, *overlay)),
        _ => Err(ExecutorError::Evm("sequential view detached".into())),
    }
}

/// Commits one run into the overlay (crediting the beneficiary) and describes it.
fn settle(
    overlay: &mut Overlay,
    run: evm::Run,
    beneficiary: revm::primitives::Address,
    fixup: impl FnMut(revm::primitives::Address, &mut crate::mv_memory::AccountLite, Option<crate::mv_memory::AccountLite>),
) -> Result<TxOutcome, ExecutorError> {
    let result = match run.result {
        Ok(result) => result,
        Err(EVMError::Transaction(invalid)) => {
            return Ok(TxOutcome {
                status: TxStatus::Invalid { reason: invalid.to_string() },
                gas_used: 0,
                logs: vec![],
                output: Bytes::new(),
                state: StateDiff::default(),
            });
        }
        Err(EVMError::Database(ViewError::State(e))) => return Err(e.into()),
        Err(other) => return Err(ExecutorError::Evm(other.to_string())),
    };
    let mut state = overlay.commit(&run.state, fixup)?;
    overlay.credit(beneficiary, run.fee, &mut state)?;
    Ok(outcome(result, state))
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
fn access_of(state: &revm::state::EvmState) -> crate::AccessSet {
    let mut set = crate::AccessSet::default();
    for (address, account) in state {
        set.accounts.push(*address);
        set.slots.extend(account.storage.keys().map(|slot| (*address, *slot)));
    }
    set
}

/// A fresh overlay over `base`.
pub(crate) fn overlay(base: Arc<dyn StateSource>) -> Overlay {
    Overlay::new(base)
}

#[allow(dead_code)]
fn _assert_error(_: StateError) {}
