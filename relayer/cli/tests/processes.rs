//! `ferry run` as real processes: killed with SIGKILL mid-run and restarted from the
//! same data dir, and two relayer processes sharing one NATS.

mod common;

use std::{path::Path, time::Duration};

use common::{Net, amounts, assert_once, ferry_cli, ferry_run, wait_for, wait_ok};
use ferry_relayer::{Role, Service};
use tokio::process::Child;

fn kill9(child: &Child) {
    let pid = child.id().unwrap() as i32;
    // SAFETY: kill(2) on a child we started and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_ferry_run_restarts_from_its_data_dir_and_delivers_each_once() {
    let net = Net::start(Some(Duration::from_millis(500)), 2).await;
    let path = net.dir.path().join("ferry.toml");
    net.config.write(&path).unwrap();
    let mut ferry = ferry_run(&path, "all", &[]);
    wait_ok(&format!("{}/healthz", net.api()), Duration::from_secs(60)).await;
    let ids = net.send_many("alpha", "beta", 0, net.account(1), &amounts(200, 9)).await;
    wait_for(Duration::from_secs(120), "the first deliveries", || async {
        (!net.processed("beta").await.is_empty()).then_some(())
    })
    .await;
    kill9(&ferry);
    ferry.wait().await.unwrap();

    let mut ferry = ferry_run(&path, "all", &[]);
    let processed = net.wait_processed("beta", &ids, Duration::from_secs(180)).await;
    assert_once(&processed, &ids);
    // The restarted process knows every message as delivered.
    let api = net.api();
    wait_for(Duration::from_secs(60), "the store to agree", || async {
        let url = format!("{api}/messages?status=delivered&limit=1000");
        let records: Vec<serde_json::Value> = reqwest::get(url).await.ok()?.json().await.ok()?;
        (records.len() == 200).then_some(())
    })
    .await;
    // What an operator types.
    let status = cli(&["status", &ids[0].to_string(), "--config"], &path).await;
    assert!(status.contains(r#""stage": "delivered""#), "{status}");
    let listed = cli(&["messages", "--status", "delivered", "--limit", "1000", "--config"], &path).await;
    assert_eq!(listed.lines().filter(|l| l.contains("delivered")).count(), 200, "{listed}");
    ferry.kill().await.unwrap();
    // With the service stopped, the same answers come from the store.
    ferry.wait().await.unwrap();
    let status = cli(&["status", &ids[1].to_string(), "--config"], &path).await;
    assert!(status.contains(r#""stage": "delivered""#), "{status}");
}

/// Runs a `ferry` command with `config` as its last argument; returns its stdout.
async fn cli(args: &[&str], config: &Path) -> String {
    let config = config.to_str().unwrap();
    ferry_cli(&[args, &[config]].concat(), &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relayer_processes_share_the_work_and_never_send_a_message_twice() {
    let net = Net::start(Some(Duration::from_millis(500)), 2).await;
    // The validators run in this process; two relayers run as processes with their own
    // keys, data dirs and HTTP ports.
    let validators = Service::start(net.config.clone(), Role::Validator).await.unwrap();
    let path = net.dir.path().join("ferry.toml");
    net.config.write(&path).unwrap();
    let mut relayers = Vec::new();
    for (i, account) in [(1, 8usize), (2, 7usize)] {
        let key = net.devnet.info().accounts[account].private_key;
        let env = [
            ("FERRY__RELAYER__KEY", key.to_string()),
            ("FERRY__RELAYER__NAME", format!("relayer-{i}")),
            ("FERRY__DATA_DIR", net.dir.path().join(format!("relayer-{i}")).display().to_string()),
            ("FERRY__HTTP__LISTEN", format!("127.0.0.1:{}", ferry_devnet::free_port().unwrap())),
        ];
        relayers.push(ferry_run(&path, "relayer", &env));
    }
    let ids = net.send_many("alpha", "beta", 0, net.account(1), &amounts(150, 4)).await;
    let processed = net.wait_processed("beta", &ids, Duration::from_secs(180)).await;
    assert_once(&processed, &ids);
    assert!(net.failed("beta").await.is_empty(), "no item failed for 'already delivered'");

    // Both relayers sent deliveries, and none of their transactions reverted.
    let provider = alloy::providers::ProviderBuilder::new().connect_http(net.rpc("beta").parse().unwrap());
    let mut senders = std::collections::HashSet::new();
    for tx in processed.values().flatten().collect::<std::collections::HashSet<_>>() {
        use alloy::providers::Provider;
        let receipt = provider.get_transaction_receipt(*tx).await.unwrap().unwrap();
        assert!(receipt.status(), "delivery {tx} reverted");
        senders.insert(receipt.from);
    }
    assert!(!senders.is_empty() && senders.len() <= 2, "{senders:?}");
    for mut r in relayers {
        r.kill().await.unwrap();
    }
    validators.stop().await;
}

/// Processes starting together against one nats-server each set up both streams (the
/// compose file starts them so): every connect succeeds, a stream already as wanted is
/// left as it was (nothing rewrites it), and one changed behind ferry's back is put back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_set_up_the_streams_once_and_repair_a_changed_one() {
    use async_nats::jetstream;
    use ferry_relayer::{ATTESTATION_STREAM, Bus, NatsConfig};
    use futures_util::{FutureExt, StreamExt};

    let nats = ferry_devnet::NatsServer::spawn().await.unwrap();
    let config = NatsConfig::new(nats.url());
    let connected =
        tokio::join!(Bus::connect(&config), Bus::connect(&config), Bus::connect(&config), Bus::connect(&config));
    for bus in [connected.0, connected.1, connected.2, connected.3] {
        bus.unwrap();
    }

    // A restart finds both streams as wanted: it looks them up and writes nothing. The
    // JetStream API is NATS subjects, so a subscriber sees each request it makes.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut requests = client.subscribe("$JS.API.STREAM.>").await.unwrap();
    // A round trip through the server (a request outside the subscribed subjects; its
    // answer is not read): the server took what this connection sent before it. The
    // first one: the subscription is in place before ferry connects. The second: the
    // copy of every request ferry made before its connect returned was sent to this
    // connection ahead of the answer, so it is in the subscription's queue.
    let round_trip = || async { client.request("$JS.API.INFO", "".into()).await.unwrap() };
    round_trip().await;
    Bus::connect(&config).await.unwrap();
    round_trip().await;
    let mut seen = Vec::new();
    while let Some(Some(request)) = requests.next().now_or_never() {
        seen.push(request.subject.to_string());
    }
    let lookups: Vec<String> =
        [&config.stream, ATTESTATION_STREAM].iter().map(|s| format!("$JS.API.STREAM.INFO.{s}")).collect();
    assert_eq!(seen, lookups, "a restart did more than look the streams up");

    let js = jetstream::new(client);
    let mut messages = js.get_stream(&config.stream).await.unwrap();
    let created = messages.info().await.unwrap().created;
    assert_eq!(messages.cached_info().config.subjects, vec!["ferry.msg.>".to_string()]);
    assert!(js.get_stream(ATTESTATION_STREAM).await.is_ok(), "no attestation stream");

    // Changed by hand: a day's retention instead of ferry's week.
    let mut changed = messages.cached_info().config.clone();
    let wanted_age = changed.max_age;
    changed.max_age = Duration::from_secs(24 * 3600);
    js.update_stream(changed).await.unwrap();
    Bus::connect(&config).await.unwrap();
    let info = messages.info().await.unwrap();
    assert_eq!(info.config.max_age, wanted_age, "the changed stream was not put back");
    assert_eq!(info.created, created, "the stream was made anew");
}
