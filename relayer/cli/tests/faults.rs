//! Fault injection: messages flow alpha <-> beta through `ferry run` processes (one
//! running the validators, one the relayer) while the relayer is killed with SIGKILL three
//! times mid-batch and restarted from its data dir, nats-server restarts, beta's anvil
//! freezes for 10 s (SIGSTOP/SIGCONT), alpha reorgs shallower than its confirmations
//! and, last, deeper. What must hold is read from the chains' events, not from ferry:
//! every message dispatched on a surviving block is delivered exactly once, nothing from
//! a dropped block is, tokens locked on alpha equal the bridged supply on beta, and the
//! deep reorg halts alpha in the light client and raises `ferry_light_client_halted`.
//!
//! `FERRY_FAULT_MESSAGES` sets the size (default 1,000, as CI runs it; the full run is
//! 10,000).

mod common;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use alloy::{
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider, ProviderBuilder, ext::AnvilApi},
    rpc::types::{
        Filter, TransactionRequest,
        anvil::{ReorgOptions, TransactionData},
    },
    sol_types::SolEvent,
};
use common::{Net, ferry_run, wait_for, wait_ok};
use ferry_messages::contracts::{BridgedToken, Mailbox, TokenBridge};
use tokio::process::Child;

const CONFIRMATIONS: u64 = 3;
/// How long the traffic takes to send, whatever its size.
const TRAFFIC: Duration = Duration::from_secs(45);
const TICK: Duration = Duration::from_millis(200);

