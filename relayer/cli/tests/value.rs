//! Value safety end to end on a real anvil pair and a real nats-server: the governor's
//! delay for large transfers with an operator's release and cancel (CLI and HTTP), and a
//! compromised-quorum drill: two of three validator keys forge a mint, the bridge's
//! bucket bounds it, the honest validator's accountant flags it and refuses what follows,
//! and a real Prometheus fires the alerts.

mod common;

use std::time::Duration;

use alloy::{
    primitives::{Address, B256, Bytes, U256},
    providers::Provider,
    signers::{SignerSync, local::PrivateKeySigner},
    sol_types::SolValue,
};
use common::{Net, ferry_cli, prometheus::Prometheus, wait_for};
use ferry_messages::{
    Attestation, Message, QuorumCertificate,
    contracts::{BridgedToken, Mailbox, TokenBridge},
};
use ferry_relayer::{GovernorRoute, Role, Service, Stage};

const BLOCK: Option<Duration> = Some(Duration::from_millis(500));

/// The service's `/metrics` line value of `series` (exact labels), if present.
async fn metric(net: &Net, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", net.api())).await.ok()?.text().await.ok()?;
    text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_governor_holds_large_transfers_until_their_delay_ends_or_an_operator_acts() {
    let mut net = Net::start(BLOCK, 2).await;
    let route = |threshold: u64, secs: u64| GovernorRoute { delay_threshold: U256::from(threshold), delay_secs: secs };
    net.config.governor.entry("alpha".into()).or_default().insert("beta".into(), route(1_000, 3_600));
    net.config.governor.entry("beta".into()).or_default().insert("alpha".into(), route(1_000, 3));
    let path = net.dir.path().join("ferry.toml");
    net.config.write(&path).unwrap();
    let env = [("FERRY_CONFIG", path.display().to_string())];
    let service = Service::start(net.config.clone(), Role::All).await.unwrap();
    let store = &service.context().store;
    let user = net.account(1);

    // Under the threshold: carried as ever. At or over it: held, unsigned.
    let small = net.send_many("alpha", "beta", 0, user, &[U256::from(999)]).await;
    let big = net.send_many("alpha", "beta", 0, user, &[U256::from(1_000), U256::from(6_000)]).await;
    net.wait_processed("beta", &small, Duration::from_secs(120)).await;
    let listed = wait_for(Duration::from_secs(60), "two transfers held", || async {
        let out = ferry_cli(&["governor", "list"], &env).await;
        big.iter().all(|id| out.contains(&id.to_string())).then_some(out)
    })
    .await;
    assert!(listed.contains("delay: until"), "{listed}");
    for id in &big {
        let record = store.get(id).unwrap().unwrap();
        assert_eq!(record.stage(), Stage::Held, "{record:?}");
        assert!(record.held_reason().unwrap().starts_with("delay"), "{record:?}");
        assert!(record.signatures.is_empty(), "a held transfer was signed: {record:?}");
    }
    wait_for(Duration::from_secs(10), "two counted held", || async {
        metric(&net, "ferry_governor_held{reason=\"delay\",route=\"alpha->beta\"}").await.filter(|n| *n == 2.0)
    })
    .await;

    // The operator releases one and cancels the other.
    let released = ferry_cli(&["governor", "release", &big[0].to_string()], &env).await;
    assert!(released.contains(&big[0].to_string()), "{released}");
    ferry_cli(&["governor", "cancel", &big[1].to_string()], &env).await;
    net.wait_processed("beta", &big[..1], Duration::from_secs(120)).await;
    let cancelled = store.get(&big[1]).unwrap().unwrap();
    assert_eq!(cancelled.stage(), Stage::Parked);
    assert!(cancelled.parked_reason().unwrap().contains("cancelled by an operator"), "{cancelled:?}");
    let history: Vec<Stage> = store.get(&big[0]).unwrap().unwrap().history().iter().map(|e| e.stage).collect();
    assert!(history.windows(2).any(|w| w == [Stage::Held, Stage::Proven]), "{history:?}");
    // Nothing is held any more, and acting on what is not held is refused.
    assert!(store.held().unwrap().is_empty());
    let url = format!("{}/governor/{}/release", net.api(), big[1]);
    assert_eq!(reqwest::Client::new().post(&url).send().await.unwrap().status(), 404);

    // A route with a short delay signs by itself once it is over.
    let back = net.send_many("beta", "alpha", 1, net.account(2), &[U256::from(1_500)]).await;
    wait_for(Duration::from_secs(60), "the transfer back held", || async {
        (store.get(&back[0]).unwrap()?.stage() == Stage::Held).then_some(())
    })
    .await;
    net.wait_processed("alpha", &back, Duration::from_secs(120)).await;
    let record = store.get(&back[0]).unwrap().unwrap();
    let held_for = record.entered(Stage::Proven).unwrap() - record.entered(Stage::Held).unwrap();
    assert!(held_for >= 3_000, "signed {held_for} ms after it was held, before its 3 s delay");

    // The cancelled transfer was never delivered, and balances add up.
    let processed = net.processed("beta").await;
    assert!(!processed.contains_key(&big[1]), "a cancelled transfer was delivered");
    assert_eq!(net.balance("beta", user).await, U256::from(999 + 1_000 - 1_500));
    service.stop().await;
}

/// A message the attacker forges: from alpha's bridge, minting `amount` to `to` on beta.
fn forged(net: &Net, nonce: u32, to: Address, amount: U256) -> Message {
    let (alpha, beta) = (&net.config.chains["alpha"], &net.config.chains["beta"]);
    Message {
        version: ferry_messages::VERSION,
        nonce,
        origin: alpha.chain_id as u32,
        sender: alpha.bridge.unwrap().into_word(),
        destination: beta.chain_id as u32,
        recipient: beta.bridge.unwrap().into_word(),
        body: (to, amount).abi_encode().into(),
    }
}

/// A certificate over `message` signed with `keys` (at a made-up origin block).
fn certificate(net: &Net, message: &Message, keys: &[B256]) -> Bytes {
    let attestation = Attestation {
        origin: message.origin,
        origin_mailbox: net.config.chains["alpha"].mailbox.into_word(),
        destination: message.destination,
        block_hash: B256::repeat_byte(0x66),
        id: message.id(),
    };
    let signatures = keys
        .iter()
        .map(|key| PrivateKeySigner::from_bytes(key).unwrap().sign_hash_sync(&attestation.signing_hash()).unwrap())
        .collect();
    QuorumCertificate::ordered(&attestation, signatures).unwrap().metadata().into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_quorum_mints_at_most_the_bucket_and_the_honest_accountant_raises_the_alarm() {
    let mut net = Net::start(BLOCK, 2).await;
    // This process is the honest third validator; the attacker holds the other two keys.
    net.config.validators.key_files.retain(|path| path.ends_with("validator-2.key"));
    assert_eq!(net.config.validators.key_files.len(), 1);
    let path = net.dir.path().join("ferry.toml");
    net.config.write(&path).unwrap();
    let env = [("FERRY_CONFIG", path.display().to_string())];
    let service = Service::start(net.config.clone(), Role::Validator).await.unwrap();
    let limit = net.devnet.info().chains[1].rate_limit;

    // An honest transfer: 10 locked on alpha, booked by the accountant.
    net.send_many("alpha", "beta", 0, net.account(1), &[U256::from(10)]).await;
    wait_for(Duration::from_secs(60), "the lock booked", || async {
        metric(&net, "ferry_accountant_locked{route=\"alpha->beta\"}").await.filter(|v| *v == 10.0)
    })
    .await;

    // The forgery: far more than the bucket holds reverts, naming the bucket.
    let attacker = net.account(5);
    let beta = net.wallet("beta", 5);
    let mailbox = Mailbox::new(net.config.chains["beta"].mailbox, &beta);
    let keys = &net.devnet.validator_keys()[..2];
    let greedy = forged(&net, 1_000_001, attacker, limit.capacity * U256::from(10));
    let err = mailbox.process(certificate(&net, &greedy, keys), greedy.encode().into()).call().await.unwrap_err();
    let decoded = err.as_decoded_interface_error::<TokenBridge::TokenBridgeErrors>();
    assert!(matches!(decoded, Some(TokenBridge::TokenBridgeErrors::RateLimited(_))), "{err}");
    // The bucket's capacity goes through; a second helping right after does not.
    let full = forged(&net, 1_000_002, attacker, limit.capacity);
    let call = mailbox.process(certificate(&net, &full, keys), full.encode().into());
    let receipt = call.send().await.unwrap().get_receipt().await.unwrap();
    assert!(receipt.status());
    let minted_at = beta.get_block_by_number(receipt.block_number.unwrap().into()).await.unwrap().unwrap();
    let again = forged(&net, 1_000_003, attacker, limit.capacity);
    assert!(mailbox.process(certificate(&net, &again, keys), again.encode().into()).call().await.is_err());

    // The loss is bounded by the bucket: capacity, plus what refilled since.
    let token = BridgedToken::new(net.config.chains["beta"].token.unwrap(), &beta);
    let locked = net.balance("alpha", net.config.chains["alpha"].bridge.unwrap()).await;
    // Nothing honest reached beta (one key is no quorum): its whole supply is the forgery.
    let supply = token.totalSupply().call().await.unwrap();
    assert_eq!(supply, limit.capacity);
    let unbacked = supply - locked;
    let now = beta.get_block_by_number(Default::default()).await.unwrap().unwrap().header.timestamp;
    let bound = limit.capacity + limit.refill_per_second * U256::from(now - minted_at.header.timestamp + 1);
    assert!(unbacked <= bound, "unbacked {unbacked}, bound {bound}");

    // The honest accountant books the mint against alpha's locks and flags the route.
    let flagged = wait_for(Duration::from_secs(60), "the route flagged unbacked", || async {
        metric(&net, "ferry_accountant_unbacked{route=\"alpha->beta\"}").await.filter(|v| *v > 0.0)
    })
    .await;
    let expected = limit.capacity.to_string().parse::<f64>().unwrap() - 10.0;
    assert!((flagged - expected).abs() <= expected * 1e-9, "unbacked {flagged}, expected {expected}");
    let books = ferry_cli(&["accountant"], &env).await;
    assert!(books.lines().any(|l| l.starts_with("alpha->beta") && l.ends_with("UNBACKED")), "{books}");

    // The attacker sends the forged tokens home to drain alpha's collateral: the honest
    // validator refuses to sign it and holds it; an operator cannot release it.
    let home = net.send_many("beta", "alpha", 5, attacker, &[U256::from(1_000)]).await;
    wait_for(Duration::from_secs(60), "the refusal counted", || async {
        metric(&net, "ferry_accountant_refusals_total{route=\"beta->alpha\"}").await.filter(|v| *v == 1.0)
    })
    .await;
    let listed = ferry_cli(&["governor", "list"], &env).await;
    assert!(listed.contains(&home[0].to_string()) && listed.contains("accountant: the origin holds"), "{listed}");
    let record = service.context().store.get(&home[0]).unwrap().unwrap();
    assert!(record.signatures.is_empty(), "the honest validator signed it: {record:?}");
    let url = format!("{}/governor/{}/release", net.api(), home[0]);
    assert_eq!(reqwest::Client::new().post(&url).send().await.unwrap().status(), 409);

    // And Prometheus, scraping this validator, fires both alarms.
    let prometheus = Prometheus::start(&net.config.http.listen.to_string());
    let unbacked = prometheus.wait_firing("FerryAccountantUnbacked", Duration::from_secs(90)).await;
    assert_eq!(unbacked["labels"]["route"], "alpha->beta", "{unbacked}");
    let refusals = prometheus.wait_firing("FerryAccountantRefusals", Duration::from_secs(90)).await;
    assert_eq!(refusals["labels"]["route"], "beta->alpha", "{refusals}");
    drop(prometheus);

    // The books are persisted once per block (a restart books nothing twice) and rebuilt
    // from the chain on a fresh store.
    let books = service.context().store.books().unwrap();
    service.stop().await;
    let restarted = Service::start(net.config.clone(), Role::Validator).await.unwrap();
    common::wait_ok(&format!("{}/readyz", net.api()), Duration::from_secs(60)).await;
    assert_eq!(restarted.context().store.books().unwrap(), books);
    restarted.stop().await;
    let mut fresh = net.config.clone();
    fresh.data_dir = net.dir.path().join("fresh");
    let rebuilt = Service::start(fresh, Role::Validator).await.unwrap();
    let store = &rebuilt.context().store;
    wait_for(Duration::from_secs(60), "the books rebuilt from the chain", || async {
        (store.books().unwrap() == books).then_some(())
    })
    .await;
    assert!(store.held().unwrap().iter().any(|held| held.id == home[0]), "the rebuilt validator signed the drain");
    rebuilt.stop().await;
}
