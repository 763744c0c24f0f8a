//! Predictions on state forked from a live anvil chain against the receipts anvil then
//! produces: 50 ERC-20 transfers and 20 Mailbox deliveries, each in one block.

use std::sync::Arc;

use alloy::{
    network::TransactionBuilder,
    primitives::{Address, B256, Bytes, U256},
    providers::{DynProvider, Provider, ProviderBuilder, ext::AnvilApi},
    rpc::types::{TransactionReceipt, TransactionRequest},
    signers::{SignerSync, local::PrivateKeySigner},
    sol_types::SolCall,
};
use ferry_devnet::{Devnet, DevnetInfo, DevnetOptions};
use ferry_executors::{
    AccessPredictor, AccountDiff, AccountState, BlockContext, Executor, ExecutorConfig, ForkedState, LayeredState,
    SpecId, StateDiff, StateSource, TxEnv, TxOutcome, TxStatus,
    validation::{ReceiptMismatch, compare_with_receipt},
};
use ferry_messages::{
    Attestation, Message, QuorumCertificate,
    contracts::{Mailbox, TestRecipient, TestToken},
};
use revm::primitives::TxKind;

const MAX_FEE: u128 = 20_000_000_000;
const TIP: u128 = 1_000_000_000;

fn wallet(url: &str, key: B256) -> DynProvider {
    ferry_devnet::wallet(url, key).unwrap()
}

/// A devnet that mines on demand, the runtime it runs on, its accounts and their keys.
fn start() -> (tokio::runtime::Runtime, Devnet, DevnetInfo, Vec<(Address, B256)>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let devnet = runtime.block_on(Devnet::start(DevnetOptions { block_time: None, ..Default::default() })).unwrap();
    let info = devnet.info().clone();
    let keys = info.accounts.iter().map(|a| (a.address, a.private_key)).collect();
    (runtime, devnet, info, keys)
}

/// The chain at `url` forked at `block`, read on `runtime`.
fn forked(runtime: &tokio::runtime::Runtime, url: &str, block: u64) -> Arc<ForkedState> {
    let provider = ProviderBuilder::new().connect_http(url.parse().unwrap()).erased();
    Arc::new(ForkedState::new(provider, runtime.handle().clone(), block))
}

/// Has anvil mine a block; returns its number.
fn mine_one(runtime: &tokio::runtime::Runtime, provider: &DynProvider) -> u64 {
    runtime.block_on(provider.anvil_mine(Some(1), None)).unwrap();
    runtime.block_on(provider.get_block_number()).unwrap()
}

/// The context of the block anvil will mine next, and the block to fork at.
async fn next_block(provider: &DynProvider, chain_id: u64) -> (BlockContext, u64) {
    let latest = provider.get_block_number().await.unwrap();
    let header = provider.get_block_by_number(latest.into()).await.unwrap().unwrap().header.inner;
    assert!(header.base_fee_per_gas.is_some(), "a London block");
    (BlockContext::after(&header, chain_id, SpecId::OSAKA), latest)
}

fn tx(caller: Address, nonce: u64, to: Address, data: Vec<u8>, gas_limit: u64, chain_id: u64) -> TxEnv {
    TxEnv {
        tx_type: 2,
        caller,
        gas_limit,
        gas_price: MAX_FEE,
        gas_priority_fee: Some(TIP),
        kind: TxKind::Call(to),
        data: data.into(),
        nonce,
        chain_id: Some(chain_id),
        ..Default::default()
    }
}

/// Sends the same transactions to anvil and mines them into one block.
async fn land(url: &str, keys: &[(Address, B256)], txs: &[TxEnv]) -> Vec<TransactionReceipt> {
    let plain = ProviderBuilder::new().connect_http(url.parse().unwrap()).erased();
    plain.anvil_set_auto_mine(false).await.unwrap();
    let mut pending = Vec::new();
    for t in txs {
        let key = keys.iter().find(|(a, _)| *a == t.caller).unwrap().1;
        let TxKind::Call(to) = t.kind else { panic!("calls only") };
        let request = TransactionRequest::default()
            .with_from(t.caller)
            .with_to(to)
            .with_input(t.data.clone())
            .with_nonce(t.nonce)
            .with_gas_limit(t.gas_limit)
            .with_max_fee_per_gas(MAX_FEE)
            .with_max_priority_fee_per_gas(TIP)
            .with_chain_id(t.chain_id.unwrap());
        pending.push(wallet(url, key).send_transaction(request).await.unwrap());
    }
    plain.evm_mine(None).await.unwrap();
    plain.anvil_set_auto_mine(true).await.unwrap();
    let mut receipts = Vec::new();
    for p in pending {
        receipts.push(p.get_receipt().await.unwrap());
    }
    let block = receipts[0].block_number;
    assert!(receipts.iter().all(|r| r.block_number == block), "all in one block");
    receipts
}

