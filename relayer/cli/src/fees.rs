//! `ferry fees claim`: moves what senders paid for their deliveries from each chain's
//! GasPaymaster to the relayer, signed with the relayer's key (the paymaster's
//! beneficiary).

use std::path::PathBuf;

use alloy::{
    network::EthereumWallet,
    primitives::{Address, U256},
    providers::{Provider, ProviderBuilder},
    signers::local::PrivateKeySigner,
};
use anyhow::{Context, anyhow, bail};
use ferry_messages::{contracts::GasPaymaster, explain};
use ferry_relayer::Config;

/// Arguments of `ferry fees`.
#[derive(Debug, clap::Args)]
pub struct FeesArgs {
    #[command(subcommand)]
    action: FeesAction,
    /// The configuration file (the chains, their paymasters, the relayer's key).
    #[arg(long, env = "FERRY_CONFIG", global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum FeesAction {
    /// Claim every configured paymaster's balance to the relayer's address (or `--to`).
    Claim {
        /// Where the payments go (default: the relayer's own address).
        #[arg(long)]
        to: Option<Address>,
    },
}

/// Runs `ferry fees`.
pub async fn fees(args: FeesArgs) -> anyhow::Result<()> {
    let path = args.config.context("--config (or FERRY_CONFIG) is required")?;
    let config = Config::load(&path)?;
    let FeesAction::Claim { to } = args.action;
    let key = config.relayer_key()?.context("relayer.key or relayer.key_file: the beneficiary's key is needed")?;
    let signer = PrivateKeySigner::from_bytes(key.expose()).context("relayer key")?;
    let to = to.unwrap_or(signer.address());
    let wallet = EthereumWallet::from(signer);
    let mut claimed_any = false;
    for (name, chain) in &config.chains {
        let Some(address) = chain.paymaster else { continue };
        let url = chain.rpc_endpoints().first().copied().with_context(|| format!("chains.{name}: no RPC endpoint"))?;
        let url = url.parse().with_context(|| format!("chains.{name}: RPC URL"))?;
        let provider = ProviderBuilder::new().wallet(wallet.clone()).connect_http(url);
        let balance = provider.get_balance(address).await.with_context(|| format!("{name}: balance of {address}"))?;
        if balance == U256::ZERO {
            println!("{name}: paymaster {address} holds nothing");
            continue;
        }
        let receipt = GasPaymaster::new(address, &provider)
            .claim(to)
            .send()
            .await
            .map_err(|e| anyhow!("{name}: claim from {address}: {}", explain(&e)))?
            .get_receipt()
            .await
            .with_context(|| format!("{name}: claim receipt"))?;
        if !receipt.status() {
            bail!("{name}: claim reverted in {}", receipt.transaction_hash);
        }
        println!("{name}: claimed {balance} wei from {address} to {to} in {}", receipt.transaction_hash);
        claimed_any = true;
    }
    if !claimed_any {
        println!("nothing claimed");
    }
    Ok(())
}
