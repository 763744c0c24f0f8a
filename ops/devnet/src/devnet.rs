//! Two chains, a NATS server and ferry's contracts: the devnet.

use std::{net::SocketAddr, path::Path, time::Duration};

use alloy::{
    primitives::{Address, B256, U256, keccak256},
    signers::local::PrivateKeySigner,
};
use serde::{Deserialize, Serialize};

use crate::{
    Anvil, AnvilOptions, ChainDeployment, DeployOptions, DevnetError, GasPayment, NatsServer, RateLimit, deploy_pair,
};

/// The collateral chain's name and id.
const ALPHA: (&str, u64) = ("alpha", 31337);
/// The synthetic chain's name and id.
const BETA: (&str, u64) = ("beta", 31338);

/// How to start a devnet.
#[derive(Debug, Clone)]
pub struct DevnetOptions {
    /// Block time of both chains; `None` mines a block per transaction.
    pub block_time: Option<Duration>,
    /// Block gas limit of both chains; anvil's default (30M) when `None`.
    pub gas_limit: Option<u64>,
    /// Size of the validator set.
    pub validators: usize,
    /// Signatures needed per message.
    pub threshold: u8,
    /// Where the relayer's HTTP server (metrics, health) will listen.
    pub http_listen: SocketAddr,
}

impl Default for DevnetOptions {
    fn default() -> Self {
        Self {
            block_time: Some(Duration::from_secs(1)),
            gas_limit: None,
            validators: 3,
            threshold: 2,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
        }
    }
}

/// What a devnet is, as written to `devnet.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevnetInfo {
    /// The NATS server.
    pub nats_url: String,
    /// The relayer's Prometheus endpoint.
    pub metrics_url: String,
    /// Both chains with their contracts.
    pub chains: Vec<ChainInfo>,
    /// The validator set both Mailboxes accept.
    pub validators: Vec<Address>,
    /// Signatures needed per message.
    pub threshold: u8,
    /// anvil's funded dev accounts (the same on both chains).
    pub accounts: Vec<AccountInfo>,
}

/// One chain of a devnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainInfo {
    /// `alpha` or `beta`.
    pub name: String,
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// HTTP JSON-RPC.
    pub rpc_url: String,
    /// WebSocket JSON-RPC.
    pub ws_url: String,
    /// The Mailbox.
    pub mailbox: Address,
    /// The TokenBridge.
    pub bridge: Address,
    /// TestToken on alpha, BridgedToken on beta.
    pub token: Address,
    /// The bridge's rate limit, inbound and outbound, for the other chain.
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// The GasPaymaster transfers from this chain pay their delivery at, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paymaster: Option<Address>,
    /// What they pay for (gas, its quoted price, the overhead, the beneficiary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gas_payment: Option<GasPayment>,
}

/// The devnet bridges' buckets: 100,000 tokens at once (a tenth of the demo supply),
/// refilled at 100 tokens a second, each way.
pub const DEVNET_RATE_LIMIT: RateLimit = RateLimit {
    capacity: U256::from_limbs([0x02c7_e14a_f680_0000, 0x152d, 0, 0]),
    refill_per_second: U256::from_limbs([0x6bc7_5e2d_6310_0000, 0x5, 0, 0]),
};

/// The devnet's delivery pricing: a transfer pays for 100,000 gas of its bridge's
/// `handle` plus 80,000 of overhead (the Mailbox's part of a delivery: the certificate's
/// signatures, the delivered mark, calldata, and the transaction's own 21,000 when it
/// carries one message) at 2 gwei, one to one (0.00036 ETH), to `beneficiary`.
pub fn devnet_gas_payment(beneficiary: Address) -> GasPayment {
    GasPayment {
        beneficiary,
        gas_price: 2_000_000_000,
        exchange_rate: 10_000_000_000,
        overhead: 80_000,
        delivery_gas: 100_000,
    }
}

/// A funded account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    /// Its address.
    pub address: Address,
    /// Its key (a public anvil dev key, never a real one).
    pub private_key: B256,
}

/// A running devnet: alpha (collateral side) and beta (synthetic side) anvil chains, a
/// JetStream nats-server, and the contracts wired together. Dropping it stops them all.
#[derive(Debug)]
pub struct Devnet {
    /// The collateral chain, id 31337.
    pub alpha: Anvil,
    /// The synthetic chain, id 31338.
    pub beta: Anvil,
    /// The NATS server.
    pub nats: NatsServer,
    info: DevnetInfo,
    deployments: [ChainDeployment; 2],
    validator_keys: Vec<B256>,
}

impl Devnet {
    /// Starts both chains and NATS, deploys and wires the contracts, funds the first dev
    /// account with 1,000,000 TestToken, and returns once everything answers.
    pub async fn start(options: DevnetOptions) -> Result<Self, DevnetError> {
        let extra_args: Vec<String> =
            options.gas_limit.map(|g| vec!["--gas-limit".to_string(), g.to_string()]).unwrap_or_default();
        let chain = |id| AnvilOptions {
            chain_id: Some(id),
            block_time: options.block_time,
            extra_args: extra_args.clone(),
            ..Default::default()
        };
        let (alpha, beta, nats) =
            tokio::try_join!(Anvil::spawn(chain(ALPHA.1)), Anvil::spawn(chain(BETA.1)), NatsServer::spawn())?;

        let accounts = alpha
            .private_keys()
            .iter()
            .map(|key| Ok(AccountInfo { address: address_of(key)?, private_key: *key }))
            .collect::<Result<Vec<_>, DevnetError>>()?;
        let deployer = accounts.first().ok_or_else(|| DevnetError::rpc("anvil accounts", "anvil reported none"))?;
        let network = deploy_network(
            &alpha.rpc_url(),
            &beta.rpc_url(),
            deployer.private_key,
            options.validators,
            options.threshold,
            // The relayer's account (the last: `ferry devnet` gives it the relayer key).
            accounts.last().map_or(deployer.address, |a| a.address),
        )
        .await?;
        let [a, b] = &network.deployments;
        let info = DevnetInfo {
            nats_url: nats.url(),
            metrics_url: format!("http://{}/metrics", options.http_listen),
            chains: vec![chain_info(ALPHA.0, &alpha, a), chain_info(BETA.0, &beta, b)],
            validators: network.validators,
            threshold: options.threshold,
            accounts,
        };
        Ok(Self { alpha, beta, nats, info, deployments: network.deployments, validator_keys: network.validator_keys })
    }