fn check_all(predicted: &[TxOutcome], receipts: &[TransactionReceipt]) {
    assert_eq!(predicted.len(), receipts.len());
    for (i, (p, r)) in predicted.iter().zip(receipts).enumerate() {
        compare_with_receipt(p, r).unwrap_or_else(|e| panic!("transaction {i}: {e}"));
        assert_eq!(p.status, TxStatus::Success);
    }
    // A deliberately wrong prediction is reported, with both sides.
    let mut wrong = predicted[0].clone();
    wrong.gas_used += 1;
    assert_eq!(
        compare_with_receipt(&wrong, &receipts[0]),
        Err(ReceiptMismatch::GasUsed { predicted: receipts[0].gas_used + 1, actual: receipts[0].gas_used })
    );
    let mut wrong = predicted[0].clone();
    wrong.status = TxStatus::Revert { reason: "made up".into() };
    assert!(matches!(compare_with_receipt(&wrong, &receipts[0]), Err(ReceiptMismatch::Status { .. })));
    let mut wrong = predicted[0].clone();
    wrong.logs.pop();
    assert!(matches!(compare_with_receipt(&wrong, &receipts[0]), Err(ReceiptMismatch::Logs { .. })));
}

#[test]
fn predictions_on_forked_state_match_what_anvil_does() {
    let (runtime, devnet, info, keys) = start();
    let [alpha, beta] = devnet.deployments().clone();
    let user = info.accounts[0].address;
    let relayer = info.accounts[9].address;
    let executor = Executor::new(ExecutorConfig { workers: 2, min_parallel_batch: 4, record_access: true });

    // 50 ERC-20 transfers on alpha, one sender, in one block.
    let a = wallet(&info.chains[0].rpc_url, info.accounts[0].private_key);
    let (ctx, fork_at) = runtime.block_on(next_block(&a, 31337));
    let nonce = runtime.block_on(a.get_transaction_count(user).into_future()).unwrap();
    let transfers: Vec<TxEnv> = (0..50u64)
        .map(|i| {
            let data = TestToken::transferCall {
                to: info.accounts[1 + (i as usize % 8)].address,
                value: U256::from(1000 + i),
            }
            .abi_encode();
            tx(user, nonce + i, alpha.token, data, 100_000, 31337)
        })
        .collect();
    let fork = forked(&runtime, &info.chains[0].rpc_url, fork_at);
    let predicted = executor.execute(fork, ctx, transfers.clone()).unwrap();
    assert_eq!(predicted.access.len(), 50);
    let receipts = runtime.block_on(land(&info.chains[0].rpc_url, &keys, &transfers));
    check_all(&predicted.outcomes, &receipts);

    // 20 messages dispatched on alpha to a recipient on beta, signed by the validators.
    let b = wallet(&info.chains[1].rpc_url, info.accounts[0].private_key);
    let recipient = *runtime.block_on(TestRecipient::deploy(&b)).unwrap().address();
    let mailbox_a = Mailbox::new(alpha.mailbox, &a);
    let mut deliveries = Vec::new();
    let relayer_nonce = runtime.block_on(b.get_transaction_count(relayer).into_future()).unwrap();
    for i in 0..20u64 {
        let receipt = runtime
            .block_on(async {
                mailbox_a
                    .dispatch(31338, recipient.into_word(), Bytes::from(vec![i as u8; 8]))
                    .send()
                    .await
                    .unwrap()
                    .get_receipt()
                    .await
            })
            .unwrap();
        let log = receipt.inner.logs().iter().find_map(|l| l.log_decode::<Mailbox::Dispatch>().ok()).unwrap();
        let message = Message::decode(&log.inner.data.message).unwrap();
        let attestation = Attestation {
            origin: 31337,
            origin_mailbox: alpha.mailbox.into_word(),
            destination: 31338,
            block_hash: receipt.block_hash.unwrap(),
            id: message.id(),
        };
        let signatures = devnet.validator_keys()[..2]
            .iter()
            .map(|k| PrivateKeySigner::from_bytes(k).unwrap().sign_hash_sync(&attestation.signing_hash()).unwrap())
            .collect();
        let metadata = QuorumCertificate::ordered(&attestation, signatures).unwrap().metadata();
        let data = Mailbox::processCall { metadata: metadata.into(), message: message.encode().into() }.abi_encode();
        deliveries.push(tx(relayer, relayer_nonce + i, beta.mailbox, data, 400_000, 31338));
    }
    let (ctx, fork_at) = runtime.block_on(next_block(&b, 31338));
    let fork = forked(&runtime, &info.chains[1].rpc_url, fork_at);
    // Prefetch what the same (contract, selector) touched last time.
    let predictor = AccessPredictor::new();
    let warmup = executor
        .execute(forked(&runtime, &info.chains[1].rpc_url, fork_at), ctx.clone(), deliveries[..1].to_vec())
        .unwrap();
    predictor.learn(&deliveries[..1], &warmup.access);
    let prediction = predictor.predict(&deliveries);
    assert!(!prediction.slots.is_empty(), "the Mailbox's slots were learned");
    let fetched = fork.prefetch(&prediction.accounts, &prediction.slots).unwrap();
    assert!(fetched > 2, "prefetched {fetched}");
    let predicted = executor.execute(fork, ctx, deliveries.clone()).unwrap();
    let receipts = runtime.block_on(land(&info.chains[1].rpc_url, &keys, &deliveries));
    check_all(&predicted.outcomes, &receipts);
    for r in &receipts {
        assert!(r.inner.logs().iter().any(|l| l.log_decode::<Mailbox::Process>().is_ok()), "delivered");
    }
    drop(executor);
    drop(devnet);
}

