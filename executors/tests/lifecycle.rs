//! Accounts that die and come back within a batch: SELFDESTRUCT then CREATE2 at the same
//! address, creation onto an address that holds storage, creation and destruction in one
//! transaction, and EIP-7702 delegations used later in the batch. For every case, on
//! specs before and after Cancun and on several worker counts: the parallel engine and
//! sequential mode give plain revm's outcome for every transaction, and the changes,
//! applied, leave exactly the storage plain revm leaves (nothing of a destroyed account
//! comes back).

mod common;

use std::sync::Arc;

use alloy::{
    eips::eip7702::Authorization,
    signers::{SignerSync, local::PrivateKeySigner},
};
use common::{assert_same, phoenix, reference};
use ferry_executors::{
    BlockContext, Executor, ExecutorConfig, InMemoryState, SpecId, StateSource, TxEnv, TxStatus,
    bench::{self, CHAIN_ID, call},
};
use revm::{
    bytecode::Bytecode,
    primitives::{Address, B256, Bytes, U256, keccak256},
};

const FACTORY: Address = Address::repeat_byte(0xfa);
const SALT: B256 = B256::repeat_byte(0x5a);
const SPECS: [SpecId; 3] = [SpecId::SHANGHAI, SpecId::CANCUN, SpecId::PRAGUE];

/// Funded senders, the factory, and (optionally) the child already at its CREATE2
/// address with storage.
struct World {
    state: InMemoryState,
    senders: Vec<Address>,
    nonces: Vec<u64>,
    keys: Vec<PrivateKeySigner>,
}

impl World {
    fn new() -> Self {
        let keys: Vec<PrivateKeySigner> =
            (0..8).map(|i| PrivateKeySigner::from_bytes(&bench::account_key(i)).unwrap()).collect();
        let senders: Vec<Address> = keys.iter().map(|k| k.address()).collect();
        let mut state = InMemoryState::new();
        for s in &senders {
            state.set_account(*s, U256::from(10u128.pow(22)), 0);
        }
        state.set_code(FACTORY, Bytecode::new_raw(phoenix::factory_runtime().into()));
        state.set_account(FACTORY, U256::ZERO, 1);
        Self { state, nonces: vec![0; senders.len()], senders, keys }
    }

    /// The child deployed at `address` before the batch, with `storage`.
    fn with_child(mut self, address: Address, storage: &[(u64, u64)]) -> Self {
        self.state.set_code(address, Bytecode::new_raw(phoenix::child_runtime().into()));
        self.state.set_account(address, U256::from(1000), 1);
        self.with_storage(address, storage)
    }

    /// Storage at `address` and nothing else (no code, nonce or balance).
    fn with_storage(mut self, address: Address, storage: &[(u64, u64)]) -> Self {
        for (slot, value) in storage {
            self.state.set_storage(address, U256::from(*slot), U256::from(*value));
        }
        self
    }

    /// Sender `s`'s next transaction: `data` to `to`.
    fn tx(&mut self, s: usize, to: Address, data: Bytes) -> TxEnv {
        let tx = call(self.senders[s], self.nonces[s], to, data, U256::ZERO, 1_000_000);
        self.nonces[s] += 1;
        tx
    }
}

fn ctx(spec: SpecId) -> BlockContext {
    BlockContext { spec, ..bench::block_context() }
}

fn plain_child() -> Vec<u8> {
    phoenix::init_code(&phoenix::child_runtime(), &[])
}

fn child_address() -> Address {
    phoenix::create2_address(FACTORY, SALT, &plain_child())
}

/// Runs `txs` on plain revm, then on the parallel engine and by split execution with 2,
/// 3, 4 and 8 workers and in sequential mode, asserting every outcome and the final state equal; returns the
/// state after the batch, applied.
fn run_everywhere(label: &str, world: &World, spec: SpecId, txs: &[TxEnv]) -> InMemoryState {
    let state = Arc::new(world.state.clone());
    let ctx = ctx(spec);
    let (want, want_state) = reference(&state, &ctx, txs);
    for (i, o) in want.iter().enumerate() {
        assert!(!matches!(o.status, TxStatus::Invalid { .. }), "{label} {spec:?}: transaction {i} is invalid: {o:?}");
    }
    for workers in [2, 3, 4, 8] {
        let executor = Executor::new(ExecutorConfig { workers, min_parallel_batch: 1, record_access: false });
        for round in 0..4 {
            let got = executor.execute_parallel(state.clone(), ctx.clone(), txs.to_vec()).unwrap();
            let parallel = format!("{label} {spec:?}, parallel on {workers} workers, round {round}");
            assert_same(&parallel, &got.outcomes, &got.state(), &want, &want_state);
            let got = executor.execute_split(state.clone(), ctx.clone(), txs.to_vec()).unwrap();
            let split = format!("{label} {spec:?}, split on {workers} workers, round {round}");
            assert_same(&split, &got.outcomes, &got.state(), &want, &want_state);
        }
    }
    let executor = Executor::new(ExecutorConfig { workers: 1, min_parallel_batch: usize::MAX, record_access: false });
    let seq = executor.execute_sequential(state.clone(), ctx, txs.to_vec()).unwrap();
    assert_same(&format!("{label} {spec:?}, sequential"), &seq.outcomes, &seq.state(), &want, &want_state);
    let mut after = world.state.clone();
    after.apply(&want_state);
    after
}

