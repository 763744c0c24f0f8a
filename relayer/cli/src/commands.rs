//! The operator commands: `run`, `bridge`, `status`, `messages`, `retry`, `config check`,
//! `health`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use alloy::primitives::{Address, B256, U256};
use anyhow::{Context, bail};
use ferry_relayer::{Config, MessageRecord, Role, Secret, Service, Stage, Store};

use crate::bridge;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::signal::unix::{SignalKind, signal};

/// Arguments of `ferry run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(long, env = "FERRY_CONFIG")]
    config: PathBuf,
    /// What this process does.
    #[arg(long, value_enum, default_value_t = Role::All)]
    role: Role,
}

/// Runs the service until Ctrl-C or SIGTERM.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let service = Service::start(config, args.role).await?;
    println!("ferry running: http://{}", service.http_addr());
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
        _ = sigterm.recv() => tracing::info!("terminated"),
    }
    service.stop().await;
    Ok(())
}

/// Arguments of `ferry bridge`.
#[derive(Debug, clap::Args)]
pub struct BridgeArgs {
    /// The configuration file (chains, bridges, tokens, the HTTP API).
    #[arg(long, env = "FERRY_CONFIG")]
    config: PathBuf,
    /// Origin chain name.
    #[arg(long)]
    from: String,
    /// Destination chain name.
    #[arg(long)]
    to: String,
    /// Amount in the token's smallest unit.
    #[arg(long)]
    amount: U256,
    /// Who receives on the destination (default: the sender).
    #[arg(long)]
    recipient: Option<Address>,
    /// File holding the sender's private key (hex).
    #[arg(long, env = "FERRY_BRIDGE_KEY_FILE")]
    key_file: PathBuf,
    /// Follow the message until it is delivered (exit 0) or parked (exit 1).
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// Sends a transfer and, with `--wait`, follows it to delivery.
pub async fn bridge(args: BridgeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let key = Secret::from_file(&args.key_file, "--key-file")?;
    let sender = alloy::signers::local::PrivateKeySigner::from_bytes(key.expose())?.address();
    let recipient = args.recipient.unwrap_or(sender);
    let sent = bridge::send(&config, &args.from, &args.to, args.amount, recipient, key.expose()).await?;
    println!("message {} sent in {} (block {}); delivery paid: {} wei", sent.id, sent.tx, sent.block, sent.fee);
    if !args.wait {
        return Ok(());
    }
    let record = follow(&config, sent.id, Duration::from_secs(args.timeout)).await?;
    match record.stage() {
        Stage::Delivered => {
            println!("delivered: {}", record.history().last().and_then(|e| e.detail.clone()).unwrap_or_default());
            Ok(())
        }
        _ => bail!("message {} parked: {}", sent.id, record.parked_reason().unwrap_or_default()),
    }
}

/// Follows `id` on the API with a progress bar through the stages.
pub async fn follow(config: &Config, id: B256, timeout: Duration) -> anyhow::Result<MessageRecord> {
    let bar = ProgressBar::new(Stage::Delivered as u64);
    bar.set_style(ProgressStyle::with_template("{spinner} [{bar:30}] {msg} ({elapsed})")?.progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message("dispatched");
    let base = format!("http://{}", config.http.listen);
    let record = bridge::follow(&base, id, timeout, |stage| {
        bar.set_position(stage as u64 + 1);
        bar.set_message(stage.as_str());
    })
    .await;
    bar.finish();
    Ok(record?)
}

/// Arguments of `ferry status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The message id.
    id: B256,
    /// The configuration file (the HTTP API's address and the data dir).
    #[arg(long, env = "FERRY_CONFIG")]
    config: PathBuf,
}

/// Prints one message's record with its stage history.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let base = format!("http://{}", config.http.listen);
    let record = match bridge::status(&base, args.id).await {
        Ok(found) => found,
        Err(_) => open_store(&config)?.get(&args.id)?,
    };
    let record = record.with_context(|| format!("no message {}", args.id))?;
    println!("{}", serde_json::to_string_pretty(&record)?);
    Ok(())
}