/// A fork that follows the chain to the next block reads again, in one batched request,
/// what its batches read, at the new block: the next prediction on it reads nothing over
/// RPC on its own, and matches what anvil then does (the first transfer's effects, a
/// new nonce and balances, are seen, not the old values).
#[test]
fn a_fork_that_follows_the_chain_rereads_what_was_read_in_one_batch() {
    let (runtime, devnet, info, keys) = start();
    let [alpha, _] = devnet.deployments().clone();
    let user = info.accounts[0].address;
    let executor = Executor::new(ExecutorConfig { workers: 2, min_parallel_batch: 4, record_access: false });
    let a = wallet(&info.chains[0].rpc_url, info.accounts[0].private_key);
    let transfer = |nonce: u64, value: u64| {
        let data = TestToken::transferCall { to: info.accounts[1].address, value: U256::from(value) }.abi_encode();
        tx(user, nonce, alpha.token, data, 100_000, 31337)
    };

    let (ctx, fork_at) = runtime.block_on(next_block(&a, 31337));
    let nonce = runtime.block_on(a.get_transaction_count(user).into_future()).unwrap();
    let first = forked(&runtime, &info.chains[0].rpc_url, fork_at);
    let predicted = executor.execute(first.clone(), ctx, vec![transfer(nonce, 5)]).unwrap();
    assert!(first.reads().rpc > 0, "a cold fork reads on demand");
    check_all(&predicted.outcomes, &runtime.block_on(land(&info.chains[0].rpc_url, &keys, &[transfer(nonce, 5)])));

    let (ctx, next_at) = runtime.block_on(next_block(&a, 31337));
    assert!(next_at > fork_at);
    let next = Arc::new(first.follow(next_at));
    let fetched = next.prefetch(&[], &[]).unwrap();
    assert!(fetched >= 3, "the sender, the token and its slots are carried: {fetched}");
    let carried = next.reads();
    // One request for balances, nonces and slots; one more for the code of the sender,
    // whose nonce moved (a delegation would have moved it too).
    assert_eq!((carried.rpc, carried.batches), (0, 2), "{carried:?}");
    let second = vec![transfer(nonce + 1, 7)];
    let predicted = executor.execute(next.clone(), ctx, second.clone()).unwrap();
    assert_eq!(next.reads().rpc, 0, "everything the same kind of batch reads was carried: {:?}", next.reads());
    assert!(next.reads().cache > 0);
    check_all(&predicted.outcomes, &runtime.block_on(land(&info.chains[0].rpc_url, &keys, &second)));
    drop(executor);
    drop(devnet);
}