    /// The description written to `devnet.json`.
    pub fn info(&self) -> &DevnetInfo {
        &self.info
    }

    /// The contracts on alpha and beta.
    pub fn deployments(&self) -> &[ChainDeployment; 2] {
        &self.deployments
    }

    /// The validators' keys, in the order of [`DevnetInfo::validators`].
    pub fn validator_keys(&self) -> &[B256] {
        &self.validator_keys
    }
}

impl DevnetInfo {
    /// Writes the description as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<(), DevnetError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| DevnetError::Format { path: path.into(), reason: e.to_string() })?;
        std::fs::write(path, text + "\n").map_err(|e| DevnetError::io(path, e))
    }

    /// Reads a description written by [`write`](Self::write).
    pub fn read(path: &Path) -> Result<Self, DevnetError> {
        let text = std::fs::read_to_string(path).map_err(|e| DevnetError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| DevnetError::Format { path: path.into(), reason: e.to_string() })
    }

    /// The chain called `name`.
    pub fn chain(&self, name: &str) -> Option<&ChainInfo> {
        self.chains.iter().find(|c| c.name == name)
    }
}

/// ferry's contracts on two running chains, enrolled with the devnet validator set.
#[derive(Debug, Clone)]
pub struct Network {
    /// The collateral chain's contracts, then the synthetic chain's.
    pub deployments: [ChainDeployment; 2],
    /// The validator set both Mailboxes accept.
    pub validators: Vec<Address>,
    /// Their keys ([`validator_key`] `0..n`), in the same order.
    pub validator_keys: Vec<B256>,
}

/// Deploys and wires ferry's contracts with `deployer`'s key on the running chains at
/// `collateral_rpc` and `synthetic_rpc` ([`deploy_pair`]), with the first `validators`
/// devnet validator keys as the set and `threshold` signatures per message, and mints the
/// deployer 1,000,000 TestToken: what `ferry devnet` and `ferry deploy` share.
pub async fn deploy_network(
    collateral_rpc: &str,
    synthetic_rpc: &str,
    deployer: B256,
    validators: usize,
    threshold: u8,
    fee_beneficiary: Address,
) -> Result<Network, DevnetError> {
    let validator_keys: Vec<B256> = (0..validators).map(validator_key).collect();
    let validators = validator_keys.iter().map(address_of).collect::<Result<Vec<_>, _>>()?;
    let deploy = DeployOptions {
        deployer,
        validators: validators.clone(),
        threshold,
        mint_to: address_of(&deployer)?,
        mint_amount: U256::from(1_000_000u64) * U256::from(10u64).pow(U256::from(18u64)),
        rate_limit: DEVNET_RATE_LIMIT,
        gas_payment: Some(devnet_gas_payment(fee_beneficiary)),
    };
    let (a, b) = deploy_pair(collateral_rpc, synthetic_rpc, &deploy).await?;
    Ok(Network { deployments: [a, b], validators, validator_keys })
}

/// The key of devnet validator `index`: derived from a fixed phrase, so a devnet's
/// validator set is the same on every run. Never use these keys for anything real.
pub fn validator_key(index: usize) -> B256 {
    keccak256(format!("ferry devnet validator {index}"))
}

fn address_of(key: &B256) -> Result<Address, DevnetError> {
    PrivateKeySigner::from_bytes(key).map(|s| s.address()).map_err(|e| DevnetError::rpc("private key", e))
}

fn chain_info(name: &str, anvil: &Anvil, deployment: &ChainDeployment) -> ChainInfo {
    ChainInfo::new(name, anvil.rpc_url(), anvil.ws_url(), deployment)
}

impl ChainInfo {
    /// A chain called `name`, reached at `rpc_url` and `ws_url`, with `deployment` on it.
    pub fn new(name: &str, rpc_url: String, ws_url: String, deployment: &ChainDeployment) -> Self {
        Self {
            name: name.into(),
            chain_id: deployment.chain_id,
            rpc_url,
            ws_url,
            mailbox: deployment.mailbox,
            bridge: deployment.bridge,
            token: deployment.token,
            rate_limit: deployment.rate_limit,
            paymaster: deployment.paymaster,
            gas_payment: deployment.gas_payment,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_devnet_buckets_are_a_hundred_thousand_tokens_refilled_at_a_hundred_a_second() {
        let token = U256::from(10u64).pow(U256::from(18u64));
        assert_eq!(DEVNET_RATE_LIMIT.capacity, U256::from(100_000u64) * token);
        assert_eq!(DEVNET_RATE_LIMIT.refill_per_second, U256::from(100u64) * token);
    }
}
