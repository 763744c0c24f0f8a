//! Bad input against a running service: forged and misdirected signatures, certificates
//! below threshold or with a repeated signer, replays, unknown chains, malformed NATS
//! payloads of every kind, and a node that serves headers that do not hash, receipts
//! that do not prove and bytes that are not JSON. Each is refused, logged with its
//! reason and counted in `ferry_bad_input_total{source, reason}` (read from a real scrape
//! of `/metrics`); nothing is delivered for it; and good messages keep flowing both ways
//! meanwhile, each delivered exactly once.

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use alloy::primitives::{Address, B256, Bytes, U256};
use common::{
    Net, assert_once,
    proxy::{Lie, RpcProxy},
    wait_for,
};
use ferry_light_client::ValidatorKey;
use ferry_messages::{
    Message, QuorumCertificate,
    contracts::Mailbox,
    wire::{self, Deliverable, OriginBlock, SignedAttestation, WIRE_VERSION},
};
use ferry_relayer::{Role, Service, Stage};

const BLOCK: Option<Duration> = Some(Duration::from_millis(500));
const ALPHA: u32 = 31337;
const BETA: u32 = 31338;

/// Everything the service logs, as plain text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> Logs {
        let logs = Logs::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("warn,ferry_relayer=info")
            .with_writer(move || writer.clone())
            .init();
        logs
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
    }
}

/// Prints the service's last log lines if the test fails: what a flake leaves to read.
struct ShowOnFailure(Logs);

impl Drop for ShowOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.0.text();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- the service's last log lines ---\n{}", lines[lines.len().saturating_sub(400)..].join("\n"));
        }
    }
}

