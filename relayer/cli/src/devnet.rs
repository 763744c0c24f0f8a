//! `ferry devnet`: a local pair of chains with everything deployed, for demos and for
//! running `ferry run` against.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    time::Duration,
};

use alloy::primitives::U256;
use anyhow::Context;
use ferry_devnet::{Devnet, DevnetOptions};
use ferry_relayer::{Config, Role, Secret, Service, Stage};

use crate::bridge;
use tokio::signal::unix::{SignalKind, signal};

/// Arguments of `ferry devnet`.
#[derive(Debug, clap::Args)]
pub struct DevnetArgs {
    /// Directory for ferry.toml, devnet.json, keys and the relayer's data.
    #[arg(long, default_value = "devnet")]
    dir: PathBuf,
    /// Seconds between blocks on both chains; 0 mines a block per transaction.
    #[arg(long, default_value_t = 1.0)]
    block_time: f64,
    /// Address the relayer's HTTP server (metrics, health) will listen on; a free port
    /// is chosen if this one is taken.
    #[arg(long, default_value = "127.0.0.1:9100")]
    http: SocketAddr,
    /// Number of validators.
    #[arg(long, default_value_t = 3)]
    validators: usize,
    /// Signatures needed per message.
    #[arg(long, default_value_t = 2)]
    threshold: u8,
    /// Blocks on top of a header before it is final.
    #[arg(long, default_value_t = 2)]
    confirmations: u64,
    /// Only chains, NATS and contracts: run `ferry run --config DIR/ferry.toml` yourself.
    #[arg(long)]
    no_relayer: bool,
    /// Exit after the demo transfers instead of staying up.
    #[arg(long)]
    exit_after_demo: bool,
}

/// Brings the devnet up, writes its files, and holds it until a signal.
pub async fn run(args: DevnetArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.block_time >= 0.0 && args.block_time.is_finite(), "--block-time must be >= 0");
    anyhow::ensure!(
        args.threshold >= 1 && usize::from(args.threshold) <= args.validators,
        "--threshold must be between 1 and --validators"
    );
    std::fs::create_dir_all(args.dir.join("keys")).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize().with_context(|| format!("resolving {}", args.dir.display()))?;
    let options = DevnetOptions {
        block_time: (args.block_time > 0.0).then(|| Duration::from_secs_f64(args.block_time)),
        validators: args.validators,
        threshold: args.threshold,
        http_listen: available(args.http)?,
        ..Default::default()
    };

    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let devnet = tokio::select! {
        devnet = Devnet::start(options.clone()) => devnet.context("starting the devnet")?,
        _ = tokio::signal::ctrl_c() => return Ok(()),
        _ = sigterm.recv() => return Ok(()),
    };
    let info = devnet.info();
    let config = write_files(&dir, &devnet, &options, args.confirmations)?;
    for chain in &info.chains {
        tracing::info!(chain = %chain.name, chain_id = chain.chain_id, rpc = %chain.rpc_url, mailbox = %chain.mailbox, bridge = %chain.bridge, token = %chain.token, "chain up");
    }
    tracing::info!(nats = %info.nats_url, "nats-server up");
    println!(
        "ferry devnet ready: alpha {} beta {} nats {} config {}",
        info.chains[0].rpc_url,
        info.chains[1].rpc_url,
        info.nats_url,
        config.display()
    );

    let service = if args.no_relayer {
        None
    } else {
        let service = Service::start(Config::load(&config)?, Role::All).await?;
        println!("relayer and {} validators running: http://{}", info.validators.len(), service.http_addr());
        let user_key = dir.join("keys/user.key");
        let demo = demo(&config, &user_key);
        tokio::select! {
            result = demo => result?,
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
            _ = sigterm.recv() => tracing::info!("terminated"),
        }
        Some(service)
    };
    if !args.exit_after_demo {
        println!(
            "up until Ctrl-C; try: ferry bridge --config {} --key-file {} --from alpha --to beta --amount 1000 --wait",
            config.display(),
            dir.join("keys/user.key").display()
        );
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
            _ = sigterm.recv() => tracing::info!("terminated"),
        }
    }
    if let Some(service) = service {
        service.stop().await;
    }
    drop(devnet);
    tracing::info!("devnet stopped");
    Ok(())
}

/// Bridges 1,000 tokens alpha -> beta and back, printing each step.
async fn demo(config_path: &Path, key_file: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let key = Secret::from_file(key_file, "user key")?;
    let user = alloy::signers::local::PrivateKeySigner::from_bytes(key.expose())?.address();
    let amount = U256::from(1000u64) * U256::from(10u64).pow(U256::from(18u64));
    for (from, to) in [("alpha", "beta"), ("beta", "alpha")] {
        println!("demo: bridging 1000 tokens {from} -> {to} for {user}");
        let sent = bridge::send(&config, from, to, amount, user, key.expose()).await?;
        println!(
            "demo: message {} dispatched in {} (block {}), delivery paid: {} wei",
            sent.id, sent.tx, sent.block, sent.fee
        );
        let base = format!("http://{}", config.http.listen);
        let record = bridge::follow(&base, sent.id, Duration::from_secs(120), |stage| {
            println!("demo: {} {stage}", sent.id);
        })
        .await?;
        anyhow::ensure!(record.stage() == Stage::Delivered, "demo transfer parked: {:?}", record.parked_reason());
    }
    println!("demo: done, both transfers delivered");
    Ok(())
}

/// `wanted` if it can be bound now, else a free loopback port.
fn available(wanted: SocketAddr) -> anyhow::Result<SocketAddr> {
    if TcpListener::bind(wanted).is_ok() {
        return Ok(wanted);
    }
    let port = ferry_devnet::free_port()?;
    tracing::warn!(%wanted, port, "HTTP address taken; using a free port");
    Ok(SocketAddr::new(wanted.ip(), port))
}

/// Writes keys, devnet.json and ferry.toml; returns the config's path.
fn write_files(dir: &Path, devnet: &Devnet, options: &DevnetOptions, confirmations: u64) -> anyhow::Result<PathBuf> {
    let config = crate::devnet_config(dir, devnet, options.http_listen, confirmations)?;
    let config_path = dir.join("ferry.toml");
    config.write(&config_path)?;
    devnet.info().write(&dir.join("devnet.json"))?;
    Ok(config_path)
}
