//! Predicting on top of transactions not yet mined: a batch run over a [`LayeredState`]
//! (the state before, with the earlier batch's per-transaction changes laid over it)
//! gives exactly what it gives on the state that earlier batch left.

mod common;

use std::sync::Arc;

use common::{assert_same, reference};
use ferry_executors::{
    Executor, ExecutorConfig, LayeredState, StateDiff, StateSource, TxStatus,
    bench::{self, Fixture},
};
use revm::primitives::{U256, keccak256};

#[test]
fn a_batch_on_layered_changes_matches_the_batch_on_committed_state() {
    let f = Fixture::new(64).unwrap();
    let executor = Executor::new(ExecutorConfig { workers: 2, min_parallel_batch: 1, record_access: false });
    for workload in bench::workloads(&f, 24) {
        let (earlier, later) = workload.txs.split_at(12);
        let first = executor.execute(f.state.clone(), f.ctx.clone(), earlier.to_vec()).unwrap();
        assert!(first.outcomes.iter().all(|o| o.status == TxStatus::Success), "{}", workload.name);

        // What a relayer holds of transactions in flight: each one's own changes, in order.
        let mut pending = StateDiff::default();
        for outcome in &first.outcomes {
            pending.merge(&outcome.state);
        }
        assert_eq!(pending, first.state(), "{}: per-transaction changes compose to the batch's", workload.name);

        let mut committed = (*f.state).clone();
        committed.apply(&first.state());
        let (want, want_state) = reference(&Arc::new(committed), &f.ctx, later);
        let layered: Arc<dyn StateSource> = Arc::new(LayeredState::new(f.state.clone(), pending));
        let got = executor.execute(layered, f.ctx.clone(), later.to_vec()).unwrap();
        assert_same(workload.name, &got.outcomes, &got.state(), &want, &want_state);

        // And the whole batch at once agrees on the later half.
        let (whole, _) = reference(&f.state, &f.ctx, &workload.txs);
        let gas: Vec<u64> = whole[12..].iter().map(|o| o.gas_used).collect();
        assert_eq!(got.outcomes.iter().map(|o| o.gas_used).collect::<Vec<_>>(), gas, "{}", workload.name);
    }
}

#[test]
fn a_destroyed_account_shows_nothing_of_its_base() {
    let f = Fixture::new(4).unwrap();
    let token = f.token;
    // OpenZeppelin's `_balances` is the token's first mapping: slot keccak(holder . 0).
    let mut key = [0u8; 64];
    key[12..32].copy_from_slice(f.accounts[0].as_slice());
    let slot = U256::from_be_bytes(keccak256(key).0);
    assert!(f.state.basic(token).unwrap().is_some());
    assert_ne!(f.state.storage(token, slot).unwrap(), U256::ZERO, "the holder's balance in the base");
    let mut gone = StateDiff::default();
    gone.insert(token, Default::default());
    let layered = LayeredState::new(f.state.clone(), gone);
    assert!(layered.basic(token).unwrap().is_none());
    assert_eq!(layered.storage(token, slot).unwrap(), U256::ZERO);
}
