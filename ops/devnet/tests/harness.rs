//! The harness itself: real processes come up, answer, and are gone after drop.

use std::{path::Path, time::Duration};

use alloy::providers::{Provider, ProviderBuilder};
use ferry_devnet::{Anvil, AnvilOptions, Devnet, DevnetOptions, NatsServer, is_running};
use ferry_messages::contracts::{Mailbox, TestToken, TokenBridge};

async fn gone_within(pid: u32, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while is_running(pid) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[tokio::test]
async fn anvil_answers_and_dies_with_its_handle() {
    let anvil = Anvil::spawn(AnvilOptions { chain_id: Some(4242), ..Default::default() }).await.unwrap();
    let provider = ProviderBuilder::new().connect_http(anvil.rpc_url().parse().unwrap());
    assert_eq!(provider.get_chain_id().await.unwrap(), 4242);
    assert_eq!(anvil.private_keys().len(), 10);
    let pid = anvil.pid();
    assert!(is_running(pid));
    drop(anvil);
    assert!(gone_within(pid, Duration::from_secs(10)).await, "anvil {pid} survived its handle");
}

#[tokio::test]
async fn nats_has_jetstream_and_survives_a_restart() {
    let mut nats = NatsServer::spawn().await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let config = async_nats::jetstream::stream::Config {
        name: "HARNESS".into(),
        subjects: vec!["harness.>".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    };
    js.create_stream(config).await.unwrap();
    js.publish("harness.a", "one".into()).await.unwrap().await.unwrap();

    let (port, old_pid) = (nats.port(), nats.pid());
    nats.restart().await.unwrap();
    assert_eq!(nats.port(), port);
    assert!(gone_within(old_pid, Duration::from_secs(10)).await);

    // The file store outlives the restart.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("HARNESS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);

    let pid = nats.pid();
    drop(nats);
    assert!(gone_within(pid, Duration::from_secs(10)).await, "nats-server {pid} survived its handle");
}

#[tokio::test]
async fn devnet_deploys_and_wires_both_chains() {
    let devnet = Devnet::start(DevnetOptions { block_time: None, ..Default::default() }).await.unwrap();
    let info = devnet.info().clone();
    assert_eq!(info.chains.len(), 2);
    assert_eq!((info.chains[0].chain_id, info.chains[1].chain_id), (31337, 31338));
    assert_eq!(info.validators.len(), 3);
    assert_eq!(info.threshold, 2);

    let [alpha, beta] = devnet.deployments().clone();
    let a = ProviderBuilder::new().connect_http(info.chains[0].rpc_url.parse().unwrap());
    let b = ProviderBuilder::new().connect_http(info.chains[1].rpc_url.parse().unwrap());

    let mailbox_a = Mailbox::new(alpha.mailbox, &a);
    let mailbox_b = Mailbox::new(beta.mailbox, &b);
    assert_eq!(mailbox_a.localDomain().call().await.unwrap(), 31337);
    assert_eq!(mailbox_a.remoteMailbox(31338).call().await.unwrap(), beta.mailbox.into_word());
    assert_eq!(mailbox_b.remoteMailbox(31337).call().await.unwrap(), alpha.mailbox.into_word());
    assert_eq!(mailbox_b.validators().call().await.unwrap(), info.validators);
    assert_eq!(mailbox_b.threshold().call().await.unwrap(), 2);

    let bridge_a = TokenBridge::new(alpha.bridge, &a);
    let bridge_b = TokenBridge::new(beta.bridge, &b);
    assert_eq!(bridge_a.remoteBridge(31338).call().await.unwrap(), beta.bridge.into_word());
    assert_eq!(bridge_b.remoteBridge(31337).call().await.unwrap(), alpha.bridge.into_word());
    assert_eq!(bridge_a.mode().call().await.unwrap(), 0);
    assert_eq!(bridge_b.mode().call().await.unwrap(), 1);

    let user = info.accounts[0].address;
    let balance = TestToken::new(alpha.token, &a).balanceOf(user).call().await.unwrap();
    assert_eq!(balance.to_string(), "1000000000000000000000000");

    let file = tempfile::NamedTempFile::new().unwrap();
    info.write(file.path()).unwrap();
    assert_eq!(ferry_devnet::DevnetInfo::read(Path::new(file.path())).unwrap(), info);

    let pids = [devnet.alpha.pid(), devnet.beta.pid(), devnet.nats.pid()];
    drop(devnet);
    for pid in pids {
        assert!(gone_within(pid, Duration::from_secs(10)).await, "child {pid} survived the devnet");
    }
}