/// A round's own slots (`prefetch_round`) are read like the rest but not carried to the
/// next block once read, while the same slots prefetched as lasting ones are: the same
/// transfer on two forks of one block, then each fork followed to the next block.
#[test]
fn a_rounds_own_slots_are_not_carried_to_the_next_block() {
    let (runtime, devnet, info, _keys) = start();
    let [alpha, _] = devnet.deployments().clone();
    let user = info.accounts[0].address;
    let executor = Executor::new(ExecutorConfig { workers: 2, min_parallel_batch: 4, record_access: true });
    let a = wallet(&info.chains[0].rpc_url, info.accounts[0].private_key);
    let nonce = runtime.block_on(a.get_transaction_count(user).into_future()).unwrap();
    let data = TestToken::transferCall { to: info.accounts[1].address, value: U256::from(3) }.abi_encode();
    let transfer = vec![tx(user, nonce, alpha.token, data, 100_000, 31337)];
    let (ctx, fork_at) = runtime.block_on(next_block(&a, 31337));
    let learned = executor.execute(forked(&runtime, &info.chains[0].rpc_url, fork_at), ctx.clone(), transfer.clone());
    let slots = learned.unwrap().access[0].slots.clone();
    assert!(!slots.is_empty(), "a token transfer reads balances");

    let (round, lasting) =
        (forked(&runtime, &info.chains[0].rpc_url, fork_at), forked(&runtime, &info.chains[0].rpc_url, fork_at));
    round.prefetch_round(&[], &[], &slots).unwrap();
    lasting.prefetch(&[], &slots).unwrap();
    for fork in [&round, &lasting] {
        executor.execute(fork.clone(), ctx.clone(), transfer.clone()).unwrap();
        // The slots come from the cache; the accounts were read on demand.
        assert_eq!(fork.reads().cache, slots.len() as u64, "{:?}", fork.reads());
    }
    let accounts = round.reads().rpc as usize;
    assert_eq!(accounts, lasting.reads().rpc as usize);
    let next_at = mine_one(&runtime, &a);
    let (round, lasting) = (round.follow(next_at), lasting.follow(next_at));
    let (from_round, from_lasting) = (round.prefetch(&[], &[]).unwrap(), lasting.prefetch(&[], &[]).unwrap());
    assert_eq!(from_lasting, from_round + slots.len(), "the lasting fork re-reads the slots, the round's does not");
    assert_eq!(from_round, accounts, "both re-read the accounts read on demand");
    drop(executor);
    drop(devnet);
}

/// Reads a diff laid over the fork answered (values transactions in flight wrote) are
/// carried to the next block like the fork's own: once those transactions are mined,
/// the next round reads them from the fork, and they must come with its one batched
/// prefetch, not as misses read one round trip each.
#[test]
fn reads_answered_by_a_diff_laid_over_the_fork_are_carried() {
    let (runtime, devnet, info, _keys) = start();
    let [alpha, _] = devnet.deployments().clone();
    let a = wallet(&info.chains[0].rpc_url, info.accounts[0].private_key);
    let fork_at = runtime.block_on(a.get_block_number()).unwrap();
    let fork = forked(&runtime, &info.chains[0].rpc_url, fork_at);
    let (slot, written) = (U256::from(2), U256::from(77));
    let in_flight = AccountDiff {
        info: Some(AccountState::default()),
        code: None,
        storage_cleared: false,
        storage: vec![(slot, written)],
    };
    let layered = LayeredState::new(fork.clone(), StateDiff::from_accounts(vec![(alpha.token, in_flight)]));
    // Answered by the diff, and so never read from the fork.
    assert_eq!(layered.storage(alpha.token, slot).unwrap(), written);
    assert!(layered.account(alpha.token).unwrap().is_some());
    assert_eq!(fork.reads(), Default::default(), "nothing read from the fork");

    let next_at = mine_one(&runtime, &a);
    let next = Arc::new(fork.follow(next_at));
    assert_eq!(next.prefetch(&[], &[]).unwrap(), 2, "the token and its slot are carried");
    let on_chain = runtime.block_on(a.get_storage_at(alpha.token, slot).into_future()).unwrap();
    assert_eq!(next.storage(alpha.token, slot).unwrap(), on_chain, "the chain's value, not the diff's");
    assert!(next.basic(alpha.token).unwrap().is_some());
    assert_eq!(next.reads().rpc, 0, "both came with the prefetch: {:?}", next.reads());
    drop(devnet);
}
