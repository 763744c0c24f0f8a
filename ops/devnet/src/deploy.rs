//! Deploying and wiring ferry's contracts on a pair of chains.

use alloy::{
    network::EthereumWallet,
    primitives::{Address, B256, U256, aliases::U96},
    providers::{DynProvider, PendingTransactionBuilder, Provider, ProviderBuilder},
    rpc::types::TransactionReceipt,
    signers::local::PrivateKeySigner,
};
use ferry_messages::contracts::{BridgedToken, GasPaymaster, Mailbox, TestToken, TokenBridge, bridge_mode};
use serde::{Deserialize, Serialize};

use crate::{ChainInfo, DevnetError};

/// What to deploy.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Key that deploys and owns every contract.
    pub deployer: B256,
    /// The validator set both Mailboxes accept.
    pub validators: Vec<Address>,
    /// Distinct validator signatures needed per message.
    pub threshold: u8,
    /// Who receives the demo supply of TestToken on the collateral chain.
    pub mint_to: Address,
    /// How much TestToken (in base units) to mint.
    pub mint_amount: U256,
    /// The bucket each bridge gets, inbound and outbound, per remote chain.
    pub rate_limit: RateLimit,
    /// A GasPaymaster on each chain, paid by every transfer (None: deliveries are free).
    pub gas_payment: Option<GasPayment>,
}

/// What transfers pay for their delivery: each chain gets a GasPaymaster quoting the
/// other at these figures, and its bridge pays for `delivery_gas` with every transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GasPayment {
    /// Who may claim the payments (the relayer operator).
    pub beneficiary: Address,
    /// The destination gas price quoted, in wei.
    pub gas_price: u128,
    /// Origin wei per destination wei, times 1e10 (1e10: one to one).
    pub exchange_rate: u128,
    /// Gas charged per message over the gas paid for.
    pub overhead: u64,
    /// The gas each transfer pays for.
    pub delivery_gas: u64,
}

/// A TokenBridge rate limit: at most `capacity` base units at once, refilled at
/// `refill_per_second` (capacity 0: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RateLimit {
    /// Base units that may move at once.
    pub capacity: U256,
    /// Base units the bucket regains each second.
    pub refill_per_second: U256,
}

/// ferry's contracts on one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainDeployment {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The Mailbox.
    pub mailbox: Address,
    /// The TokenBridge.
    pub bridge: Address,
    /// TestToken on the collateral chain, BridgedToken on the synthetic one.
    pub token: Address,
    /// `bridge_mode::COLLATERAL` or `bridge_mode::SYNTHETIC`.
    pub mode: u8,
    /// The bridge's bucket each way for the other chain.
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// The GasPaymaster transfers pay at, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paymaster: Option<Address>,
    /// What they pay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gas_payment: Option<GasPayment>,
}

/// Deploys a Mailbox and a TokenBridge on both chains (collateral mode over a new
/// TestToken on the chain at `collateral_rpc`, synthetic mode over a new BridgedToken on
/// the one at `synthetic_rpc`), enrols each Mailbox and bridge with its peer, and mints the
/// demo supply.
pub async fn deploy_pair(
    collateral_rpc: &str,
    synthetic_rpc: &str,
    options: &DeployOptions,
) -> Result<(ChainDeployment, ChainDeployment), DevnetError> {
    let owner =
        PrivateKeySigner::from_bytes(&options.deployer).map_err(|e| DevnetError::rpc("deployer key", e))?.address();
    let a = deployer_provider(collateral_rpc, options.deployer)?;
    let b = deployer_provider(synthetic_rpc, options.deployer)?;
    let (a_id, b_id) = tokio::try_join!(chain_id(&a), chain_id(&b))?;
    let (alpha, beta) = tokio::try_join!(
        deploy_side(&a, owner, a_id, bridge_mode::COLLATERAL, options),
        deploy_side(&b, owner, b_id, bridge_mode::SYNTHETIC, options),
    )?;
    tokio::try_join!(wire_side(&a, &alpha, &beta, options), wire_side(&b, &beta, &alpha, options))?;
    Ok((alpha, beta))
}

