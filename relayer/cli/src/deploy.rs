//! `ferry deploy`: ferry's contracts on two running chains, and the configuration to relay
//! between them. What the container setup's one-shot deploy step runs.

use std::{net::SocketAddr, path::PathBuf};

use alloy::primitives::B256;
use anyhow::Context;
use ferry_devnet::{ChainDeployment, ChainInfo, DevnetInfo, deploy_network, is_deployed};

/// Arguments of `ferry deploy`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The collateral chain (TestToken is locked there) as NAME=HTTP_URL; its WebSocket
    /// endpoint is taken to be the same address with a ws scheme, as anvil serves both.
    #[arg(long, default_value = "alpha=http://127.0.0.1:8545")]
    collateral: String,
    /// The synthetic chain (BridgedToken is minted there) as NAME=HTTP_URL.
    #[arg(long, default_value = "beta=http://127.0.0.1:8546")]
    synthetic: String,
    /// The NATS servers (comma-separated: a cluster) the written configuration points at.
    #[arg(long, default_value = "nats://127.0.0.1:4222", value_delimiter = ',')]
    nats: Vec<String>,
    /// Replicas of ferry's JetStream streams (3 on a cluster of three).
    #[arg(long, default_value_t = 1)]
    nats_replicas: usize,
    /// Where the relayer's HTTP server listens, in the written configuration.
    #[arg(long, default_value = "127.0.0.1:9100")]
    http: SocketAddr,
    /// The relayer's data directory, in the written configuration.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Directory for ferry.toml and devnet.json.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Blocks on top of a header before it is final.
    #[arg(long, default_value_t = 2)]
    confirmations: u64,
    /// Size of the validator set (the devnet's fixed validator keys 0..N).
    #[arg(long, default_value_t = 3)]
    validators: usize,
    /// Signatures needed per message.
    #[arg(long, default_value_t = 2)]
    threshold: u8,
    /// The deploying account's key (hex), funded on both chains; it owns the contracts and
    /// receives the demo supply of TestToken.
    #[arg(long, env = "FERRY_DEPLOYER_KEY", hide_env_values = true)]
    deployer_key: B256,
    /// Who may claim what transfers pay for their delivery (`ferry fees claim`): the
    /// relayer's address; the deployer's when not given.
    #[arg(long)]
    fee_beneficiary: Option<alloy::primitives::Address>,
    /// Deploy even if DIR/devnet.json describes contracts that are still on both chains.
    #[arg(long)]
    force: bool,
}

/// Deploys (unless a recorded deployment is still live) and writes the files.
pub async fn run(args: DeployArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.threshold >= 1 && usize::from(args.threshold) <= args.validators,
        "--threshold must be between 1 and --validators"
    );
    let collateral = endpoint(&args.collateral)?;
    let synthetic = endpoint(&args.synthetic)?;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let info_path = args.dir.join("devnet.json");
    if !args.force && still_deployed(&info_path).await {
        println!("ferry deploy: the contracts in {} are live; nothing to do", info_path.display());
        return Ok(());
    }

    let deployer = alloy::signers::local::PrivateKeySigner::from_bytes(&args.deployer_key)
        .context("--deployer-key is not a private key")?
        .address();
    let beneficiary = args.fee_beneficiary.unwrap_or(deployer);
    let (a, b) = (&collateral.1, &synthetic.1);
    let network = deploy_network(a, b, args.deployer_key, args.validators, args.threshold, beneficiary)
        .await
        .context("deploying the contracts")?;
    let [a, b] = &network.deployments;
    let info = DevnetInfo {
        nats_url: args.nats.first().cloned().unwrap_or_default(),
        metrics_url: format!("http://{}/metrics", args.http),
        chains: vec![chain(&collateral, a), chain(&synthetic, b)],
        validators: network.validators,
        threshold: args.threshold,
        accounts: Vec::new(),
    };
    for c in &info.chains {
        tracing::info!(chain = %c.name, chain_id = c.chain_id, mailbox = %c.mailbox, bridge = %c.bridge, token = %c.token, "deployed");
    }
    let mut config = crate::network_config(&info, &args.data_dir, args.http, args.confirmations);
    if args.nats.len() > 1 {
        config.nats.url = String::new();
        config.nats.urls = args.nats.clone();
    }
    config.nats.replicas = args.nats_replicas;
    if let Some(problem) = config.check().into_iter().next() {
        anyhow::bail!("the configuration would not run: {problem}");
    }
    let config_path = args.dir.join("ferry.toml");
    config.write(&config_path)?;
    info.write(&info_path)?;
    println!("ferry deploy: wrote {} and {}", config_path.display(), info_path.display());
    Ok(())
}

/// Whether `path` records a deployment whose contracts are all still on their chains.
async fn still_deployed(path: &std::path::Path) -> bool {
    let Ok(info) = DevnetInfo::read(path) else { return false };
    for chain in &info.chains {
        if !is_deployed(chain).await.unwrap_or(false) {
            return false;
        }
    }
    !info.chains.is_empty()
}

/// `NAME=URL` split, with the URL checked to be http(s).
fn endpoint(arg: &str) -> anyhow::Result<(String, String)> {
    let (name, url) = arg.split_once('=').with_context(|| format!("{arg:?} is not NAME=HTTP_URL"))?;
    anyhow::ensure!(!name.is_empty(), "{arg:?} has no chain name");
    anyhow::ensure!(url.starts_with("http://") || url.starts_with("https://"), "{arg:?}: the URL must be http(s)");
    Ok((name.to_string(), url.to_string()))
}

fn chain((name, rpc_url): &(String, String), deployment: &ChainDeployment) -> ChainInfo {
    let ws_url = rpc_url.replacen("http", "ws", 1);
    ChainInfo::new(name, rpc_url.clone(), ws_url, deployment)
}
