//! Conformance on real Ethereum history: real mainnet blocks, Frontier to Cancun, run
//! from their pre-state. For each block: sequential mode gives plain revm's outcome for
//! every transaction, the parallel engine and the pool give sequential's, and the gas,
//! receipts root (Byzantium on) and logs bloom are the header's. The set must hold a
//! batch that destroys an account and creates it again.
//!
//! The blocks come from `executors/tests/data/mainnet`, a compact set the repository
//! carries (23 blocks, every fork; `ops/mainnet-compact.py` made it), or from the data
//! directory `FERRY_MAINNET_DATA` names (`ops/mainnet-data.py` makes the whole set from
//! pevm's published blocks). The suite always runs: a missing directory is a failure.

mod common;

use ferry_executors::{
    ExecutionMode, Executor, ExecutorConfig, StateDiff, TxOutcome,
    blocks::{BlockData, BlockDataError, HeaderCheck, RealBlock},
};
use revm::primitives::hardfork::SpecId;

fn data() -> BlockData {
    let dir = std::env::var_os("FERRY_MAINNET_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mainnet"));
    BlockData::open(&dir).unwrap_or_else(|e| panic!("no real blocks at {}: {e}", dir.display()))
}

/// Every fork from Frontier to Cancun, as revm names them: the suite must run a block of each.
const FORKS: [SpecId; 12] = [
    SpecId::FRONTIER,
    SpecId::HOMESTEAD,
    SpecId::TANGERINE,
    SpecId::SPURIOUS_DRAGON,
    SpecId::BYZANTIUM,
    SpecId::PETERSBURG,
    SpecId::ISTANBUL,
    SpecId::BERLIN,
    SpecId::LONDON,
    SpecId::MERGE,
    SpecId::SHANGHAI,
    SpecId::CANCUN,
];

/// Whether some account is destroyed by one transaction and created by a later one.
fn destroys_and_recreates(outcomes: &[TxOutcome]) -> bool {
    let destroyed_at =
        |diff: &StateDiff| diff.iter().filter(|(_, a)| a.info.is_none()).map(|(addr, _)| *addr).collect::<Vec<_>>();
    outcomes.iter().enumerate().any(|(i, o)| {
        destroyed_at(&o.state).into_iter().any(|address| {
            outcomes[i + 1..]
                .iter()
                .any(|later| later.state.get(&address).is_some_and(|a| a.info.is_some() && a.storage_cleared))
        })
    })
}

fn first_difference(got: &[TxOutcome], want: &[TxOutcome]) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("{} outcomes where {} were expected", got.len(), want.len()));
    }
    got.iter().zip(want).position(|(g, w)| g != w).map(|i| {
        format!(
            "transaction {i}: {:?} (gas {}) where {:?} (gas {})",
            got[i].status, got[i].gas_used, want[i].status, want[i].gas_used
        )
    })
}

/// Runs one block every way; returns what went wrong, in words.
fn check_block(block: &RealBlock, parallel: &Executor, pool: &Executor) -> (Vec<String>, Vec<TxOutcome>) {
    let mut wrong = Vec::new();
    let (plain, _) = common::reference(&block.state, &block.ctx, &block.txs);
    let sequential = parallel.execute_sequential(block.state.clone(), block.ctx.clone(), block.txs.clone()).unwrap();
    if let Some(d) = first_difference(&sequential.outcomes, &plain) {
        wrong.push(format!("sequential vs plain revm: {d}"));
    }
    let forced = parallel.execute_parallel(block.state.clone(), block.ctx.clone(), block.txs.clone()).unwrap();
    assert!(block.txs.is_empty() || forced.mode == ExecutionMode::Parallel);
    if let Some(d) = first_difference(&forced.outcomes, &sequential.outcomes) {
        wrong.push(format!("parallel vs sequential: {d}"));
    }
    let split = parallel.execute_split(block.state.clone(), block.ctx.clone(), block.txs.clone()).unwrap();
    if let Some(d) = first_difference(&split.outcomes, &sequential.outcomes) {
        wrong.push(format!("split vs sequential: {d}"));
    }
    // Three times: the later runs have the block's kinds learned (their mode, and the
    // long transactions Block-STM starts first).
    for run in ["first", "second", "third"] {
        let pooled = pool.execute(block.state.clone(), block.ctx.clone(), block.txs.clone()).unwrap();
        if let Some(d) = first_difference(&pooled.outcomes, &sequential.outcomes) {
            wrong.push(format!("pool's {run} run ({}) vs sequential: {d}", pooled.mode.as_str()));
        }
    }
    wrong.extend(HeaderCheck::new(block, &sequential.outcomes).mismatches());
    (wrong, sequential.outcomes)
}

#[test]
fn real_blocks_execute_as_the_chain_did() {
    let data = data();
    let parallel = Executor::new(ExecutorConfig { workers: 2, min_parallel_batch: 1, record_access: false });
    let pool = Executor::new(ExecutorConfig { workers: 2, ..ExecutorConfig::default() });
    let (mut ran, mut failures, mut incomplete) = (0, Vec::new(), Vec::new());
    let (mut recreating, mut forks) = (Vec::new(), std::collections::BTreeSet::new());
    for number in data.numbers().unwrap() {
        let block = match data.load(number) {
            Ok(block) => block,
            Err(e @ BlockDataError::MissingCode { .. }) => {
                incomplete.push(e.to_string());
                continue;
            }
            Err(e) => panic!("block {number}: {e}"),
        };
        let (wrong, outcomes) = check_block(&block, &parallel, &pool);
        eprintln!(
            "block {number} ({:?}, {} transactions, {} gas): {}",
            block.ctx.spec,
            block.txs.len(),
            block.gas_used(),
            if wrong.is_empty() { "as the chain".to_string() } else { wrong.join("; ") }
        );
        forks.insert(block.ctx.spec);
        if destroys_and_recreates(&outcomes) {
            recreating.push(number);
        }
        if !wrong.is_empty() {
            failures.push(format!("block {number}: {}", wrong.join("; ")));
        }
        ran += 1;
    }
    for reason in &incomplete {
        eprintln!("not run: {reason}");
    }
    eprintln!(
        "{ran} blocks run, {} not runnable, {} wrong; destroy-and-re-create in {recreating:?}",
        incomplete.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(ran > 0, "no block could be run");
    assert!(!recreating.is_empty(), "no block destroys an account and creates it again");
    let missing: Vec<_> = FORKS.iter().filter(|f| !forks.contains(*f)).collect();
    assert!(missing.is_empty(), "no block of {missing:?} was run");
}