fn slot(state: &InMemoryState, address: Address, slot: u64) -> U256 {
    state.storage(address, U256::from(slot)).unwrap()
}

fn word(address: Address) -> U256 {
    U256::from_be_slice(address.as_slice())
}

fn destroys(spec: SpecId) -> bool {
    !spec.is_enabled_in(SpecId::CANCUN)
}

#[test]
fn destroyed_by_an_earlier_transaction_then_created_again_by_create2() {
    for spec in SPECS {
        for constructor_writes in [false, true] {
            let init = if constructor_writes {
                phoenix::init_code(&phoenix::child_runtime(), &[(4, 7)])
            } else {
                plain_child()
            };
            let c = phoenix::create2_address(FACTORY, SALT, &init);
            let mut w = World::new().with_child(c, &[(1, 11), (2, 22), (4, 44)]);
            let txs = vec![
                w.tx(0, c, Bytes::new()),                                // destroy (before Cancun)
                w.tx(1, FACTORY, phoenix::create2_call(0, SALT, &init)), // re-create
                w.tx(2, c, phoenix::write(1, 5)),
                w.tx(3, c, phoenix::copy(2)),
                w.tx(4, c, phoenix::copy(1)),
                w.tx(5, c, phoenix::copy(4)),
            ];
            let label = format!("destroy, re-create (constructor writes: {constructor_writes})");
            let after = run_everywhere(&label, &w, spec, &txs);
            let u = U256::from;
            if destroys(spec) {
                assert_eq!(slot(&after, FACTORY, 0), word(c), "{label}: created again");
                assert_eq!(slot(&after, c, 1), u(5), "{label}");
                assert_eq!(slot(&after, c, 2), u(5), "{label}: copied from slot 1 after its write");
                assert_eq!(slot(&after, c, 3), u(0), "{label}: slot 2 read as empty, not as 22");
                let four = u(if constructor_writes { 7 } else { 0 });
                assert_eq!(slot(&after, c, 4), four, "{label}: slot 4 as the constructor left it");
                assert_eq!(slot(&after, c, 5), four, "{label}");
            } else {
                assert_eq!(slot(&after, FACTORY, 0), u(0), "{label}: the account lives on, CREATE2 collides");
                assert_eq!(slot(&after, c, 3), u(22), "{label}: slot 2 kept");
                assert_eq!(slot(&after, c, 5), u(44), "{label}: slot 4 kept");
            }
        }
    }
}

#[test]
fn written_then_destroyed_then_created_again_reads_empty() {
    for spec in SPECS {
        let c = child_address();
        let mut w = World::new().with_child(c, &[(1, 11)]);
        let txs = vec![
            w.tx(0, c, phoenix::write(2, 9)), // a write the destruction must take away
            w.tx(1, c, Bytes::new()),
            w.tx(2, FACTORY, phoenix::create2_call(0, SALT, &plain_child())),
            w.tx(3, c, phoenix::copy(2)),
            w.tx(4, c, phoenix::copy(1)),
        ];
        let after = run_everywhere("write, destroy, re-create", &w, spec, &txs);
        let expect = |destroyed: u64, kept: u64| U256::from(if destroys(spec) { destroyed } else { kept });
        assert_eq!(slot(&after, c, 2), expect(0, 11), "{spec:?}: slot 1 as the batch left it, copied");
        assert_eq!(slot(&after, c, 3), expect(0, 9), "{spec:?}: slot 2 as the batch left it, copied");
    }
}

