//! The reference: plain revm with its own mainnet handler, each transaction committed
//! into a `CacheDB` in order, and its changes read off independently of the executor.

#![allow(dead_code)]

pub mod phoenix;

use std::{collections::BTreeMap, sync::Arc};

use ferry_executors::{
    AccountDiff, AccountState, BlockContext, InMemoryState, StateDiff, TxOutcome, TxStatus, bench::SourceDb,
};
use revm::{
    Context, DatabaseCommit, DatabaseRef, ExecuteEvm, MainBuilder, MainContext,
    context::{
        CfgEnv, TxEnv,
        result::{EVMError, ExecutionResult, Output},
    },
    database::CacheDB,
    primitives::{KECCAK_EMPTY, U256, hardfork::SpecId},
};

/// Outcomes and merged changes of plain revm running `txs` in order.
pub fn reference(state: &Arc<InMemoryState>, ctx: &BlockContext, txs: &[TxEnv]) -> (Vec<TxOutcome>, StateDiff) {
    let mut cfg = CfgEnv::new_with_spec(ctx.spec);
    cfg.chain_id = ctx.chain_id;
    let db = CacheDB::new(SourceDb(Arc::clone(state)));
    let mut evm = Context::mainnet().with_cfg(cfg).with_block(ctx.block.clone()).with_db(db).build_mainnet();
    let mut outcomes = Vec::new();
    let mut merged = StateDiff::default();
    for tx in txs {
        let out = match evm.transact(tx.clone()) {
            Ok(out) => out,
            Err(EVMError::Transaction(e)) => {
                outcomes.push(TxOutcome {
                    status: TxStatus::Invalid { reason: e.to_string() },
                    gas_used: 0,
                    logs: vec![],
                    output: Default::default(),
                    state: StateDiff::default(),
                });
                continue;
            }
            Err(e) => panic!("reference EVM failed: {e}"),
        };
        let db = &evm.ctx.journaled_state.database;
        let mut diff = StateDiff::default();
        for (address, account) in &out.state {
            if !account.is_touched() {
                continue;
            }
            if account.is_selfdestructed() {
                diff.insert(*address, AccountDiff::destroyed());
                continue;
            }
            let mut before = db.basic_ref(*address).unwrap().map(|i| (i.balance, i.nonce, i.code_hash));
            // EIP-161: from Spurious Dragon on, an account a transaction touched and left
            // empty is deleted, so an absent one that is still empty did not change.
            if before.is_none() && ctx.spec.is_enabled_in(SpecId::SPURIOUS_DRAGON) {
                before = Some((U256::ZERO, 0, KECCAK_EMPTY));
            }
            let after = Some((account.info.balance, account.info.nonce, account.info.code_hash));
            // CacheDB clears a created account's storage at commit: every slot it
            // wrote is new.
            let created = account.is_created();
            let mut storage = BTreeMap::new();
            for (slot, value) in &account.storage {
                let was = if created { U256::ZERO } else { db.storage_ref(*address, *slot).unwrap() };
                if value.present_value != was {
                    storage.insert(*slot, value.present_value);
                }
            }
            if after != before || created || !storage.is_empty() {
                let code = match (after, before) {
                    (Some((_, _, hash)), b) if b.map(|b| b.2) != Some(hash) && hash != KECCAK_EMPTY => {
                        account.info.code.clone()
                    }
                    _ => None,
                };
                let info = after.map(|(balance, nonce, code_hash)| AccountState { balance, nonce, code_hash });
                diff.insert(
                    *address,
                    AccountDiff { info, code, storage_cleared: created, storage: storage.into_iter().collect() },
                );
            }
        }
        evm.ctx.journaled_state.database.commit(out.state);
        merged.merge(&diff);
        outcomes.push(outcome(out.result, diff));
    }
    (outcomes, merged)
}

fn outcome(result: ExecutionResult, state: StateDiff) -> TxOutcome {
    let gas_used = result.tx_gas_used();
    match result {
        ExecutionResult::Success { logs, output, .. } => {
            let output = match output {
                Output::Call(b) | Output::Create(b, _) => b,
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
            output: Default::default(),
            state,
        },
    }
}

/// Asserts two runs agree transaction by transaction and in the final state.
pub fn assert_same(label: &str, got: &[TxOutcome], got_state: &StateDiff, want: &[TxOutcome], want_state: &StateDiff) {
    assert_eq!(got.len(), want.len(), "{label}: outcome count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "{label}: transaction {i} differs");
    }
    assert_eq!(got_state, want_state, "{label}: final state differs");
}

pub fn _unused(_: U256) {}
