//! Turning executions into outcomes: the ordered commit of the parallel engine, and
//! plain sequential execution (small batches, fallbacks, and the sampled re-check).

use std::sync::Arc;

use revm::{
    bytecode::Bytecode,
    context::{
        TxEnv,
        result::{EVMError, ExecutionResult, Output},
    },
    primitives::{Address, B256, Bytes, KECCAK_EMPTY, U256},
};
use rustc_hash::FxHashMap;

use crate::{
    AccountDiff, BlockContext, ExecutorError, StateDiff, StateError, StateSource, TxOutcome, TxStatus,
    evm::{self, WorkerEvm},
    mv_memory::AccountLite,
    overlay::{Overlay, credit_fee, lite},
    parallel::{Batch, Executed, Piece, lazy_assumptions_hold, settle_mocked},
    view::{StateView, ViewError},
};

/// Outcomes of a run of transactions and their merged changes.
pub(crate) struct Committed {
    pub outcomes: Vec<TxOutcome>,
    pub state: StateDiff,
    /// What each transaction touched, when asked for.
    pub access: Vec<crate::AccessSet>,
}

/// What settling a batch found out about its merged changes that the multi-version
/// memory does not hold: the lazy accounts' final values and the code accounts got.
#[derive(Default)]
pub(crate) struct Settled {
    /// Lazy accounts some transaction changed, as the batch leaves them.
    pub lazy: FxHashMap<Address, Option<AccountLite>>,
    /// Per account given code: its code hash and code as [`StateDiff::merge`] keeps them.
    pub codes: FxHashMap<Address, TrackedCode>,
}

/// An account's code hash and the code the batch gave it, if it still has that code.
type TrackedCode = (Option<B256>, Option<Bytecode>);

/// Settles a finished parallel batch in order: checks each lazily accounted sender's
/// assumptions against the running real balance and patches the lazy accounts
/// (senders' balances, the beneficiary's fees) into the outcomes. Stops at the first
/// transaction whose assumptions fail and returns its index, so that the rest can be
/// re-run one by one.
pub(crate) fn settle(batch: &Batch) -> Result<(Committed, Settled, Option<usize>), ExecutorError> {
    let beneficiary = batch.ctx.block.beneficiary;
    let mut settled = Settled::default();
    let mut paid = batch.base.account(beneficiary)?;
    let mut done =
        Committed { outcomes: Vec::with_capacity(batch.txs.len()), state: StateDiff::default(), access: Vec::new() };
    for (idx, tx) in batch.txs.iter().enumerate() {
        let executed = batch.results[idx].lock().ok().and_then(|mut slot| slot.take());
        let Some(Executed { mut outcome, fee, mocked, read_mocked_balance, access }) = executed else {
            return Ok((done, settled, Some(idx)));
        };
        if !matches!(outcome.status, TxStatus::Invalid { .. }) {
            if mocked {
                let before = match settled.lazy.get(&tx.caller) {
                    Some(value) => *value,
                    None => batch.base.account(tx.caller)?,
                };
                if !lazy_assumptions_hold(tx, read_mocked_balance, before) {
                    return Ok((done, settled, Some(idx)));
                }
                if let Some(info) = outcome.state.get_mut(&tx.caller).and_then(|e| e.info.as_mut()) {
                    settle_mocked(info, before);
                }
            }
            for (address, entry) in outcome.state.iter() {
                if *address == beneficiary {
                    paid = entry.info;
                    settled.lazy.insert(beneficiary, paid);
                } else if batch.lazy.contains(address) {
                    settled.lazy.insert(*address, entry.info);
                }
            }
            if let Some(after) = credit_fee(beneficiary, paid, fee, &mut outcome.state) {
                paid = Some(after);
                settled.lazy.insert(beneficiary, paid);
            }
            track_code(&mut settled.codes, &outcome.state);
        }
        done.outcomes.push(outcome);
        done.access.extend(access);
    }
    Ok((done, settled, None))
}

/// Follows the code of accounts given some, as [`StateDiff::merge`] does: a diff that
/// brings code sets it, one that changes the code hash without bringing code clears it.
fn track_code(codes: &mut FxHashMap<Address, TrackedCode>, diff: &StateDiff) {
    for (address, account) in diff.iter() {
        let hash = crate::types::code_hash(account.info);
        if account.code.is_some() {
            codes.insert(*address, (hash, account.code.clone()));
        } else if let Some(entry) = codes.get_mut(address) {
            if entry.0 != hash {
                entry.1 = None;
            }
            entry.0 = hash;
        }
    }
}

/// The batch's merged changes, from what the workers read off the multi-version memory
/// and what the settle found: exactly [`StateDiff::merge`] of the settled outcomes.
pub(crate) fn assemble(batch: &Batch, pieces: Vec<Piece>, settled: Settled) -> Result<StateDiff, StateError> {
    let (mut accounts, mut slots) = (Vec::new(), Vec::new());
    for piece in pieces {
        accounts.extend(piece.accounts);
        slots.extend(piece.slots);
    }
    accounts.sort_unstable_by_key(|(address, ..)| *address);
    slots.sort_unstable_by_key(|(address, slot, ..)| (*address, *slot));
    let mut lazy: Vec<(Address, Option<AccountLite>)> = settled.lazy.into_iter().collect();
    lazy.sort_unstable_by_key(|(address, _)| *address);
    let mut codes = settled.codes;
    // Every address with a change, in order (a lazy one only if the settle saw it change).
    let mut addresses: Vec<Address> = accounts
        .iter()
        .map(|(a, ..)| *a)
        .filter(|a| !batch.lazy.contains(a))
        .chain(slots.iter().map(|(a, ..)| *a))
        .chain(lazy.iter().map(|(a, _)| *a))
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    let (mut at_account, mut at_slot) = (0, 0);
    let mut diffs = Vec::with_capacity(addresses.len());
    for address in addresses {
        let (mut written, mut destroyed) = (None, None);
        while let Some((a, info, gone)) = accounts.get(at_account)
            && *a <= address
        {
            if *a == address {
                written = Some(*info);
                destroyed = *gone;
            }
            at_account += 1;
        }
        let mut storage = Vec::new();
        while let Some((a, slot, value, writer)) = slots.get(at_slot)
            && *a <= address
        {
            // A destroyed account keeps only what was written from its destruction on.
            if *a == address && destroyed.is_none_or(|d| *writer >= d) {
                storage.push((*slot, *value));
            }
            at_slot += 1;
        }
        let info = if batch.lazy.contains(&address) {
            match lazy.binary_search_by_key(&address, |(a, _)| *a) {
                Ok(at) => lazy[at].1,
                Err(_) => continue,
            }
        } else {
            match written {
                Some(info) => info,
                // Only its storage changed: its fields are the base's.
                None => batch.base.account(address)?,
            }
        };
        let code = codes.remove(&address).and_then(|(_, code)| code);
        diffs.push((address, AccountDiff { info, code, storage }));
    }
    Ok(StateDiff::from_sorted(diffs))
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

/// Runs `txs` one by one on `evm` over `overlay`, committing each. The batch's merged
/// changes are read off the overlay at the end (it holds exactly them).
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
    let view = std::mem::take(&mut evm.ctx.journaled_state.database);
    result?;
    let StateView::Sequential(overlay) = view else {
        return Err(ExecutorError::Evm("sequential view detached".into()));
    };
    Ok(Committed { outcomes, state: overlay.into_diff(), access })
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
