//! Resilience against failing infrastructure.
//!
//! Several RPC endpoints per chain, each a loopback proxy in front of the chain's anvil:
//! alpha behind three with a quorum of two, one of them serving another fork's headers
//! (hashing right, not the chain's); beta behind two, the first killed mid-run. The liar
//! is outvoted, counted (`ferry_bad_input_total{source="rpc",reason="rpc_disagreement"}`)
//! and marked down; the killed endpoint is passed over at once and marked down.
//!
//! alpha behind two endpoints, one of them hung mid-run (it takes calls and answers
//! none); beta behind two, one stuck at an old head and one that forwards transactions
//! and never says so: the hung one costs a timeout and is marked down, the stale one is
//! passed over for its lag, and a delivery whose send got no answer is found by its hash.
//!
//! A three-node JetStream cluster with R3 streams, its servers killed and restarted one
//! after another mid-run.
//!
//! A base-fee spike on beta over its `max_fee_per_gas_gwei`: deliveries wait (stage
//! `waiting`, `ferry_submitter_fees_over_cap` 1) and go out once the fee falls, never
//! offering more than the cap.
//!
//! Throughout, every message is delivered exactly once.

mod common;

use std::time::Duration;

use alloy::{
    primitives::U256,
    providers::{Provider, ProviderBuilder, ext::AnvilApi},
};
use common::{
    Net, amounts, assert_once,
    proxy::{Lie, RpcProxy},
    wait_for,
};
use ferry_devnet::NatsCluster;
use ferry_relayer::{Role, Service, Stage};

const BLOCK: Option<Duration> = Some(Duration::from_secs(1));
const DELIVERED_WITHIN: Duration = Duration::from_secs(120);

fn label(proxy: &RpcProxy) -> String {
    proxy.url().trim_start_matches("http://").to_string()
}

