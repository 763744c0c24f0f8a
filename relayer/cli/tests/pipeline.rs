//! The relayer pipeline end to end on a real anvil pair and a real nats-server: every
//! message carried once, verified, in batches; failures parked; restarts resumed.

mod common;

use std::time::Duration;

use alloy::{
    primitives::{Bytes, U256},
    providers::Provider,
};
use common::{Net, amounts, assert_once, wait_for};
use ferry_messages::contracts::{Mailbox, TestRecipient, TokenBridge};
use ferry_relayer::{MessageRecord, Role, Service, Stage};

const BLOCK: Option<Duration> = Some(Duration::from_millis(500));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_of_random_amounts_keeps_balances_exact() {
    let net = Net::start(BLOCK, 2).await;
    let service = Service::start(net.config.clone(), Role::All).await.unwrap();
    let user = net.account(0);
    let receiver = net.account(1);
    let before_alpha = net.balance("alpha", user).await;

    let there = amounts(20, 7);
    let ids = net.send_many("alpha", "beta", 0, receiver, &there).await;
    let processed = net.wait_processed("beta", &ids, Duration::from_secs(120)).await;
    assert_once(&processed, &ids);
    let sent: U256 = there.iter().copied().sum();
    assert_eq!(net.balance("beta", receiver).await, sent);

    let back = amounts(20, 11).into_iter().map(|a| a % (sent / U256::from(20)) + U256::from(1)).collect::<Vec<_>>();
    let ids_back = net.send_many("beta", "alpha", 1, user, &back).await;
    let processed = net.wait_processed("alpha", &ids_back, Duration::from_secs(120)).await;
    assert_once(&processed, &ids_back);
    let returned: U256 = back.iter().copied().sum();

    assert_eq!(net.balance("beta", receiver).await, sent - returned);
    assert_eq!(net.balance("alpha", user).await, before_alpha - sent + returned);
    let locked_on_alpha = net.balance("alpha", net.config.chains["alpha"].bridge.unwrap()).await;
    assert_eq!(locked_on_alpha, net.supply("beta").await, "locked on alpha == supply on beta");
    // This process's own validators signed every attestation: the collector recalls
    // their signers instead of recovering them.
    let checked = service.context().metrics.collector_signatures_checked_total.clone();
    let (memo, curve) = (checked.with_label_values(&["memo"]).get(), checked.with_label_values(&["curve"]).get());
    assert!(memo >= 40, "one signature of each of the 40 messages at least: {memo}");
    assert_eq!(curve, 0, "no signature of our own validators is recovered");

    // Ready: both watchers caught up, NATS connected.
    let api = net.api();
    wait_for(Duration::from_secs(30), "/readyz to say ready", || async {
        reqwest::get(format!("{api}/readyz")).await.ok().filter(|r| r.status().is_success())
    })
    .await;
    // The API tells the whole story of a message.
    let record: MessageRecord =
        reqwest::get(format!("{}/messages/{}", net.api(), ids[0])).await.unwrap().json().await.unwrap();
    assert_eq!(record.stage(), Stage::Delivered);
    let stages: Vec<Stage> = record.history().iter().map(|e| e.stage).collect();
    assert_eq!(
        stages,
        [
            Stage::Observed,
            Stage::Proven,
            Stage::Attested,
            Stage::Published,
            Stage::Executed,
            Stage::Submitted,
            Stage::Delivered
        ]
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_messages_both_ways_arrive_once_in_few_transactions() {
    let net = Net::start(BLOCK, 2).await;
    let service = Service::start(net.config.clone(), Role::All).await.unwrap();
    // Account 1 gets synthetic tokens on beta first, to send back.
    let seed = net.send_many("alpha", "beta", 0, net.account(1), &[U256::from(10u64.pow(12))]).await;
    net.wait_processed("beta", &seed, Duration::from_secs(120)).await;

    let (a, b) = (amounts(250, 1), vec![U256::from(1000u64); 250]);
    let (there, back) = tokio::join!(
        net.send_many("alpha", "beta", 0, net.account(3), &a),
        net.send_many("beta", "alpha", 1, net.account(4), &b),
    );
    let on_beta = net.wait_processed("beta", &there, Duration::from_secs(240)).await;
    let on_alpha = net.wait_processed("alpha", &back, Duration::from_secs(240)).await;
    let txs = assert_once(&on_beta, &there) + assert_once(&on_alpha, &back);
    assert!(txs * 5 <= 500, "500 messages took {txs} transactions");
    assert!(net.failed("alpha").await.is_empty() && net.failed("beta").await.is_empty());
    // Rounds were predicted on top of the transactions still in flight. The parallel
    // engine never disagreed with its sequential re-runs; a receipt that disagreed with
    // its prediction (rare: once in a CI run, not yet explained) is flagged on exactly
    // the messages it carried, which were delivered all the same.
    let metrics = &service.context().metrics;
    let store = &service.context().store;
    for chain in ["alpha", "beta"] {
        let sequential = metrics.validation_mismatches_total.with_label_values(&[chain, "sequential"]).get();
        assert_eq!(sequential, 0, "sequential mismatches on {chain}");
        let receipts = metrics.validation_mismatches_total.with_label_values(&[chain, "receipt"]).get();
        let ids = if chain == "beta" { &there } else { &back };
        let flagged = ids.iter().filter(|id| store.get(id).unwrap().unwrap().mismatch().is_some()).count();
        assert_eq!(flagged > 0, receipts > 0, "{receipts} receipt mismatches on {chain}, {flagged} messages flagged");
        if receipts > 0 {
            eprintln!("{receipts} receipt mismatches on {chain}, {flagged} messages flagged");
        }
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_would_revert_is_parked_unsent_and_can_be_retried() {
    let net = Net::start(BLOCK, 2).await;
    let service = Service::start(net.config.clone(), Role::All).await.unwrap();
    let beta = net.wallet("beta", 0);
    let recipient = TestRecipient::deploy(&beta).await.unwrap();
    recipient.setRejecting(true).send().await.unwrap().get_receipt().await.unwrap();

    let alpha = net.wallet("alpha", 5);
    let mailbox = Mailbox::new(net.config.chains["alpha"].mailbox, &alpha);
    let receipt = mailbox
        .dispatch(31338, recipient.address().into_word(), Bytes::from_static(b"hello"))
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let parked_id =
        receipt.inner.logs().iter().find_map(|l| l.log_decode::<Mailbox::Dispatch>().ok()).unwrap().inner.data.id;
    net.pay_for("alpha", 5, parked_id, 31338, 100_000).await;
    let ids = net.send_many("alpha", "beta", 0, net.account(1), &amounts(5, 3)).await;
    net.wait_processed("beta", &ids, Duration::from_secs(120)).await;

    let store = &service.context().store;
    let record = wait_for(Duration::from_secs(60), "the message parked", || async {
        store.get(&parked_id).unwrap().filter(|r| r.stage() == Stage::Parked)
    })
    .await;
    let reason = record.parked_reason().unwrap().to_string();
    assert!(reason.contains("Rejected"), "{reason}");
    assert!(record.tx_hash().is_none(), "no transaction was sent for it");
    assert!(!net.processed("beta").await.contains_key(&parked_id));
    assert!(!net.failed("beta").await.contains(&parked_id));
    let metrics = reqwest::get(format!("{}/metrics", net.api())).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"ferry_messages_parked_total{destination="beta",origin="alpha",reason="recipient"} 1"#),
        "{metrics}"
    );

    // The recipient is fixed; the operator retries; it is delivered once.
    recipient.setRejecting(false).send().await.unwrap().get_receipt().await.unwrap();
    let retried =
        reqwest::Client::new().post(format!("{}/messages/{parked_id}/retry", net.api())).send().await.unwrap();
    assert!(retried.status().is_success(), "{}", retried.text().await.unwrap());
    let processed = net.wait_processed("beta", &[parked_id], Duration::from_secs(60)).await;
    assert_once(&processed, &[parked_id]);
    assert_eq!(recipient.received().call().await.unwrap(), U256::from(1));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_stopped_mid_run_resumes_from_its_store_and_delivers_each_once() {
    let net = Net::start(BLOCK, 2).await;
    let service = Service::start(net.config.clone(), Role::All).await.unwrap();
    let ids = net.send_many("alpha", "beta", 0, net.account(1), &amounts(200, 5)).await;
    // Stop as soon as some, not all, are delivered.
    wait_for(Duration::from_secs(120), "the first deliveries", || async {
        let n = net.processed("beta").await.len();
        (n > 0).then_some(n)
    })
    .await;
    service.stop().await;
    let delivered_before = net.processed("beta").await.len();

    let service = Service::start(net.config.clone(), Role::All).await.unwrap();
    let processed = net.wait_processed("beta", &ids, Duration::from_secs(180)).await;
    assert_once(&processed, &ids);
    assert!(delivered_before <= ids.len());
    // The store agrees with the chain (it confirms just after the receipt).
    let store = &service.context().store;
    wait_for(Duration::from_secs(60), "200 delivered records", || async {
        (store.list(Some(Stage::Delivered), 1000).unwrap().len() == 200).then_some(())
    })
    .await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_dropped_by_a_shallow_reorg_are_never_attested() {
    use alloy::{
        eips::Encodable2718,
        providers::ext::AnvilApi,
        rpc::types::anvil::{ReorgOptions, TransactionData},
    };
    // Automine: each transaction is a block and the test decides when more come, so the
    // reorg lands before finality (3 confirmations).
    let net = Net::start(None, 3).await;
    let service = Service::start(net.config.clone(), Role::All).await.unwrap();
    let alpha = alloy::providers::ProviderBuilder::new().connect_http(net.rpc("alpha").parse().unwrap());
    // approve (k), transfer A (k+1), transfer B (k+2).
    let ids = net.send_many("alpha", "beta", 0, net.account(1), &[U256::from(111), U256::from(222)]).await;
    let tip = alpha.get_block_number().await.unwrap();
    let head = &service.context().metrics.chain_head_block;
    wait_for(Duration::from_secs(60), "the watcher sees both transfers", || async {
        (head.with_label_values(&["alpha"]).get() >= tip as i64).then_some(())
    })
    .await;
    let a_tx = dispatched(&net).await.into_iter().find(|(id, _)| *id == ids[0]).unwrap().1;
    let a = alpha.get_transaction_by_hash(a_tx).await.unwrap().unwrap();
    // Replace both blocks with one holding only A: B's block is gone, and B with it.
    let raw = a.inner.encoded_2718();
    let options = ReorgOptions { depth: 2, tx_block_pairs: vec![(TransactionData::Raw(raw.into()), 0)] };
    alpha.anvil_reorg(options).await.unwrap();
    alpha.anvil_mine(Some(6), None).await.unwrap();

    let canonical: Vec<_> = dispatched(&net).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(canonical, [ids[0]], "A was re-included with the same id; B is gone");
    let processed = net.wait_processed("beta", &canonical, Duration::from_secs(120)).await;
    assert_once(&processed, &canonical);
    assert!(!processed.contains_key(&ids[1]), "nothing from the dropped block was delivered");
    assert!(service.context().store.get(&ids[1]).unwrap().is_none(), "the dropped message was never observed");
    assert!(service.context().metrics.light_client_reorgs_total.with_label_values(&["alpha"]).get() >= 1);
    service.stop().await;
}

/// Ids and transactions of the `Dispatch` events on alpha's canonical chain.
async fn dispatched(net: &Net) -> Vec<(alloy::primitives::B256, alloy::primitives::B256)> {
    use alloy::sol_types::SolEvent;
    let provider = alloy::providers::ProviderBuilder::new().connect_http(net.rpc("alpha").parse().unwrap());
    let filter = alloy::rpc::types::Filter::new()
        .address(net.config.chains["alpha"].mailbox)
        .event_signature(Mailbox::Dispatch::SIGNATURE_HASH)
        .from_block(0);
    provider.get_logs(&filter).await.unwrap().iter().map(|l| (l.topics()[1], l.transaction_hash.unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_over_the_inbound_rate_limit_waits_for_the_bucket_and_is_delivered_once() {
    let net = Net::start(BLOCK, 2).await;
    // beta's bridge takes 1,000 from alpha at once and regains 100 a second.
    let owner = net.wallet("beta", 0);
    let bridge = TokenBridge::new(net.config.chains["beta"].bridge.unwrap(), &owner);
    let (capacity, refill) = (U256::from(1_000), U256::from(100));
    // A gas limit of its own: estimated in the second the devnet set the bucket, the
    // write of its timestamp costs nothing, and mined a second later it runs out of gas.
    let call = bridge.setRateLimit(31337, true, capacity, refill).gas(200_000);
    let receipt = call.send().await.unwrap().get_receipt().await.unwrap();
    assert!(receipt.status(), "setRateLimit reverted: {receipt:?}");
    let service = Service::start(net.config.clone(), Role::All).await.unwrap();
    let (store, metrics) = (&service.context().store, &service.context().metrics);

    let ids = net.send_many("alpha", "beta", 0, net.account(1), &[U256::from(600); 4]).await;
    wait_for(Duration::from_secs(120), "a message waiting on the bucket", || async {
        ids.iter().find_map(|id| {
            let record = store.get(id).unwrap()?;
            record.waiting_reason().filter(|reason| reason.contains("rate_limited")).map(str::to_owned)
        })
    })
    .await;
    let processed = net.wait_processed("beta", &ids, Duration::from_secs(120)).await;
    assert_once(&processed, &ids);
    // A prediction runs one second after its parent block, and anvil's next block may
    // share the parent's second: the bucket's refill can then be predicted a second early
    // and one item fail on chain (and be delivered by a later try, as checked above).
    // More than that would be a bug.
    let failed = net.failed("beta").await;
    assert!(failed.len() <= 1, "{} deliveries failed on chain", failed.len());
    assert_eq!(net.balance("beta", net.account(1)).await, U256::from(2_400));
    let limited = metrics.messages_rate_limited_total.with_label_values(&["alpha", "beta"]).get();
    assert!(limited > 0, "rate-limited deliveries were not counted");
    // Their history keeps the wait.
    assert!(ids.iter().any(|id| store.get(id).unwrap().unwrap().entered(Stage::Waiting).is_some()));
    // The bucket never let more through than it held.
    let bucket = bridge.rateLimit(31337, true).call().await.unwrap();
    assert!(bucket.available <= capacity);
}
