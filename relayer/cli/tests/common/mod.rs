//! A devnet with a ferry configuration, and the chain-side checks the pipeline tests
//! share: sending many transfers fast, and reading what the chains say was delivered.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    future::Future,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use alloy::{
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::types::Filter,
    sol_types::SolEvent,
};
use ferry_devnet::{Devnet, DevnetOptions};
use ferry_messages::contracts::{BridgedToken, GasPaymaster, Mailbox, TokenBridge};
use ferry_relayer::Config;

pub mod prometheus;
pub mod proxy;

/// Two chains, NATS, contracts, and a ferry configuration in a temp dir.
pub struct Net {
    pub devnet: Devnet,
    pub dir: tempfile::TempDir,
    pub config: Config,
}

impl Net {
    /// A devnet with `block_time` (None: automine) and `confirmations`.
    pub async fn start(block_time: Option<Duration>, confirmations: u64) -> Net {
        let devnet = Devnet::start(DevnetOptions { block_time, ..Default::default() }).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let http = format!("127.0.0.1:{}", ferry_devnet::free_port().unwrap()).parse().unwrap();
        let mut config = ferry_cli::devnet_config(dir.path(), &devnet, http, confirmations).unwrap();
        for chain in config.chains.values_mut() {
            chain.poll_interval_ms = 250;
        }
        // A stopped or killed relayer's messages come back after this.
        config.nats.ack_wait_secs = 8;
        Net { devnet, dir, config }
    }

    /// The chain named `name`'s RPC URL.
    pub fn rpc(&self, name: &str) -> &str {
        &self.config.chains[name].rpc_url
    }

    /// A signing provider for dev account `index` on chain `name`.
    pub fn wallet(&self, name: &str, index: usize) -> DynProvider {
        ferry_devnet::wallet(self.rpc(name), self.devnet.info().accounts[index].private_key).unwrap()
    }

    /// Dev account `index`.
    pub fn account(&self, index: usize) -> Address {
        self.devnet.info().accounts[index].address
    }

    /// Pays `origin`'s paymaster, from dev account `payer`, the quote for `gas` more gas of
    /// message `id`'s delivery to `destination` (a chain id); returns what it paid.
    pub async fn pay_for(&self, origin: &str, payer: usize, id: B256, destination: u32, gas: u64) -> U256 {
        let provider = self.wallet(origin, payer);
        let paymaster = GasPaymaster::new(self.config.chains[origin].paymaster.unwrap(), &provider);
        let quote = paymaster.quoteGasPayment(destination, U256::from(gas)).call().await.unwrap();
        let call = paymaster.payForGas(id, destination, U256::from(gas), self.account(payer)).value(quote).gas(200_000);
        let receipt = call.send().await.unwrap().get_receipt().await.unwrap();
        assert!(receipt.status(), "payForGas reverted: {receipt:?}");
        quote
    }

    /// The HTTP API's base URL.
    pub fn api(&self) -> String {
        format!("http://{}", self.config.http.listen)
    }

    /// Sends one transfer per amount from dev account `sender` on `from` to `recipient`
    /// on `to`, without waiting between them; returns the message ids in order.
    pub async fn send_many(
        &self,
        from: &str,
        to: &str,
        sender: usize,
        recipient: Address,
        amounts: &[U256],
    ) -> Vec<B256> {
        let provider = self.wallet(from, sender);
        let chain = &self.config.chains[from];
        let destination = self.config.chains[to].chain_id as u32;
        let bridge = TokenBridge::new(chain.bridge.unwrap(), &provider);
        let user = self.account(sender);
        if chain.chain_id == 31337 {
            let total: U256 = amounts.iter().copied().sum();
            let token = BridgedToken::new(chain.token.unwrap(), &provider);
            token.approve(*bridge.address(), total).send().await.unwrap().get_receipt().await.unwrap();
        }
        // Each transfer pays for its delivery (the devnet's bridges have a paymaster).
        let paid = bridge.quoteTransferRemote(destination).call().await.unwrap();
        let mut nonce = provider.get_transaction_count(user).pending().await.unwrap();
        let fee = provider.get_gas_price().await.unwrap() * 3 + 1_000_000_000;
        let mut pending = Vec::new();
        for amount in amounts {
            let call = bridge
                .transferRemote(destination, recipient, *amount)
                .value(paid)
                .nonce(nonce)
                .gas(300_000)
                .max_fee_per_gas(fee)
                .max_priority_fee_per_gas(1_000_000_000);
            pending.push(call.send().await.unwrap());
            nonce += 1;
        }
        dispatched_ids(pending, "transferRemote").await
    }

    /// Every `Process` event on chain `name`'s Mailbox: id -> (count, transaction hashes).
    pub async fn processed(&self, name: &str) -> HashMap<B256, Vec<B256>> {
        let provider = ProviderBuilder::new().connect_http(self.rpc(name).parse().unwrap());
        let filter = Filter::new()
            .address(self.config.chains[name].mailbox)
            .event_signature(Mailbox::Process::SIGNATURE_HASH)
            .from_block(0);
        let mut by_id: HashMap<B256, Vec<B256>> = HashMap::new();
        for log in provider.get_logs(&filter).await.unwrap() {
            let id = log.topics()[1];
            by_id.entry(id).or_default().push(log.transaction_hash.unwrap());
        }
        by_id
    }