/// Whether every contract of `chain` is still on it: the chain answers with the recorded
/// id and each address has code (a restarted anvil without its state has lost them).
pub async fn is_deployed(chain: &ChainInfo) -> Result<bool, DevnetError> {
    let url = chain.rpc_url.parse().map_err(|e| DevnetError::rpc("RPC URL", e))?;
    let provider = ProviderBuilder::new().connect_http(url);
    if provider.get_chain_id().await.map_err(|e| DevnetError::rpc("eth_chainId", e))? != chain.chain_id {
        return Ok(false);
    }
    for address in [chain.mailbox, chain.bridge, chain.token].into_iter().chain(chain.paymaster) {
        if provider.get_code_at(address).await.map_err(|e| DevnetError::rpc("eth_getCode", e))?.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn chain_id(provider: &DynProvider) -> Result<u64, DevnetError> {
    provider.get_chain_id().await.map_err(|e| DevnetError::rpc("eth_chainId", e))
}

fn deployer_provider(rpc_url: &str, key: B256) -> Result<DynProvider, DevnetError> {
    let signer = PrivateKeySigner::from_bytes(&key).map_err(|e| DevnetError::rpc("deployer key", e))?;
    let url = rpc_url.parse().map_err(|e| DevnetError::rpc("RPC URL", e))?;
    // A local nonce count lets several transactions go out before the first is mined.
    Ok(ProviderBuilder::new()
        .with_cached_nonce_management()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url)
        .erased())
}

/// A provider on `rpc_url` that signs with `key`: how tests and tools act as an
/// account on a devnet chain.
pub fn wallet(rpc_url: &str, key: B256) -> Result<DynProvider, DevnetError> {
    let signer = PrivateKeySigner::from_bytes(&key).map_err(|e| DevnetError::rpc("private key", e))?;
    let url = rpc_url.parse().map_err(|e| DevnetError::rpc("RPC URL", e))?;
    Ok(ProviderBuilder::new().wallet(EthereumWallet::from(signer)).connect_http(url).erased())
}

async fn deploy_side(
    provider: &DynProvider,
    owner: Address,
    chain_id: u64,
    mode: u8,
    options: &DeployOptions,
) -> Result<ChainDeployment, DevnetError> {
    let mailbox = Mailbox::deploy_builder(provider, owner, options.validators.clone(), options.threshold);
    let mailbox = mailbox.send().await.map_err(|e| DevnetError::rpc("deploy Mailbox", e))?;
    let token = if mode == bridge_mode::COLLATERAL {
        TestToken::deploy_builder(provider, "Ferry Test Token".into(), "FTT".into(), owner).send().await
    } else {
        BridgedToken::deploy_builder(provider, "Bridged Ferry Test Token".into(), "bFTT".into(), 18).send().await
    };
    let token = token.map_err(|e| DevnetError::rpc("deploy token", e))?;
    let mailbox = contract_address("deploy Mailbox", mailbox).await?;
    let token = contract_address("deploy token", token).await?;
    let bridge = TokenBridge::deploy_builder(provider, mailbox, token, mode, owner)
        .send()
        .await
        .map_err(|e| DevnetError::rpc("deploy TokenBridge", e))?;
    let bridge = contract_address("deploy TokenBridge", bridge).await?;
    let paymaster = match options.gas_payment {
        Some(payment) => {
            let deployed = GasPaymaster::deploy_builder(provider, owner, payment.beneficiary)
                .send()
                .await
                .map_err(|e| DevnetError::rpc("deploy GasPaymaster", e))?;
            Some(contract_address("deploy GasPaymaster", deployed).await?)
        }
        None => None,
    };
    let (rate_limit, gas_payment) = (options.rate_limit, options.gas_payment);
    Ok(ChainDeployment { chain_id, mailbox, bridge, token, mode, rate_limit, paymaster, gas_payment })
}

async fn wire_side(
    provider: &DynProvider,
    local: &ChainDeployment,
    remote: &ChainDeployment,
    options: &DeployOptions,
) -> Result<(), DevnetError> {
    let domain = domain_of(remote.chain_id)?;
    let mailbox = Mailbox::new(local.mailbox, provider);
    let bridge = TokenBridge::new(local.bridge, provider);
    let mut pending = vec![
        ("enrollRemoteMailbox", mailbox.enrollRemoteMailbox(domain, remote.mailbox.into_word()).send().await),
        ("enrollRemoteBridge", bridge.enrollRemoteBridge(domain, remote.bridge.into_word()).send().await),
    ];
    let RateLimit { capacity, refill_per_second } = options.rate_limit;
    for inbound in [false, true] {
        pending.push(("setRateLimit", bridge.setRateLimit(domain, inbound, capacity, refill_per_second).send().await));
    }
    if let (Some(address), Some(payment)) = (local.paymaster, options.gas_payment) {
        let paymaster = GasPaymaster::new(address, provider);
        let (price, rate, overhead) = (payment.gas_price, payment.exchange_rate, U96::from(payment.overhead));
        pending.push(("setOracle", paymaster.setOracle(domain, price, rate, overhead).send().await));
        pending.push(("setPaymaster", bridge.setPaymaster(address).send().await));
        let gas = U256::from(payment.delivery_gas);
        pending.push(("setDeliveryGas", bridge.setDeliveryGas(domain, gas).send().await));
    }
    if local.mode == bridge_mode::COLLATERAL {
        let token = TestToken::new(local.token, provider);
        pending.push(("mint TestToken", token.mint(options.mint_to, options.mint_amount).send().await));
    } else {
        let token = BridgedToken::new(local.token, provider);
        pending.push(("BridgedToken.setBridge", token.setBridge(local.bridge).send().await));
    }
    for (what, tx) in pending {
        let tx = tx.map_err(|e| DevnetError::rpc(what, ferry_messages::explain(&e)))?;
        succeeded(what, tx).await?;
    }
    Ok(())
}

/// The `u32` domain a chain id is known by in messages.
pub(crate) fn domain_of(chain_id: u64) -> Result<u32, DevnetError> {
    u32::try_from(chain_id).map_err(|_| DevnetError::rpc("chain id", format!("{chain_id} does not fit a u32 domain")))
}

async fn succeeded(
    what: &str,
    tx: PendingTransactionBuilder<alloy::network::Ethereum>,
) -> Result<TransactionReceipt, DevnetError> {
    let receipt = tx.get_receipt().await.map_err(|e| DevnetError::rpc(what, e))?;
    if !receipt.status() {
        return Err(DevnetError::Reverted { what: what.into(), tx: receipt.transaction_hash.to_string() });
    }
    Ok(receipt)
}

async fn contract_address(
    what: &str,
    tx: PendingTransactionBuilder<alloy::network::Ethereum>,
) -> Result<Address, DevnetError> {
    let receipt = succeeded(what, tx).await?;
    receipt.contract_address.ok_or_else(|| DevnetError::rpc(what, "receipt has no contract address"))
}