#[test]
fn created_and_destroyed_in_one_transaction_then_created_again() {
    for spec in SPECS {
        let c = child_address();
        // The address holds storage but no code, nonce or balance.
        let mut w = World::new().with_storage(c, &[(1, 11), (2, 22)]);
        let txs = vec![
            w.tx(0, FACTORY, phoenix::create2_call(2, SALT, &plain_child())), // create, destroy at once
            w.tx(1, FACTORY, phoenix::create2_call(0, SALT, &plain_child())), // and again
            w.tx(2, c, phoenix::copy(1)),
            w.tx(3, c, phoenix::write(5, 1)),
        ];
        let after = run_everywhere("create and destroy, create", &w, spec, &txs);
        assert_eq!(slot(&after, FACTORY, 0), word(c), "{spec:?}: created again");
        assert_eq!(slot(&after, c, 2), U256::ZERO, "{spec:?}: slot 1 read as empty after the creation");
        assert_eq!(slot(&after, c, 1), U256::ZERO, "{spec:?}: nothing of the old storage is left");
    }
}

#[test]
fn created_onto_an_address_holding_only_storage_by_create_and_create2() {
    for spec in SPECS {
        let by_create2 = child_address();
        // The factory's CREATE after its CREATE2 (which took nonce 1).
        let by_create = FACTORY.create(2);
        let mut w = World::new().with_storage(by_create2, &[(1, 11), (3, 33)]).with_storage(by_create, &[(1, 12)]);
        let txs = vec![
            w.tx(0, FACTORY, phoenix::create2_call(0, SALT, &plain_child())),
            w.tx(1, FACTORY, phoenix::create_call(&plain_child())),
            w.tx(2, by_create2, phoenix::copy(1)),
            w.tx(3, by_create, phoenix::copy(1)),
            w.tx(4, by_create2, phoenix::write(3, 4)),
        ];
        let after = run_everywhere("create onto storage", &w, spec, &txs);
        assert_eq!(slot(&after, FACTORY, 0), word(by_create), "{spec:?}: the CREATE landed where expected");
        assert_eq!(slot(&after, by_create2, 2), U256::ZERO, "{spec:?}: the CREATE2 account's storage starts empty");
        assert_eq!(slot(&after, by_create, 2), U256::ZERO, "{spec:?}: the CREATE account's storage starts empty");
        assert_eq!(slot(&after, by_create2, 3), U256::from(4));
        assert_eq!(slot(&after, by_create, 1), U256::ZERO, "{spec:?}: nothing of the old storage is left");
    }
}

/// An EIP-7702 authorization by `key` for `target`, at the authority's `nonce`.
fn authorize(key: &PrivateKeySigner, target: Address, nonce: u64) -> alloy::eips::eip7702::SignedAuthorization {
    let auth = Authorization { chain_id: U256::from(CHAIN_ID), address: target, nonce };
    let signature = key.sign_hash_sync(&auth.signature_hash()).unwrap();
    auth.into_signed(signature)
}

#[test]
fn code_installed_by_a_delegation_is_seen_by_later_transactions() {
    let delegate = Address::repeat_byte(0xde);
    let mut w = World::new();
    w.state.set_code(delegate, Bytecode::new_raw(phoenix::child_runtime().into()));
    w.state.set_account(delegate, U256::ZERO, 1);
    // Sender 7 delegates its account to the child's code; it sends nothing itself.
    let eoa = w.senders[7];
    let mut delegation = w.tx(0, w.senders[0], Bytes::new());
    delegation.tx_type = 4;
    delegation.set_signed_authorization(vec![authorize(&w.keys[7], delegate, 0)]);
    let txs = vec![
        delegation,
        w.tx(1, FACTORY, phoenix::probe_call(eoa, &phoenix::write(1, 5))),
        w.tx(2, eoa, phoenix::copy(1)),
        w.tx(3, FACTORY, phoenix::probe_call(eoa, &phoenix::copy(2))),
    ];
    let after = run_everywhere("delegation", &w, SpecId::PRAGUE, &txs);
    let designator = [&[0xef, 0x01, 0x00][..], delegate.as_slice()].concat();
    assert_eq!(slot(&after, FACTORY, 1), U256::from(designator.len()), "EXTCODESIZE of the delegated account");
    assert_eq!(slot(&after, FACTORY, 2), U256::from_be_bytes(keccak256(&designator).0));
    assert_eq!(slot(&after, eoa, 1), U256::from(5), "the call ran the delegated code");
    assert_eq!(slot(&after, eoa, 3), U256::from(5), "and the later ones too");
}