/// Tokens locked on alpha equal the bridged supply on beta: nothing minted twice or lost.
async fn assert_supply_conserved(net: &Net) {
    let locked = net.balance("alpha", net.config.chains["alpha"].bridge.unwrap()).await;
    assert_eq!(locked, net.supply("beta").await, "locked on alpha == bridged supply on beta");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_endpoint_is_outvoted_and_a_killed_one_is_passed_over() {
    common::log_to_stderr();
    let net = Net::start(BLOCK, 2).await;
    let (a1, a2, liar) = (
        RpcProxy::start(net.rpc("alpha")).await,
        RpcProxy::start(net.rpc("alpha")).await,
        RpcProxy::start(net.rpc("alpha")).await,
    );
    liar.lie(Lie::Fork, usize::MAX);
    let (b1, b2) = (RpcProxy::start(net.rpc("beta")).await, RpcProxy::start(net.rpc("beta")).await);

    let mut config = net.config.clone();
    let alpha = config.chains.get_mut("alpha").unwrap();
    alpha.rpc_url = String::new();
    alpha.rpc_urls = vec![liar.url(), a1.url(), a2.url()];
    alpha.rpc_quorum = 2;
    alpha.ws_url = None;
    let beta = config.chains.get_mut("beta").unwrap();
    beta.rpc_url = b1.url();
    beta.rpc_urls = vec![b2.url()];
    beta.ws_url = None;
    assert!(config.check().is_empty(), "{:?}", config.check());
    let service = Service::start(config, Role::All).await.unwrap();
    let metrics = &service.context().metrics;

    let first = net.send_many("alpha", "beta", 0, net.account(2), &amounts(5, 1)).await;
    net.wait_processed("beta", &first, DELIVERED_WITHIN).await;
    let disagreements = metrics.bad_input_total.with_label_values(&["rpc", "rpc_disagreement"]).get();
    assert!(disagreements > 0, "the forked endpoint was never outvoted");
    assert!(liar.told() > 0);

    // beta's first endpoint dies: the relay goes on through the second.
    b1.kill().await;
    let second = net.send_many("alpha", "beta", 0, net.account(3), &amounts(5, 2)).await;
    let all: Vec<_> = first.iter().chain(&second).copied().collect();
    let processed = net.wait_processed("beta", &all, DELIVERED_WITHIN).await;
    assert_once(&processed, &all);

    let up = |chain: &str, proxy: &RpcProxy| metrics.rpc_endpoint_up.with_label_values(&[chain, &label(proxy)]).get();
    wait_for(Duration::from_secs(30), "the killed endpoint marked down", || async {
        (up("beta", &b1) == 0).then_some(())
    })
    .await;
    assert_eq!(up("beta", &b2), 1);
    assert_eq!(up("alpha", &a1), 1);
    assert_eq!(up("alpha", &a2), 1);
    // Outvoted again and again while the chain grows: counted each time, never believed.
    assert!(metrics.bad_input_total.with_label_values(&["rpc", "rpc_disagreement"]).get() >= disagreements);
    let processed = net.processed("beta").await;
    assert_eq!(processed.len(), all.len(), "beta processed messages nobody sent");
    assert_supply_conserved(&net).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_servers_killed_and_restarted_mid_run_lose_and_double_nothing() {
    common::log_to_stderr();
    let net = Net::start(BLOCK, 2).await;
    let mut cluster = NatsCluster::spawn(3).await.unwrap();
    let mut config = net.config.clone();
    config.nats.url = String::new();
    config.nats.urls = cluster.urls();
    config.nats.replicas = 3;
    assert!(config.check().is_empty(), "{:?}", config.check());
    let _service = Service::start(config, Role::All).await.unwrap();

    let mut all = net.send_many("alpha", "beta", 0, net.account(2), &amounts(5, 3)).await;
    net.wait_processed("beta", &all, DELIVERED_WITHIN).await;
    // Each server in turn goes away with messages in flight, then comes back (the client
    // sits on one of them: whichever it is, it goes down once).
    for (round, node) in [0usize, 1, 2].into_iter().enumerate() {
        cluster.kill(node);
        let sent = net.send_many("alpha", "beta", 0, net.account(3), &amounts(5, 10 + round as u64)).await;
        all.extend(&sent);
        net.wait_processed("beta", &all, DELIVERED_WITHIN).await;
        cluster.restart(node).await.unwrap();
    }
    // And back: account 2 holds what the first round bridged to it.
    let small: Vec<U256> = (1..=3u64).map(U256::from).collect();
    let back = net.send_many("beta", "alpha", 2, net.account(4), &small).await;
    let processed = net.wait_processed("beta", &all, DELIVERED_WITHIN).await;
    assert_once(&processed, &all);
    assert_eq!(processed.len(), all.len(), "beta processed messages nobody sent");
    let processed = net.wait_processed("alpha", &back, DELIVERED_WITHIN).await;
    assert_once(&processed, &back);
    assert_supply_conserved(&net).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_wait_while_fees_are_over_the_cap_and_go_out_when_they_fall() {
    common::log_to_stderr();
    const GWEI: u128 = 1_000_000_000;
    const CAP_GWEI: u64 = 20;
    let net = Net::start(BLOCK, 2).await;
    let mut config = net.config.clone();
    config.chains.get_mut("beta").unwrap().max_fee_per_gas_gwei = Some(CAP_GWEI);
    let service = Service::start(config, Role::All).await.unwrap();
    let (store, metrics) = (&service.context().store, &service.context().metrics);
    let beta = ProviderBuilder::new().connect_http(net.rpc("beta").parse().unwrap());

    let first = net.send_many("alpha", "beta", 0, net.account(2), &amounts(2, 5)).await;
    net.wait_processed("beta", &first, DELIVERED_WITHIN).await;

    // Ten times the cap; EIP-1559 then takes it down an eighth a (nearly empty) block.
    beta.anvil_set_next_block_base_fee_per_gas(10 * u128::from(CAP_GWEI) * GWEI).await.unwrap();
    wait_for(Duration::from_secs(30), "the spike on beta", || async {
        let block = beta.get_block_by_number(Default::default()).await.unwrap()?;
        (u128::from(block.header.base_fee_per_gas?) > u128::from(CAP_GWEI) * GWEI).then_some(())
    })
    .await;
    let second = net.send_many("alpha", "beta", 0, net.account(3), &amounts(3, 6)).await;
    wait_for(DELIVERED_WITHIN, "the messages waiting on the fee cap", || async {
        let waiting = second.iter().all(|id| store.get(id).unwrap().is_some_and(|r| r.stage() == Stage::Waiting));
        waiting.then_some(())
    })
    .await;
    assert_eq!(metrics.submitter_fees_over_cap.with_label_values(&["beta"]).get(), 1);
    let early = net.processed("beta").await;
    assert!(second.iter().all(|id| !early.contains_key(id)), "delivered over the cap");

    let all: Vec<_> = first.iter().chain(&second).copied().collect();
    let processed = net.wait_processed("beta", &all, Duration::from_secs(180)).await;
    assert_once(&processed, &all);
    assert_eq!(metrics.submitter_fees_over_cap.with_label_values(&["beta"]).get(), 0);
    for id in &second {
        let tx = beta.get_transaction_by_hash(processed[id][0]).await.unwrap().unwrap();
        let offered = alloy::consensus::Transaction::max_fee_per_gas(&tx);
        assert!(offered <= u128::from(CAP_GWEI) * GWEI, "offered {offered} wei a gas, over the cap");
    }
    let record = store.get(&second[0]).unwrap().unwrap();
    assert!(record.entered(Stage::Waiting).is_some(), "its history keeps the wait");
    assert_supply_conserved(&net).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_endpoint_and_a_stale_one_are_passed_over_and_an_unanswered_send_is_found_by_its_hash() {
    common::log_to_stderr();
    let net = Net::start(BLOCK, 2).await;
    let (a1, a2) = (RpcProxy::start(net.rpc("alpha")).await, RpcProxy::start(net.rpc("alpha")).await);
    let (stale, swallower) = (RpcProxy::start(net.rpc("beta")).await, RpcProxy::start(net.rpc("beta")).await);
    stale.lie(Lie::StaleHead, usize::MAX);
    swallower.lie(Lie::SwallowSends, usize::MAX);

    let mut config = net.config.clone();
    let alpha = config.chains.get_mut("alpha").unwrap();
    (alpha.rpc_url, alpha.rpc_urls, alpha.ws_url, alpha.rpc_timeout_ms) = (a1.url(), vec![a2.url()], None, 2_000);
    let beta = config.chains.get_mut("beta").unwrap();
    (beta.rpc_url, beta.rpc_urls, beta.ws_url) = (stale.url(), vec![swallower.url()], None);
    let service = Service::start(config, Role::All).await.unwrap();
    let metrics = &service.context().metrics;
    let up = |chain: &str, proxy: &RpcProxy| metrics.rpc_endpoint_up.with_label_values(&[chain, &label(proxy)]).get();
    let lag = |proxy: &RpcProxy| metrics.rpc_endpoint_head_lag_blocks.with_label_values(&["beta", &label(proxy)]).get();

    // The stale endpoint falls behind and is marked down; from then on every delivery is
    // sent through the swallower alone, and no send is ever answered.
    wait_for(Duration::from_secs(60), "the stale endpoint marked down for its lag", || async {
        (lag(&stale) > 3 && up("beta", &stale) == 0).then_some(())
    })
    .await;
    a1.freeze();
    let ids = net.send_many("alpha", "beta", 0, net.account(2), &amounts(6, 7)).await;
    let processed = net.wait_processed("beta", &ids, DELIVERED_WITHIN).await;
    assert_once(&processed, &ids);
    assert!(swallower.told() > 0, "no delivery went out unanswered");
    assert!(a1.held() > 0, "the hung endpoint was never asked");
    wait_for(Duration::from_secs(30), "the hung endpoint marked down", || async {
        (up("alpha", &a1) == 0).then_some(())
    })
    .await;
    assert_eq!(up("alpha", &a2), 1);
    assert_eq!(up("beta", &swallower), 1);
    assert_eq!(net.processed("beta").await.len(), ids.len(), "beta processed messages nobody sent");
    assert_supply_conserved(&net).await;
}