    /// Every `ProcessFailed` event on chain `name`'s Mailbox, by id.
    pub async fn failed(&self, name: &str) -> Vec<B256> {
        let provider = ProviderBuilder::new().connect_http(self.rpc(name).parse().unwrap());
        let filter = Filter::new()
            .address(self.config.chains[name].mailbox)
            .event_signature(Mailbox::ProcessFailed::SIGNATURE_HASH)
            .from_block(0);
        provider.get_logs(&filter).await.unwrap().iter().map(|l| l.topics()[1]).collect()
    }

    /// Waits until every id in `ids` was processed on `name` (or panics at the deadline).
    pub async fn wait_processed(&self, name: &str, ids: &[B256], deadline: Duration) -> HashMap<B256, Vec<B256>> {
        wait_for(deadline, &format!("{} messages delivered on {name}", ids.len()), || async {
            let processed = self.processed(name).await;
            ids.iter().all(|id| processed.contains_key(id)).then_some(processed)
        })
        .await
    }

    /// An ERC-20 balance on chain `name`.
    pub async fn balance(&self, name: &str, holder: Address) -> U256 {
        let provider = ProviderBuilder::new().connect_http(self.rpc(name).parse().unwrap());
        BridgedToken::new(self.config.chains[name].token.unwrap(), provider).balanceOf(holder).call().await.unwrap()
    }

    /// The token supply on chain `name`.
    pub async fn supply(&self, name: &str) -> U256 {
        let provider = ProviderBuilder::new().connect_http(self.rpc(name).parse().unwrap());
        BridgedToken::new(self.config.chains[name].token.unwrap(), provider).totalSupply().call().await.unwrap()
    }
}

/// Sends the in-process relayer's logs (`FERRY_TEST_LOG`, by default warnings and the
/// relayer's own info) to stderr, which the test runner shows when a test fails: a stall
/// in CI then says what the relayer was doing. Once per test process; a test that
/// captures logs itself does not call it.
pub fn log_to_stderr() {
    let filter = std::env::var("FERRY_TEST_LOG").unwrap_or_else(|_| "warn,ferry_relayer=info,ferry_devnet=info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(std::io::stderr).try_init();
}

/// Polls `check` every 250 ms until it yields a value; panics after `deadline`.
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Asserts each id was processed exactly once; returns how many transactions carried them.
pub fn assert_once(processed: &HashMap<B256, Vec<B256>>, ids: &[B256]) -> usize {
    let mut txs = std::collections::HashSet::new();
    for id in ids {
        let hashes = &processed[id];
        assert_eq!(hashes.len(), 1, "message {id} processed {} times", hashes.len());
        txs.insert(hashes[0]);
    }
    txs.len()
}

/// Random-looking amounts from a seed (distinct, nonzero).
pub fn amounts(n: usize, seed: u64) -> Vec<U256> {
    (0..n as u64)
        .map(|i| {
            let x = seed.wrapping_mul(6364136223846793005).wrapping_add(i.wrapping_mul(1442695040888963407));
            U256::from(1 + x % 1_000_000_007)
        })
        .collect()
}

/// Starts `ferry run --role ROLE --config CONFIG` with environment overrides; killed when
/// dropped.
pub fn ferry_run(config: &Path, role: &str, env: &[(&str, String)]) -> tokio::process::Child {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .args(["run", "--role", role, "--config"])
        .arg(config)
        // Its logs (stderr) go where the test's output goes, shown when the test fails;
        // the client's connection events among them.
        .env("FERRY_LOG", "warn,ferry_relayer=info,async_nats=info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().unwrap()
}

/// Runs a `ferry` command to completion with extra environment; returns its stdout, or
/// fails the test with its output unless it exits 0.
pub async fn ferry_cli(args: &[&str], env: &[(&str, String)]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "ferry {args:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Waits until GET `url` answers with a success status; at the deadline, fails with the
/// last answer (a `/readyz` says why it is not ready).
pub async fn wait_ok(url: &str, deadline: Duration) {
    let end = Instant::now() + deadline;
    loop {
        let last = match reqwest::get(url).await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {url}; last answer: {last}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The message ids `pending` transactions dispatched, in order, once each is mined;
/// fails the test if one (a `what`) reverted.
pub async fn dispatched_ids(
    pending: Vec<alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>>,
    what: &str,
) -> Vec<B256> {
    let mut ids = Vec::with_capacity(pending.len());
    for p in pending {
        let receipt = p.with_timeout(Some(Duration::from_secs(120))).get_receipt().await.unwrap();
        assert!(receipt.status(), "{what} reverted: {receipt:?}");
        let id = receipt.inner.logs().iter().find_map(|l| l.log_decode::<Mailbox::Dispatch>().ok()).unwrap();
        ids.push(id.inner.data.id);
    }
    ids
}
