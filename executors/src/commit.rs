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
    // The beneficiary changes with every transaction: kept at hand, not in the map.
    let mut paid = batch.base.account(beneficiary)?;
    let mut paid_changed = false;
    let mut done =
        Committed { outcomes: Vec::with_capacity(batch.txs.len()), state: StateDiff::default(), access: Vec::new() };
    for (idx, tx) in batch.txs.iter().enumerate() {
        let executed = batch.results[idx].lock().ok().and_then(|mut slot| slot.take());
        let Some(Executed { mut outcome, fee, mocked, read_mocked_balance, access }) = executed else {
            settled.paid(beneficiary, paid, paid_changed);
            return Ok((done, settled, Some(idx)));
        };
        if !matches!(outcome.status, TxStatus::Invalid { .. }) {
            if mocked {
                let before = match settled.lazy.get(&tx.caller) {
                    Some(value) => *value,
                    None => batch.base.account(tx.caller)?,
                };
                if !lazy_assumptions_hold(tx, read_mocked_balance, before) {
                    settled.paid(beneficiary, paid, paid_changed);
                    return Ok((done, settled, Some(idx)));
                }
                if let Some(info) = outcome.state.get_mut(&tx.caller).and_then(|e| e.info.as_mut()) {
                    settle_mocked(info, before);
                }
            }
            let mut code = false;
            for (address, entry) in outcome.state.iter() {
                code |= entry.code.is_some();
                if *address == beneficiary {
                    paid = entry.info;
                    paid_changed = true;
                } else if batch.lazy.contains(address) {
                    settled.lazy.insert(*address, entry.info);
                }
            }
            if let Some(after) = credit_fee(beneficiary, paid, fee, &mut outcome.state) {
                paid = Some(after);
                paid_changed = true;
            }
            if code || !settled.codes.is_empty() {
                track_code(&mut settled.codes, &outcome.state);
            }
        }
        done.outcomes.push(outcome);
        done.access.extend(access);
    }
    settled.paid(beneficiary, paid, paid_changed);
    Ok((done, settled, None))
}

impl Settled {
    /// Records the beneficiary's final value, if any transaction changed it.
    fn paid(&mut self, beneficiary: Address, paid: Option<AccountLite>, changed: bool) {
        if changed {
            self.lazy.insert(beneficiary, paid);
        }
    }
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
/// (each piece sorted) and what the settle found: exactly [`StateDiff::merge`] of the
/// settled outcomes.
pub(crate) fn assemble(batch: &Batch, pieces: Vec<Piece>, settled: Settled) -> Result<StateDiff, StateError> {
    let accounts = merge_sorted(pieces.iter().map(|p| p.accounts.as_slice()).collect(), |(a, ..)| *a);
    let slots = merge_sorted(pieces.iter().map(|p| p.slots.as_slice()).collect(), |(a, s, ..)| (*a, *s));
    let mut lazy: Vec<(Address, Option<AccountLite>)> = settled.lazy.into_iter().collect();
    lazy.sort_unstable_by_key(|(address, _)| *address);
    let mut codes = settled.codes;
    let (mut at_account, mut at_slot, mut at_lazy) = (0, 0, 0);
    let mut diffs = Vec::with_capacity(accounts.len() + lazy.len());
    loop {
        // The lowest address still to do, among written fields, slots and lazy accounts.
        let next = [
            accounts.get(at_account).map(|(a, ..)| *a),
            slots.get(at_slot).map(|(a, ..)| *a),
            lazy.get(at_lazy).map(|(a, _)| *a),
        ];
        let Some(address) = next.into_iter().flatten().min() else { break };
        let (mut written, mut destroyed) = (None, None);
        if let Some((a, info, gone)) = accounts.get(at_account)
            && *a == address
        {
            written = Some(*info);
            destroyed = *gone;
            at_account += 1;
        }
        let first = at_slot;
        while slots.get(at_slot).is_some_and(|(a, ..)| *a == address) {
            at_slot += 1;
        }
        // A destroyed account keeps only what was written from its destruction on.
        let storage: Vec<(U256, U256)> = slots[first..at_slot]
            .iter()
            .filter(|(.., writer)| destroyed.is_none_or(|d| *writer >= d))
            .map(|(_, slot, value, _)| (*slot, *value))
            .collect();
        let settled_value = match lazy.get(at_lazy) {
            Some((a, value)) if *a == address => {
                at_lazy += 1;
                Some(*value)
            }
            _ => None,
        };
        let info = match (settled_value, written) {
            (Some(value), _) => value,
            // A lazy account no transaction changed: its versions were only deltas.
            (None, _) if batch.lazy.contains(&address) => continue,
            (None, Some(info)) => info,
            // Only its storage changed: its fields are the base's.
            (None, None) => batch.base.account(address)?,
        };
        let code = if codes.is_empty() { None } else { codes.remove(&address).and_then(|(_, code)| code) };
        diffs.push((address, AccountDiff { info, code, storage }));
    }
    Ok(StateDiff::from_sorted(diffs))
}

/// Merges sorted runs into one sorted list (the workers' pieces: a few long runs).
fn merge_sorted<T: Clone, K: Ord>(mut runs: Vec<&[T]>, key: impl Fn(&T) -> K) -> Vec<T> {
    runs.retain(|r| !r.is_empty());
    let mut out = Vec::with_capacity(runs.iter().map(|r| r.len()).sum());
    let mut at = vec![0usize; runs.len()];
    loop {
        let mut best: Option<usize> = None;
        for (i, run) in runs.iter().enumerate() {
            if let Some(item) = run.get(at[i])
                && best.is_none_or(|b| key(item) < key(&runs[b][at[b]]))
            {
                best = Some(i);
            }
        }
        let Some(b) = best else { break };
        out.push(runs[b][at[b]].clone());
        at[b] += 1;
    }
    out
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
