//! `ferry devnet` as a user runs it: a real process that starts real children, writes
//! its files, answers on both chains, and leaves nothing behind on SIGTERM.

use std::{path::Path, process::Stdio, time::Duration};

use alloy::providers::{Provider, ProviderBuilder};
use ferry_devnet::{DevnetInfo, child_pids, is_running};
use ferry_relayer::Config;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
    time::{Instant, timeout},
};

#[tokio::test]
async fn devnet_starts_writes_its_files_answers_and_stops_every_child_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let http = ferry_devnet::free_port().unwrap();
    let mut ferry = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["devnet", "--dir"])
        .arg(dir.path())
        .args(["--no-relayer", "--block-time", "1", "--http", &format!("127.0.0.1:{http}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = ferry.id().unwrap();

    // Wait for the one line that says it is ready.
    let mut lines = BufReader::new(ferry.stdout.take().unwrap()).lines();
    let ready = timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("ready") {
                return line;
            }
        }
        panic!("ferry devnet exited without printing ready");
    })
    .await
    .expect("ready within 120s");
    assert!(ready.contains("ferry.toml"), "{ready}");

    // Both files, consistent with each other.
    let info = DevnetInfo::read(&dir.path().join("devnet.json")).unwrap();
    let config = Config::load(&dir.path().join("ferry.toml")).unwrap();
    assert_eq!(
        info.chains.iter().map(|c| (c.name.as_str(), c.chain_id)).collect::<Vec<_>>(),
        [("alpha", 31337), ("beta", 31338)]
    );
    assert_eq!(info.metrics_url, format!("http://127.0.0.1:{http}/metrics"));
    assert_eq!(config.http.listen.port(), http);
    assert_eq!(config.nats.url, info.nats_url);
    assert_eq!(config.validators.set, info.validators);
    assert_eq!(config.validators.key_files.len(), 3);
    assert_eq!(info.accounts.len(), 10);
    for chain in &info.chains {
        let c = &config.chains[&chain.name];
        assert_eq!(
            (c.chain_id, c.mailbox, c.bridge, c.token),
            (chain.chain_id, chain.mailbox, Some(chain.bridge), Some(chain.token))
        );
        let key = ferry_relayer::Secret::from_file(config.relayer.key_file.as_deref().unwrap(), "relayer.key_file");
        assert!(key.is_ok());
    }

    // Both chains answer, with code at the contracts; NATS accepts a client.
    for chain in &info.chains {
        let provider = ProviderBuilder::new().connect_http(chain.rpc_url.parse().unwrap());
        assert_eq!(provider.get_chain_id().await.unwrap(), chain.chain_id);
        for contract in [chain.mailbox, chain.bridge, chain.token] {
            assert!(
                !provider.get_code_at(contract).await.unwrap().is_empty(),
                "{} has no code at {contract}",
                chain.name
            );
        }
    }
    let client = async_nats::connect(&info.nats_url).await.unwrap();
    client.flush().await.unwrap();
    drop(client);

    let kids = child_pids(pid);
    assert!(kids.len() >= 3, "expected anvil, anvil and nats-server under {pid}, found {kids:?}");

    // SIGTERM: ferry exits cleanly and takes every child with it.
    // SAFETY: kill(2) on the PID of our own child.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    let status = timeout(Duration::from_secs(30), ferry.wait()).await.expect("exits within 30s").unwrap();
    assert!(status.success(), "ferry devnet exited with {status}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while kids.iter().any(|k| is_running(*k)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: Vec<u32> = kids.iter().copied().filter(|k| is_running(*k)).collect();
    assert!(left.is_empty(), "children left behind: {left:?}");
    for chain in &info.chains {
        let provider = ProviderBuilder::new().connect_http(chain.rpc_url.parse().unwrap());
        assert!(provider.get_chain_id().await.is_err(), "{} still answers", chain.name);
    }
    assert!(Path::new(&dir.path().join("keys/relayer.key")).exists());
}

/// The quick start from a clean directory: chains, NATS, contracts, the relayer and three
/// validators in one process, and the demo transfer there and back.
#[tokio::test]
async fn devnet_demo_transfer_completes_from_a_clean_dir() {
    let dir = tempfile::tempdir().unwrap();
    let http = ferry_devnet::free_port().unwrap();
    let ferry = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["devnet", "--exit-after-demo", "--block-time", "0.5", "--dir"])
        .arg(dir.path().join("fresh"))
        .args(["--http", &format!("127.0.0.1:{http}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = timeout(Duration::from_secs(240), ferry.wait_with_output()).await.expect("demo within 240s").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let delivered = stdout.lines().filter(|l| l.starts_with("demo: 0x") && l.ends_with(" delivered")).count();
    assert_eq!(delivered, 2, "{stdout}");
    assert!(stdout.contains("demo: done, both transfers delivered"), "{stdout}");
    // Every step of the lifecycle was shown for the first transfer.
    for stage in ["dispatched", "submitted", "delivered"] {
        assert!(stdout.contains(stage), "{stage} missing from {stdout}");
    }
}