/// Arguments of `ferry messages`.
#[derive(Debug, clap::Args)]
pub struct MessagesArgs {
    /// Only messages in this stage (observed, proven, attested, published, executed,
    /// submitted, delivered, parked, waiting, held, awaiting_payment).
    #[arg(long)]
    status: Option<Stage>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// The configuration file.
    #[arg(long, env = "FERRY_CONFIG")]
    config: PathBuf,
}

/// Lists messages, one line each.
pub async fn messages(args: MessagesArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let mut url = format!("http://{}/messages?limit={}", config.http.listen, args.limit);
    if let Some(stage) = args.status {
        url.push_str(&format!("&status={stage}"));
    }
    let records: Vec<MessageRecord> = match reqwest::get(&url).await {
        Ok(response) if response.status().is_success() => serde_json::from_slice(&response.bytes().await?)?,
        _ => open_store(&config)?.list(args.status, args.limit)?,
    };
    for r in &records {
        let reason = r.parked_reason().or(r.waiting_reason()).or(r.held_reason()).unwrap_or("");
        println!("{} {:>5} -> {:<5} {:<10} {reason}", r.id, r.origin, r.destination, r.stage().as_str());
    }
    Ok(())
}

/// Arguments of `ferry retry`.
#[derive(Debug, clap::Args)]
pub struct RetryArgs {
    /// The parked message's id.
    id: B256,
    /// The configuration file (the HTTP API's address).
    #[arg(long, env = "FERRY_CONFIG")]
    config: PathBuf,
}

/// Asks the running service to try a parked message again.
pub async fn retry(args: RetryArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    post_and_print(&format!("http://{}/messages/{}/retry", config.http.listen, args.id)).await
}

/// POSTs to a running ferry's API and prints its answer; an error status fails with it.
pub(crate) async fn post_and_print(url: &str) -> anyhow::Result<()> {
    let response = reqwest::Client::new().post(url).send().await.with_context(|| format!("POST {url}"))?;
    let code = response.status();
    let body = response.text().await?;
    if !code.is_success() {
        bail!("{url}: HTTP {code}: {body}");
    }
    println!("{body}");
    Ok(())
}

/// Arguments of `ferry config check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The configuration file.
    file: PathBuf,
}

/// Reports every problem with its key path; exits non-zero if there is any.
pub fn check(args: CheckArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.file)?;
    let problems = config.check();
    for problem in &problems {
        eprintln!("{problem}");
    }
    if problems.is_empty() {
        println!("{}: ok", args.file.display());
        Ok(())
    } else {
        bail!("{}: {} problem(s)", args.file.display(), problems.len())
    }
}

/// The process's store, for when its API is down.
pub(crate) fn open_store(config: &Config) -> anyhow::Result<Store> {
    let path = config.data_dir.join("ferry.redb");
    Store::open(&path)
        .with_context(|| format!("the API is unreachable and the store {} cannot be opened", path.display()))
}

/// Arguments of `ferry health`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The HTTP address of the ferry process to ask.
    #[arg(long, env = "FERRY_HEALTH_ADDR", default_value = "127.0.0.1:9100")]
    http: SocketAddr,
    /// Ask `/readyz` (caught up and connected) instead of `/healthz` (serving).
    #[arg(long)]
    ready: bool,
}

/// Exits 0 when the process answers 200 on `/healthz` (or `/readyz`): the container's
/// health check, with nothing to install beside ferry.
pub async fn health(args: HealthArgs) -> anyhow::Result<()> {
    let path = if args.ready { "readyz" } else { "healthz" };
    let url = format!("http://{}/{path}", args.http);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let response = client.get(&url).send().await.with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "{url}: {status} {}", body.trim());
    println!("{url}: {status} {}", body.trim());
    Ok(())
}