/// `ferry_bad_input_total{source, reason}` as the service's `/metrics` reports it.
async fn bad_input(api: &str, source: &str, reason: &str) -> u64 {
    let text = reqwest::get(format!("{api}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("ferry_bad_input_total{"))
        .filter(|l| l.contains(&format!("source=\"{source}\"")) && l.contains(&format!("reason=\"{reason}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Waits until the service counted at least one `reason` from `source`.
async fn counted(api: &str, source: &str, reason: &str) {
    wait_for(Duration::from_secs(60), &format!("bad input {source}/{reason} counted"), || async {
        (bad_input(api, source, reason).await >= 1).then_some(())
    })
    .await;
}

/// A message nobody dispatched, from alpha's Mailbox to beta's bridge.
fn fabricated(net: &Net, nonce: u32, origin: u32, destination: u32) -> Message {
    Message {
        version: ferry_messages::VERSION,
        nonce,
        origin,
        sender: net.config.chains["alpha"].bridge.unwrap().into_word(),
        destination,
        recipient: net.config.chains["beta"].bridge.unwrap().into_word(),
        body: Bytes::from_static(b"nobody sent this"),
    }
}

struct Keys {
    validators: Vec<ValidatorKey>,
    outsider: ValidatorKey,
}

fn signed(key: &ValidatorKey, claimed: Address, message: &Message, mailbox: Address, block: OriginBlock) -> Vec<u8> {
    let attestation = wire::attestation(message, mailbox, block.hash);
    let signature = key.sign(&attestation).unwrap();
    SignedAttestation {
        version: WIRE_VERSION,
        message: message.encode().into(),
        origin_mailbox: mailbox,
        block,
        validator: claimed,
        signature: signature.as_bytes().to_vec().into(),
    }
    .encode()
}

fn deliverable(message: &Message, mailbox: Address, block: OriginBlock, metadata: Vec<u8>) -> Vec<u8> {
    Deliverable {
        version: WIRE_VERSION,
        message: message.encode().into(),
        origin_mailbox: mailbox,
        block,
        metadata: metadata.into(),
    }
    .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_counted_and_logged_while_good_messages_flow() {
    let logs = Logs::capture();
    let _show = ShowOnFailure(logs.clone());
    let net = Net::start(BLOCK, 2).await;
    // alpha is reached through a proxy that lies when told to (polling, no WebSocket).
    let proxy = RpcProxy::start(net.rpc("alpha")).await;
    let mut config = net.config.clone();
    let alpha = config.chains.get_mut("alpha").unwrap();
    alpha.rpc_url = proxy.url();
    alpha.ws_url = None;
    let service = Service::start(config, Role::All).await.unwrap();
    let api = net.api();
    let store = &service.context().store;

    // A good message first, to replay later.
    let first = net.send_many("alpha", "beta", 0, net.account(2), &[U256::from(500u64)]).await;
    net.wait_processed("beta", &first, Duration::from_secs(120)).await;
    wait_for(Duration::from_secs(60), "the first message recorded as delivered", || async {
        store.get(&first[0]).unwrap().filter(|r| r.stage() == Stage::Delivered)
    })
    .await;
    // Account 1 gets tokens on beta to send back.
    let seed = net.send_many("alpha", "beta", 0, net.account(1), &[U256::from(10u64.pow(9))]).await;
    net.wait_processed("beta", &seed, Duration::from_secs(120)).await;

    let keys = Keys {
        validators: net.devnet.validator_keys().iter().map(|k| ValidatorKey::from_bytes(k).unwrap()).collect(),
        outsider: ValidatorKey::from_bytes(&B256::repeat_byte(0x77)).unwrap(),
    };
    let mailbox = net.config.chains["alpha"].mailbox;
    let real = store.get(&first[0]).unwrap().unwrap();
    let block = real.block;

    // Good messages both ways while the bad input goes in.
    let amounts: Vec<U256> = (1..=5u64).map(|i| U256::from(i * 7)).collect();
    let (there, back) = tokio::join!(
        net.send_many("alpha", "beta", 0, net.account(3), &amounts),
        net.send_many("beta", "alpha", 1, net.account(4), &amounts),
    );

    let nats = async_nats::connect(net.devnet.info().nats_url.as_str()).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let att = format!("ferry.att.{ALPHA}.{BETA}");
    let msg = format!("ferry.msg.{BETA}");
    let publish = |subject: String, payload: Vec<u8>| {
        let js = js.clone();
        async move { js.publish(subject, payload.into()).await.unwrap().await.unwrap() }
    };

    // Signatures (the collector): malformed of every kind, forged, misdirected, unknown chains.
    let genuine =
        signed(&keys.validators[0], keys.validators[0].address(), &fabricated(&net, 900, ALPHA, BETA), mailbox, block);
    publish(att.clone(), b"\x00\xffnot json".to_vec()).await;
    publish(att.clone(), genuine[..genuine.len() / 2].to_vec()).await;
    publish(att.clone(), vec![b'{'; (1 << 20) - 1024]).await;
    publish(att.clone(), br#"{"version":1,"hello":"world"}"#.to_vec()).await;
    let forged = fabricated(&net, 901, ALPHA, BETA);
    publish(att.clone(), signed(&keys.outsider, keys.validators[0].address(), &forged, mailbox, block)).await;
    publish(att.clone(), signed(&keys.outsider, keys.outsider.address(), &forged, mailbox, block)).await;
    let misdirected = fabricated(&net, 902, ALPHA, BETA);
    let elsewhere = Message { destination: 999, ..misdirected.clone() };
    let other_domain = wire::attestation(&elsewhere, mailbox, block.hash);
    let mut envelope = SignedAttestation::decode(&signed(
        &keys.validators[1],
        keys.validators[1].address(),
        &misdirected,
        mailbox,
        block,
    ))
    .unwrap();
    envelope.signature = keys.validators[1].sign(&other_domain).unwrap().as_bytes().to_vec().into();
    publish(att.clone(), envelope.encode()).await;
    let unknown = fabricated(&net, 903, 999, BETA);
    publish(
        "ferry.att.999.31338".into(),
        signed(&keys.validators[0], keys.validators[0].address(), &unknown, mailbox, block),
    )
    .await;

    // Deliverables (beta's deliverer): malformed, wrong type, certificates that fall short.
    publish(msg.clone(), b"random \x01\x02\x03 bytes".to_vec()).await;
    publish(msg.clone(), genuine.clone()).await;
    let short = fabricated(&net, 904, ALPHA, BETA);
    let short_attestation = wire::attestation(&short, mailbox, block.hash);
    let one = keys.validators[0].sign(&short_attestation).unwrap();
    let qc = |signatures| QuorumCertificate { block_hash: block.hash, signatures }.metadata();
    publish(msg.clone(), deliverable(&short, mailbox, block, qc(vec![one]))).await;
    let repeated = fabricated(&net, 905, ALPHA, BETA);
    let twice = keys.validators[0].sign(&wire::attestation(&repeated, mailbox, block.hash)).unwrap();
    publish(msg.clone(), deliverable(&repeated, mailbox, block, qc(vec![twice, twice]))).await;
    let domain = fabricated(&net, 906, ALPHA, BETA);
    let away = wire::attestation(&Message { destination: 999, ..domain.clone() }, mailbox, block.hash);
    let signatures: Vec<_> = keys.validators[..2].iter().map(|k| k.sign(&away).unwrap()).collect();
    let ordered = QuorumCertificate::ordered(&away, signatures).unwrap();
    publish(msg.clone(), deliverable(&domain, mailbox, block, ordered.metadata())).await;
    let from_nowhere = fabricated(&net, 907, 999, BETA);
    publish(msg.clone(), deliverable(&from_nowhere, mailbox, block, qc(vec![]))).await;
    let wrong_way = fabricated(&net, 908, BETA, ALPHA);
    publish(msg.clone(), deliverable(&wrong_way, mailbox, block, qc(vec![]))).await;
    // A replay of the delivered first message under a fresh Nats-Msg-Id.
    let replay = Deliverable {
        version: WIRE_VERSION,
        message: real.message.clone(),
        origin_mailbox: real.origin_mailbox,
        block: real.block,
        metadata: real.metadata().cloned().unwrap(),
    };
    let headers = {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", "a-replay");
        h
    };
    js.publish_with_headers(msg.clone(), headers, replay.encode().into()).await.unwrap().await.unwrap();

    for (source, reason) in [
        ("nats_attestation", "malformed"),
        ("nats_attestation", "too_large"),
        ("nats_attestation", "bad_signature"),
        ("nats_attestation", "unknown_chain"),
        ("nats_message", "malformed"),
        ("nats_message", "bad_certificate"),
        ("nats_message", "unknown_chain"),
        ("nats_message", "wrong_destination"),
        ("nats_message", "replay"),
    ] {
        counted(&api, source, reason).await;
    }
    assert!(
        bad_input(&api, "nats_attestation", "malformed").await >= 3,
        "random, truncated and wrong-typed signatures"
    );
    assert!(bad_input(&api, "nats_attestation", "bad_signature").await >= 3, "forged, outsider, other domain");
    assert!(bad_input(&api, "nats_message", "malformed").await >= 2, "random and wrong-typed deliverables");
    assert!(bad_input(&api, "nats_message", "bad_certificate").await >= 3, "short, repeated signer, other domain");

    // The node lies: headers that do not hash, receipts that do not prove, garbage.
    proxy.lie(Lie::Headers, 3);
    wait_for(Duration::from_secs(60), "the tampered headers served", || async { proxy.done().then_some(()) }).await;
    counted(&api, "rpc", "header_hash_mismatch").await;
    proxy.lie(Lie::Receipts, 2);
    let proven_anyway = net.send_many("alpha", "beta", 0, net.account(5), &[U256::from(77u64)]).await;
    wait_for(Duration::from_secs(60), "the tampered receipts served", || async { proxy.done().then_some(()) }).await;
    counted(&api, "rpc", "receipt_proof").await;
    proxy.lie(Lie::Garbage, 2);
    // A dispatch for the watcher to fetch receipts for.
    let read_through = net.send_many("alpha", "beta", 0, net.account(5), &[U256::from(78u64)]).await;
    wait_for(Duration::from_secs(60), "the garbage served", || async { proxy.done().then_some(()) }).await;
    counted(&api, "rpc", "malformed_response").await;

    // The good messages (and the one whose receipts were tampered with at first) arrive,
    // each once.
    let there: Vec<B256> = there.into_iter().chain(proven_anyway).chain(read_through).collect();
    let on_beta = net.wait_processed("beta", &there, Duration::from_secs(180)).await;
    let on_alpha = net.wait_processed("alpha", &back, Duration::from_secs(180)).await;
    assert_once(&on_beta, &there);
    assert_once(&on_alpha, &back);
    assert_once(&net.processed("beta").await, &first);

    // Nothing fabricated reached a chain or the delivered stage.
    let beta = net.wallet("beta", 0);
    let mailbox_beta = Mailbox::new(net.config.chains["beta"].mailbox, &beta);
    // One validator's genuine signature (a compromised validator) is not a quorum either.
    let lone = fabricated(&net, 900, ALPHA, BETA);
    for message in [&lone, &forged, &misdirected, &unknown, &short, &repeated, &domain, &from_nowhere] {
        let id = message.id();
        assert!(!mailbox_beta.delivered(id).call().await.unwrap(), "fabricated message {id} delivered");
        assert!(store.get(&id).unwrap().is_none_or(|r| r.stage() != Stage::Delivered), "{id} recorded as delivered");
    }
    assert!(net.failed("beta").await.is_empty() && net.failed("alpha").await.is_empty());

    // Every refusal was logged with its reason.
    let text = logs.text();
    for needle in [
        "refused a signature",
        "not a validator or not the claimant",
        "origin 999 is not configured",
        "refused a deliverable",
        "over the 98304-byte limit",
        "refused a replay of a delivered message",
        "not the claimed",
        "do not prove against the verified header",
        "malformed answer",
    ] {
        assert!(text.contains(needle), "no log line with {needle:?}");
    }
    service.stop().await;
}