fn kill9(child: &Child) {
    let pid = child.id().unwrap() as i32;
    // SAFETY: kill(2) on a child we started and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

/// Ids of the `Dispatch` events on chain `name`'s canonical chain.
async fn dispatched(net: &Net, name: &str) -> HashSet<B256> {
    let provider = ProviderBuilder::new().connect_http(net.rpc(name).parse().unwrap());
    let filter = Filter::new()
        .address(net.config.chains[name].mailbox)
        .event_signature(Mailbox::Dispatch::SIGNATURE_HASH)
        .from_block(0);
    provider.get_logs(&filter).await.unwrap().iter().map(|l| l.topics()[1]).collect()
}

/// The last block of chain `name` in which its Mailbox emitted anything (a dispatch or a
/// delivery).
async fn last_mailbox_block(net: &Net, name: &str) -> u64 {
    let provider = ProviderBuilder::new().connect_http(net.rpc(name).parse().unwrap());
    let filter = Filter::new().address(net.config.chains[name].mailbox).from_block(0);
    provider.get_logs(&filter).await.unwrap().iter().filter_map(|l| l.block_number).max().unwrap_or(0)
}

/// Who sends what, from where: everything a sender task needs, owned.
struct Traffic {
    provider: alloy::providers::DynProvider,
    bridge: Address,
    token: Option<Address>,
    destination: u32,
    user: Address,
    recipient: Address,
    total: usize,
}

impl Traffic {
    fn new(net: &Net, from: &str, to: &str, sender: usize, recipient: Address, total: usize) -> Self {
        let chain = &net.config.chains[from];
        Traffic {
            provider: net.wallet(from, sender),
            bridge: chain.bridge.unwrap(),
            // The collateral side locks, so it approves first.
            token: (chain.chain_id == 31337).then(|| chain.token.unwrap()),
            destination: net.config.chains[to].chain_id as u32,
            user: net.account(sender),
            recipient,
            total,
        }
    }

    /// Sends its transfers over [`TRAFFIC`], a few every tick, without waiting for
    /// receipts; the nonce is read from the node every tick, so that transactions a
    /// reorg dropped leave no gap.
    async fn run(self) {
        let bridge = TokenBridge::new(self.bridge, &self.provider);
        if let Some(token) = self.token {
            let token = BridgedToken::new(token, &self.provider);
            token.approve(self.bridge, U256::MAX).send().await.unwrap().get_receipt().await.unwrap();
        }
        let paid = bridge.quoteTransferRemote(self.destination).call().await.unwrap();
        let ticks = (TRAFFIC.as_millis() / TICK.as_millis()) as usize;
        let per_tick = self.total.div_ceil(ticks).max(1);
        let mut sent = 0;
        while sent < self.total {
            let started = Instant::now();
            if let Ok(mut nonce) = self.provider.get_transaction_count(self.user).pending().await {
                let fee = self.provider.get_gas_price().await.unwrap_or(1_000_000_000) * 3 + 1_000_000_000;
                for _ in 0..per_tick.min(self.total - sent) {
                    let call = bridge
                        .transferRemote(self.destination, self.recipient, U256::from(1 + sent))
                        .value(paid)
                        .nonce(nonce)
                        .gas(300_000)
                        .max_fee_per_gas(fee)
                        .max_priority_fee_per_gas(1_000_000_000);
                    if call.send().await.is_ok() {
                        nonce += 1;
                        sent += 1;
                    }
                }
            }
            tokio::time::sleep(TICK.saturating_sub(started.elapsed())).await;
        }
    }
}

/// Waits until chain `name` shows more `Process` events than `than`; returns how many.
async fn more_processed(net: &Net, name: &str, than: usize) -> usize {
    wait_for(Duration::from_secs(180), &format!("more deliveries on {name} than {than}"), || async {
        let n = net.processed(name).await.len();
        (n > than).then_some(n)
    })
    .await
}

/// `ferry_light_client_halted{chain}` from a `/metrics` page.
async fn halted(api: &str, chain: &str) -> bool {
    let Ok(response) = reqwest::get(format!("{api}/metrics")).await else { return false };
    let text = response.text().await.unwrap_or_default();
    text.lines().any(|l| {
        l.starts_with("ferry_light_client_halted{") && l.contains(&format!("chain=\"{chain}\"")) && l.ends_with(" 1")
    })
}

/// Reorgs `chain` `depth` blocks deep once the wall clock has passed its head's
/// timestamp. anvil re-mines the replaced blocks at its wall clock, and under load the
/// blocks it mined before can carry timestamps ahead of it: a replacement 2 s older than
/// its parent was seen, which the light client rightly refuses as an invalid header (so
/// the chain stops, neither delivering nor halting on the safety fault).
async fn reorg(chain: &impl Provider, depth: u64) {
    let head = chain.get_block_by_number(Default::default()).await.unwrap().unwrap().header.timestamp;
    wait_for(Duration::from_secs(60), "the wall clock past the head's timestamp", || async {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        (now > head).then_some(())
    })
    .await;
    chain.anvil_reorg(ReorgOptions { depth, tx_block_pairs: vec![] }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_lose_nothing_double_nothing_and_a_deep_reorg_halts_the_chain() {
    let size: usize = std::env::var("FERRY_FAULT_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let mut net = Net::start(Some(Duration::from_millis(500)), CONFIRMATIONS).await;
    let path = net.dir.path().join("ferry.toml");
    net.config.write(&path).unwrap();
    let validator_listen = format!("127.0.0.1:{}", ferry_devnet::free_port().unwrap());
    let validator_env = [
        ("FERRY__DATA_DIR", net.dir.path().join("validator").display().to_string()),
        ("FERRY__HTTP__LISTEN", validator_listen.clone()),
    ];
    let validator_api = format!("http://{validator_listen}");
    let _validators = ferry_run(&path, "validator", &validator_env);
    let mut relayer = ferry_run(&path, "relayer", &[]);
    wait_ok(&format!("{}/healthz", net.api()), Duration::from_secs(60)).await;
    wait_ok(&format!("{validator_api}/healthz"), Duration::from_secs(60)).await;

    // Account 1 gets synthetic tokens on beta to send back.
    let seed = net.send_many("alpha", "beta", 0, net.account(1), &[U256::from(10u64.pow(12))]).await;
    net.wait_processed("beta", &seed, Duration::from_secs(120)).await;

    let senders = [
        tokio::spawn(Traffic::new(&net, "alpha", "beta", 0, net.account(3), size / 2).run()),
        tokio::spawn(Traffic::new(&net, "beta", "alpha", 1, net.account(4), size - size / 2).run()),
    ];

    // (a) SIGKILL the relayer three times while batches are in flight, restarting it
    // from the same data dir each time.
    let mut seen = net.processed("beta").await.len();
    for _ in 0..3 {
        seen = more_processed(&net, "beta", seen).await;
        kill9(&relayer);
        relayer.wait().await.unwrap();
        relayer = ferry_run(&path, "relayer", &[]);
    }
    // (b) nats-server restarts (same port, same JetStream store).
    seen = more_processed(&net, "beta", seen).await;
    net.devnet.nats.restart().await.unwrap();
    // (c) beta's node freezes for 10 s: an RPC outage for every process.
    seen = more_processed(&net, "beta", seen).await;
    net.devnet.beta.pause().unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    net.devnet.beta.resume().unwrap();
    // (d) alpha reorgs 2 blocks deep, under its 3 confirmations: what those blocks held
    // is gone, and must never be delivered.
    more_processed(&net, "beta", seen).await;
    let alpha = ProviderBuilder::new().connect_http(net.rpc("alpha").parse().unwrap());
    reorg(&alpha, 2).await;

    for sender in senders {
        sender.await.unwrap();
    }
    // Every message dispatched on a surviving block arrives, once; nothing else does.
    let deadline = Duration::from_secs(180 + size as u64 / 20);
    let there = dispatched(&net, "alpha").await;
    let back = dispatched(&net, "beta").await;
    let there: Vec<B256> = there.into_iter().collect();
    let back: Vec<B256> = back.into_iter().collect();
    let on_beta = net.wait_processed("beta", &there, deadline).await;
    let on_alpha = net.wait_processed("alpha", &back, deadline).await;

    // (e) Last, alpha reorgs deeper than its confirmations, over blocks already final.
    // The blocks it replaces hold no dispatch and no delivery: what final blocks held was
    // acted on, which no relayer can undo once finality is broken. Alpha halts in the
    // light client.
    let last = last_mailbox_block(&net, "alpha").await;
    wait_for(Duration::from_secs(60), "alpha past its last dispatch by more than the reorg", || async {
        (alpha.get_block_number().await.ok()? > last + CONFIRMATIONS + 4).then_some(())
    })
    .await;
    reorg(&alpha, CONFIRMATIONS + 3).await;
    wait_for(Duration::from_secs(60), "alpha halted in the validators' light client", || async {
        halted(&validator_api, "alpha").await.then_some(())
    })
    .await;
    let ready = reqwest::get(format!("{validator_api}/readyz")).await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE, "a halted chain is not ready");
    // Beta is not halted: a message to alpha still arrives.
    let after = net.send_many("beta", "alpha", 1, net.account(4), &[U256::from(5u64)]).await;
    net.wait_processed("alpha", &after, Duration::from_secs(120)).await;

    // The invariants, from the chains.
    let there_set: HashSet<B256> = dispatched(&net, "alpha").await;
    let back_set: HashSet<B256> = dispatched(&net, "beta").await;
    let on_beta_now = net.processed("beta").await;
    let on_alpha_now = net.processed("alpha").await;
    for (id, txs) in &on_beta_now {
        assert_eq!(txs.len(), 1, "message {id} delivered {} times on beta", txs.len());
        assert!(there_set.contains(id), "message {id} delivered on beta was not dispatched on a surviving block");
    }
    for (id, txs) in &on_alpha_now {
        assert_eq!(txs.len(), 1, "message {id} delivered {} times on alpha", txs.len());
        assert!(back_set.contains(id), "message {id} delivered on alpha was not dispatched on beta");
    }
    for id in &there_set {
        assert!(on_beta_now.contains_key(id), "message {id} from alpha never delivered");
    }
    for id in &back_set {
        assert!(on_alpha_now.contains_key(id), "message {id} from beta never delivered");
    }
    assert!(
        there_set.len() + back_set.len() >= size / 2,
        "only {} messages survived",
        there_set.len() + back_set.len()
    );
    eprintln!(
        "{} messages alpha -> beta and {} beta -> alpha dispatched on surviving blocks, each delivered once",
        there_set.len(),
        back_set.len()
    );
    let _ = (on_beta, on_alpha);
    let locked = net.balance("alpha", net.config.chains["alpha"].bridge.unwrap()).await;
    assert_eq!(locked, net.supply("beta").await, "locked on alpha == bridged supply on beta");
    assert!(net.failed("alpha").await.is_empty() && net.failed("beta").await.is_empty());
    kill9(&relayer);
}

/// How many of `relayer`'s transactions `chain` has mined, once its pool holds more.
async fn in_pool(chain: &impl Provider, relayer: Address) -> Option<u64> {
    let mined = chain.get_transaction_count(relayer).await.ok()?;
    (chain.get_transaction_count(relayer).pending().await.ok()? > mined).then_some(mined)
}

/// `ferry_submitter_transactions_total{chain, outcome}` from a `/metrics` page (0 if
/// absent).
async fn submitted(api: &str, chain: &str, outcome: &str) -> u64 {
    let Ok(response) = reqwest::get(format!("{api}/metrics")).await else { return 0 };
    let text = response.text().await.unwrap_or_default();
    let labels = [format!("chain=\"{chain}\""), format!("outcome=\"{outcome}\"")];
    text.lines()
        .filter(|l| l.starts_with("ferry_submitter_transactions_total{") && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A delivery whose nonce another transaction takes (the relayer's key used elsewhere, a
/// reorg that let the nonce go to a later transaction) can never be mined: replacing it
/// is refused as "nonce too low" forever. The relayer must notice, give it up, and
/// deliver its message with another transaction, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_nonce_another_transaction_took_is_delivered_again() {
    let mut net = Net::start(Some(Duration::from_millis(500)), 1).await;
    net.config.relayer.stuck_after_secs = 2;
    let path = net.dir.path().join("ferry.toml");
    net.config.write(&path).unwrap();
    let ferry = ferry_run(&path, "all", &[]);
    wait_ok(&format!("{}/readyz", net.api()), Duration::from_secs(90)).await;

    // Beta stops mining: the delivery waits in its pool.
    let beta = ProviderBuilder::new().connect_http(net.rpc("beta").parse().unwrap());
    beta.anvil_set_interval_mining(0).await.unwrap();
    let key = net.devnet.info().accounts.last().unwrap().private_key;
    let relayer = alloy::signers::local::PrivateKeySigner::from_bytes(&key).unwrap().address();
    let ids = net.send_many("alpha", "beta", 0, net.account(2), &[U256::from(77u64)]).await;
    let nonce = wait_for(Duration::from_secs(120), "the delivery in beta's pool", || in_pool(&beta, relayer)).await;

    // The relayer's key sends something else with that nonce, paying far more than the
    // delivery's replacements will for a minute, and it is mined in the delivery's place.
    let other = ferry_devnet::wallet(net.rpc("beta"), key).unwrap();
    let request = alloy::rpc::types::TransactionRequest::default()
        .to(relayer)
        .nonce(nonce)
        .gas_limit(21_000)
        .max_fee_per_gas(1_000_000_000_000)
        .max_priority_fee_per_gas(500_000_000_000);
    let taken = other.send_transaction(request).await.unwrap();
    beta.anvil_mine(Some(1), None).await.unwrap();
    let receipt = wait_for(Duration::from_secs(30), "the other transaction mined", || async {
        beta.get_transaction_receipt(*taken.tx_hash()).await.ok()?
    })
    .await;
    assert!(receipt.status());
    assert!(net.processed("beta").await.is_empty(), "the delivery was mined before its nonce was taken");
    beta.anvil_set_interval_mining(1).await.unwrap();

    // Delivered all the same, once, by a transaction with a later nonce.
    let processed = net.wait_processed("beta", &ids, Duration::from_secs(120)).await;
    common::assert_once(&processed, &ids);
    let delivery = beta.get_transaction_by_hash(processed[&ids[0]][0]).await.unwrap().unwrap();
    use alloy::consensus::Transaction as _;
    assert!(delivery.inner.nonce() > nonce, "delivered at nonce {} <= {nonce}", delivery.inner.nonce());
    assert!(submitted(&net.api(), "beta", "superseded").await >= 1, "the given-up delivery was not counted");
    drop(ferry);
}

/// A reorg of the destination drops a mined delivery, and the node then drops the
/// relayer's next one, which waited in its pool with a nonce the reorg took out of
/// order (anvil, like other nodes, drops what can no longer run in order). Neither may
/// wait for the stuck-transaction replacement (ten minutes here): the relayer sends the
/// dropped delivery again as it was, and the one the reorg took back, and every message
/// arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_a_reorg_and_the_node_dropped_are_sent_again_at_once() {
    let mut net = Net::start(Some(Duration::from_millis(500)), 2).await;
    net.config.relayer.stuck_after_secs = 600;
    let path = net.dir.path().join("ferry.toml");
    net.config.write(&path).unwrap();
    let ferry = ferry_run(&path, "all", &[]);
    wait_ok(&format!("{}/readyz", net.api()), Duration::from_secs(90)).await;

    let beta = ProviderBuilder::new().connect_http(net.rpc("beta").parse().unwrap());
    let key = net.devnet.info().accounts.last().unwrap().private_key;
    let relayer = alloy::signers::local::PrivateKeySigner::from_bytes(&key).unwrap().address();
    // Beta mines only when told: the first delivery is mined in a block the reorg
    // drops, the second waits in the pool meanwhile.
    beta.anvil_set_interval_mining(0).await.unwrap();
    let first = net.send_many("alpha", "beta", 0, net.account(2), &[U256::from(11u64)]).await;
    let nonce =
        wait_for(Duration::from_secs(120), "the first delivery in beta's pool", || in_pool(&beta, relayer)).await;
    beta.anvil_mine(Some(1), None).await.unwrap();
    let second = net.send_many("alpha", "beta", 0, net.account(2), &[U256::from(12u64)]).await;
    wait_for(Duration::from_secs(120), "the second delivery in beta's pool", || async {
        in_pool(&beta, relayer).await.filter(|mined| *mined == nonce + 1)
    })
    .await;
    reorg(&beta, 1).await;
    assert_eq!(beta.get_transaction_count(relayer).await.unwrap(), nonce, "the reorg took the first delivery back");
    // The next block drops the second delivery (its nonce is now one too high). Whether
    // the node still has it is not asked here: the relayer, seeing that block, may have
    // sent it again already. The `dropped` count below says it did.
    beta.anvil_mine(Some(1), None).await.unwrap();
    beta.anvil_set_interval_mining(1).await.unwrap();

    let ids: Vec<B256> = first.into_iter().chain(second).collect();
    let processed = net.wait_processed("beta", &ids, Duration::from_secs(120)).await;
    common::assert_once(&processed, &ids);
    assert!(submitted(&net.api(), "beta", "dropped").await >= 1, "the dropped delivery was not counted");
    drop(ferry);
}

/// A mined delivery whose messages all failed on chain holds none of them, yet it used
/// a nonce: when a reorg drops its block, the relayer must send it again, or that nonce
/// stays a gap every later delivery waits behind for good (the stuck-transaction
/// replacement only re-prices those later ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorged_delivery_that_delivered_nothing_still_fills_its_nonce() {
    let HandMined { net, service, beta, relayer } = HandMined::start().await;
    let metrics = &service.context().metrics;

    // The delivery waits in beta's pool, and the bridge's owner closes alpha's inbound
    // bucket in the same block, ahead of it: the delivery's only message fails on chain,
    // rate limited.
    let first = net.send_many("alpha", "beta", 0, net.account(2), &[U256::from(500u64)]).await;
    let nonce = wait_for(Duration::from_secs(120), "the delivery in beta's pool", || in_pool(&beta, relayer)).await;
    let bridge = TokenBridge::new(net.config.chains["beta"].bridge.unwrap(), &beta);
    let close = bridge.setRateLimit(31337, true, U256::from(1u64), U256::from(1u64)).into_transaction_request();
    owner_ahead_of_delivery(&net, &beta, close, &first).await;
    // The relayer read the receipt: the message goes back to the bus to wait on the
    // bucket, and the transaction delivered nothing it could hold.
    let limited = metrics.messages_rate_limited_total.with_label_values(&["alpha", "beta"]);
    wait_for(Duration::from_secs(60), "the relayer to see the delivery fail", || async {
        (limited.get() >= 1).then_some(())
    })
    .await;

    // The reorg takes both back: the bucket is open again, the relayer's nonce is the
    // delivery's again, and the delivery holds no message that would tell the relayer.
    reorg(&beta, 1).await;
    assert_eq!(beta.get_transaction_count(relayer).await.unwrap(), nonce, "the reorg took the delivery back");
    beta.anvil_set_interval_mining(1).await.unwrap();

    // A later message arrives: the nonce was filled, by the same delivery sent again
    // (which now delivers the first message too). Each arrives once.
    let second = net.send_many("alpha", "beta", 0, net.account(2), &[U256::from(12u64)]).await;
    let ids: Vec<B256> = first.into_iter().chain(second).collect();
    let processed = net.wait_processed("beta", &ids, Duration::from_secs(120)).await;
    common::assert_once(&processed, &ids);
    let reorged = metrics.submitter_transactions_total.with_label_values(&["beta", "reorged"]).get();
    assert!(reorged >= 1, "the reorged delivery was not counted");
}

/// A message parked because its item failed on chain is delivered when a reorg drops
/// that transaction and the transaction, sent again on the state the reorg went back
/// to, delivers it: its record follows the chain (delivered, no longer parked, the park
/// kept in its history), where it used to stay parked for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_message_a_reorged_delivery_sent_again_delivers_is_recorded_delivered() {
    use ferry_relayer::Stage;

    let HandMined { net, service, beta, relayer } = HandMined::start().await;
    let store = &service.context().store;

    // The delivery waits in beta's pool, and the bridge's owner unenrolls alpha's bridge
    // in the same block, ahead of it: the delivery's only message fails on chain
    // (`UnenrolledSender`) and is parked.
    let first = net.send_many("alpha", "beta", 0, net.account(2), &[U256::from(700u64)]).await;
    let nonce = wait_for(Duration::from_secs(120), "the delivery in beta's pool", || in_pool(&beta, relayer)).await;
    let bridge = TokenBridge::new(net.config.chains["beta"].bridge.unwrap(), &beta);
    let unenrolled = owner_ahead_of_delivery(&net, &beta, unenroll(&net), &first).await;
    let id = first[0];
    let stage = || async { store.get(&id).ok().flatten().map(|r| r.stage()) };
    wait_for(Duration::from_secs(60), "the message parked", || async {
        (stage().await == Some(Stage::Parked)).then_some(())
    })
    .await;

    // The reorg takes both back (and the owner's transaction is not mined again): alpha's
    // bridge is enrolled, and the relayer sends its delivery again, which delivers.
    reorg(&beta, 1).await;
    assert_eq!(beta.get_transaction_count(relayer).await.unwrap(), nonce, "the reorg took the delivery back");
    beta.anvil_drop_transaction(unenrolled).await.unwrap();
    mine_until_resent(&beta, relayer).await;
    let processed = net.wait_processed("beta", &first, Duration::from_secs(120)).await;
    common::assert_once(&processed, &first);
    assert_ne!(bridge.remoteBridge(31337).call().await.unwrap(), B256::ZERO, "the unenrollment came back");
    wait_for(Duration::from_secs(60), "the record to say delivered", || async {
        (stage().await == Some(Stage::Delivered)).then_some(())
    })
    .await;
    let record = store.get(&id).unwrap().unwrap();
    assert_eq!(record.parked_reason(), None);
    let stages: Vec<Stage> = record.history().iter().map(|e| e.stage).collect();
    assert!(stages.ends_with(&[Stage::Parked, Stage::Delivered]), "{stages:?}");

    // Once more, before that block is final: a reorg drops it and the new chain holds the
    // owner's unenrollment first. The message's record is parked again (its NATS message
    // was acked: parked is where it is not lost), and the delivery, sent again, fails it.
    let again = unenroll(&net);
    let depth = beta.get_block_number().await.unwrap() + 1 - carried_in(&beta, store, id).await;
    beta.anvil_reorg(ReorgOptions { depth, tx_block_pairs: vec![(TransactionData::JSON(again), 0)] }).await.unwrap();
    assert_eq!(bridge.remoteBridge(31337).call().await.unwrap(), B256::ZERO, "the new chain has no unenrollment");
    mine_until_resent(&beta, relayer).await;
    wait_for(Duration::from_secs(60), "the record to say parked again", || async {
        (stage().await == Some(Stage::Parked)).then_some(())
    })
    .await;
    assert!(!net.processed("beta").await.contains_key(&id), "the message is delivered on the new chain");
    // The first failure's block is gone with the first reorg: the one failure on the
    // chain now is the last resend's, and the record gives the chain's reason for it in
    // place of the reorg's.
    wait_for(Duration::from_secs(60), "the resend to fail it on the new chain", || async {
        (net.failed("beta").await.iter().filter(|f| **f == id).count() == 1).then_some(())
    })
    .await;
    wait_for(Duration::from_secs(60), "the chain's reason on the parked record", || async {
        let reason = store.get(&id).unwrap()?.parked_reason()?.to_string();
        reason.contains("UnenrolledSender").then_some(())
    })
    .await;
    let record = store.get(&id).unwrap().unwrap();
    assert_eq!(record.stage(), Stage::Parked);
    let stages: Vec<Stage> = record.history().iter().map(|e| e.stage).collect();
    use Stage::{Delivered, Parked, Submitted};
    assert!(stages.ends_with(&[Parked, Delivered, Submitted, Parked]), "{stages:?}");
}

/// A devnet whose beta mines only when told, with the relayer and validators running in
/// this process (its stuck-delivery replacement out of a test's reach), beta's provider
/// and the relayer's address.
struct HandMined {
    net: Net,
    service: ferry_relayer::Service,
    beta: DynProvider,
    relayer: Address,
}

impl HandMined {
    async fn start() -> Self {
        let mut net = Net::start(Some(Duration::from_millis(500)), 2).await;
        net.config.relayer.stuck_after_secs = 600;
        let service = ferry_relayer::Service::start(net.config.clone(), ferry_relayer::Role::All).await.unwrap();
        let beta = ProviderBuilder::new().connect_http(net.rpc("beta").parse().unwrap()).erased();
        let key = net.devnet.info().accounts.last().unwrap().private_key;
        let relayer = alloy::signers::local::PrivateKeySigner::from_bytes(&key).unwrap().address();
        beta.anvil_set_interval_mining(0).await.unwrap();
        Self { net, service, beta, relayer }
    }
}

/// The bridge owner's call that unenrolls alpha's bridge on beta (its deliveries then
/// fail with `UnenrolledSender`), from the owner's dev account.
fn unenroll(net: &Net) -> TransactionRequest {
    let call = TokenBridge::enrollRemoteBridgeCall { domain: 31337, bridge: B256::ZERO };
    TransactionRequest::default()
        .from(net.account(0))
        .to(net.config.chains["beta"].bridge.unwrap())
        .input(alloy::sol_types::SolCall::abi_encode(&call).into())
        .gas_limit(200_000)
}

/// Sends the bridge owner's `call` on beta paying far more than the relayer, so that the
/// next block, mined here, holds it ahead of the delivery waiting in the pool; checks
/// that it succeeded and that the delivery failed its message `first` on chain.
async fn owner_ahead_of_delivery(net: &Net, beta: &DynProvider, call: TransactionRequest, first: &[B256]) -> B256 {
    let call = call.gas_limit(200_000).max_fee_per_gas(1_000_000_000_000).max_priority_fee_per_gas(500_000_000_000);
    let hash = *net.wallet("beta", 0).send_transaction(call).await.unwrap().tx_hash();
    beta.anvil_mine(Some(1), None).await.unwrap();
    let receipt = wait_for(Duration::from_secs(30), "the owner's call mined", || async {
        beta.get_transaction_receipt(hash).await.ok()?
    })
    .await;
    assert!(receipt.status(), "the owner's call reverted: {receipt:?}");
    assert_eq!(net.failed("beta").await, first, "the delivery's message did not fail on chain");
    hash
}

/// With beta mining only when told: mines a block at a time until a transaction of the
/// relayer's past its current nonce is mined (it sends a delivery again once the block a
/// reorg dropped would be final).
async fn mine_until_resent(beta: &impl Provider, relayer: Address) {
    let from = beta.get_transaction_count(relayer).await.unwrap();
    wait_for(Duration::from_secs(120), "a delivery from the relayer mined", || async {
        if beta.get_transaction_count(relayer).await.ok()? > from {
            return Some(());
        }
        beta.anvil_mine(Some(1), None).await.ok()?;
        None
    })
    .await;
}

/// The block of the transaction that last carried message `id`, as its record says.
async fn carried_in(beta: &impl Provider, store: &ferry_relayer::Store, id: B256) -> u64 {
    let tx = store.get(&id).unwrap().unwrap().tx_hash().unwrap();
    beta.get_transaction_receipt(tx).await.unwrap().unwrap().block_number.unwrap()
}

/// A reorg that moves a delivery into another block (as a node does that re-includes
/// the transactions of dropped blocks) may change what it does there: here the bridge's
/// owner unenrolls alpha's bridge in the block before it, and the message it had
/// delivered fails. The relayer settles the transaction again on its new receipt: the
/// message is parked (it used to stay recorded delivered, and be acked, while the chain
/// had not delivered it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_a_reorg_moves_into_another_block_is_settled_again_there() {
    use ferry_relayer::Stage;

    let HandMined { net, service, beta, relayer } = HandMined::start().await;
    let store = &service.context().store;

    // The delivery in one block, an empty one after it (beta has 2 confirmations: the
    // delivery is not final yet).
    let first = net.send_many("alpha", "beta", 0, net.account(2), &[U256::from(900u64)]).await;
    let id = first[0];
    mine_until_resent(&beta, relayer).await;
    let stage = || async { store.get(&id).ok().flatten().map(|r| r.stage()) };
    wait_for(Duration::from_secs(60), "the message recorded delivered", || async {
        (stage().await == Some(Stage::Delivered)).then_some(())
    })
    .await;
    let block = carried_in(&beta, store, id).await;
    assert_eq!(beta.get_block_number().await.unwrap(), block, "blocks mined past the delivery");
    beta.anvil_mine(Some(1), None).await.unwrap();
    let tx = store.get(&id).unwrap().unwrap().tx_hash().unwrap();

    // The reorg replaces both blocks: the owner's unenrollment in the first, the same
    // delivery transaction in the second, where it fails the message.
    let raw = beta.get_raw_transaction_by_hash(tx).await.unwrap().unwrap();
    let pairs = vec![(TransactionData::JSON(unenroll(&net)), 0), (TransactionData::Raw(raw), 1)];
    beta.anvil_reorg(ReorgOptions { depth: 2, tx_block_pairs: pairs }).await.unwrap();
    let moved = beta.get_transaction_receipt(tx).await.unwrap().expect("the delivery in the new chain");
    assert_eq!(moved.block_number, Some(block + 1), "the delivery was not moved");
    assert!(!net.processed("beta").await.contains_key(&id), "the moved delivery still delivers");

    // Blocks one at a time, until the relayer, seeing the old block gone, settles the
    // transaction again where it is now.
    wait_for(Duration::from_secs(120), "the record to say parked", || async {
        if stage().await == Some(Stage::Parked) {
            return Some(());
        }
        beta.anvil_mine(Some(1), None).await.ok()?;
        None
    })
    .await;
    let record = store.get(&id).unwrap().unwrap();
    assert!(record.parked_reason().is_some_and(|r| r.contains("UnenrolledSender")), "{:?}", record.parked_reason());
    let stages: Vec<Stage> = record.history().iter().map(|e| e.stage).collect();
    assert!(stages.ends_with(&[Stage::Delivered, Stage::Submitted, Stage::Parked]), "{stages:?}");
    let reorged = service.context().metrics.submitter_transactions_total.with_label_values(&["beta", "reorged"]);
    assert_eq!(reorged.get(), 1, "the moved delivery was not counted once");
}
