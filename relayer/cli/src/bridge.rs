//! `ferry bridge`: a user's side of a transfer. Sends `TokenBridge.transferRemote` on
//! the origin (approving the bridge first where it holds collateral), reads the message
//! id from the receipt, and follows the message through ferry's stages.

use std::time::Duration;

use alloy::{
    network::EthereumWallet,
    primitives::{Address, B256, U256, utils::format_units},
    providers::{DynProvider, Provider, ProviderBuilder},
    signers::local::PrivateKeySigner,
};
use ferry_messages::{
    contracts::{BridgedToken, Mailbox, TokenBridge, bridge_mode},
    explain,
};

use ferry_relayer::{Config, MessageRecord, Stage};

/// Why a transfer could not be sent or followed.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The configuration lacks what a transfer needs.
    #[error("{0}")]
    Config(String),
    /// The sender cannot make this transfer now (checked before anything is sent).
    #[error("cannot send: {0}")]
    Insufficient(String),
    /// The chain refused or failed.
    #[error("{what}: {reason}")]
    Chain {
        /// The step.
        what: &'static str,
        /// What the node said.
        reason: String,
    },
}

fn chain_error(what: &'static str) -> impl FnOnce(String) -> BridgeError {
    move |reason| BridgeError::Chain { what, reason }
}

/// A transfer on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The ferry message id.
    pub id: B256,
    /// The origin transaction.
    pub tx: B256,
    /// The origin block.
    pub block: u64,
    /// What the transfer paid for its delivery, in the origin's native token (wei).
    pub fee: U256,
}

/// A transfer of `amount` from chain `from` to `recipient` on chain `to`, paid by `key`.
pub async fn send(
    config: &Config,
    from: &str,
    to: &str,
    amount: U256,
    recipient: Address,
    key: &B256,
) -> Result<Sent, BridgeError> {
    let origin = config.chains.get(from).ok_or_else(|| BridgeError::Config(format!("no chain {from:?}")))?;
    let destination = config.chains.get(to).ok_or_else(|| BridgeError::Config(format!("no chain {to:?}")))?;
    let (Some(bridge), Some(token)) = (origin.bridge, origin.token) else {
        return Err(BridgeError::Config(format!("chains.{from} needs bridge and token addresses")));
    };
    let signer = PrivateKeySigner::from_bytes(key).map_err(|e| BridgeError::Config(format!("key: {e}")))?;
    let user = signer.address();
    let url = origin.rpc_url.parse().map_err(|e| BridgeError::Config(format!("chains.{from}.rpc_url: {e}")))?;
    let provider: DynProvider = ProviderBuilder::new().wallet(EthereumWallet::from(signer)).connect_http(url).erased();

    let bridge = TokenBridge::new(bridge, &provider);
    let destination_id = destination.chain_id as u32;
    let plan = preflight(&provider, &bridge, token, user, destination_id, amount).await?;
    if plan.approve {
        let token = BridgedToken::new(token, &provider);
        token
            .approve(*bridge.address(), amount)
            .send()
            .await
            .map_err(|e| chain_error("approve")(explain(&e)))?
            .get_receipt()
            .await
            .map_err(|e| chain_error("approve receipt")(e.to_string()))?;
    }
    let fee = plan.fee;
    let call = bridge.transferRemote(destination_id, recipient, amount).value(fee).from(user);
    let estimate = call.estimate_gas().await.map_err(|e| chain_error("transferRemote")(explain(&e)))?;
    // A quarter over the estimate: what the bridge's rate-limit bucket writes costs more
    // when the block's timestamp moved on from its last use than in the pending block
    // the estimate ran in (an unchanged slot is a cheap write), and an exact estimate
    // would then run out of gas.
    let gas = estimate + estimate / 4;
    let prices = provider.estimate_eip1559_fees().await.map_err(|e| chain_error("gas price")(e.to_string()))?;
    afford(&provider, user, fee, Some(U256::from(gas) * U256::from(prices.max_fee_per_gas))).await?;
    let receipt = call
        .clone()
        .gas(gas)
        .max_fee_per_gas(prices.max_fee_per_gas)
        .max_priority_fee_per_gas(prices.max_priority_fee_per_gas)
        .send()
        .await
        .map_err(|e| chain_error("transferRemote")(explain(&e)))?
        .get_receipt()
        .await
        .map_err(|e| chain_error("transferRemote receipt")(e.to_string()))?;
    if !receipt.status() {
        // A receipt carries no revert data: the call run again on the block before says why.
        let parent = receipt.block_number.unwrap_or_default().saturating_sub(1);
        let why = match call.call().block(parent.into()).await {
            Err(e) => explain(&e),
            Ok(_) => {
                format!("out of gas or changed by a transaction before it in its block (gas used {})", receipt.gas_used)
            }
        };
        return Err(chain_error("transferRemote")(format!("{} reverted: {why}", receipt.transaction_hash)));
    }
    let id = receipt
        .inner
        .logs()
        .iter()
        .find_map(|l| l.log_decode::<Mailbox::Dispatch>().ok())
        .map(|l| l.inner.data.id)
        .ok_or_else(|| chain_error("transferRemote")("no Dispatch log in the receipt".into()))?;
    Ok(Sent { id, tx: receipt.transaction_hash, block: receipt.block_number.unwrap_or_default(), fee })
}

/// What a transfer needs besides the call itself.
struct Plan {
    /// The delivery fee to send with it (origin wei).
    fee: U256,
    /// Whether the bridge must be approved for the amount first (collateral side).
    approve: bool,
}

/// Checks, before anything is sent, that `user` can make the transfer: holds the amount
/// and the fee, and the bridge's outbound bucket lets the amount through now; every
/// shortfall is named in the token's units.
async fn preflight(
    provider: &DynProvider,
    bridge: &TokenBridge::TokenBridgeInstance<&DynProvider>,
    token: Address,
    user: Address,
    destination: u32,
    amount: U256,
) -> Result<Plan, BridgeError> {
    let read = |what: &'static str| move |e: alloy::contract::Error| chain_error(what)(explain(&e));
    let token = BridgedToken::new(token, provider);
    let symbol = token.symbol().call().await.map_err(read("the token's symbol"))?;
    let decimals = token.decimals().call().await.map_err(read("the token's decimals"))?;
    let units = |value: U256| format!("{} {symbol}", token_units(value, decimals));
    let held = token.balanceOf(user).call().await.map_err(read("balanceOf"))?;
    if held < amount {
        return Err(BridgeError::Insufficient(format!(
            "{user} holds {} and the transfer is {}: short by {}",
            units(held),
            units(amount),
            units(amount - held)
        )));
    }
    let bucket = bridge.rateLimit(destination, false).call().await.map_err(read("the outbound rate limit"))?;
    if !bucket.capacity.is_zero() && bucket.available < amount {
        let wait = (amount - bucket.available).div_ceil(bucket.refillPerSecond.max(U256::from(1)));
        return Err(BridgeError::Insufficient(format!(
            "the bridge's outbound limit to {destination} lets {} through now (of {}, refilling {} a second) and the transfer is {}: try again in about {wait} s or send less",
            units(bucket.available),
            units(bucket.capacity),
            units(bucket.refillPerSecond),
            units(amount)
        )));
    }
    let fee = bridge.quoteTransferRemote(destination).call().await.map_err(read("the delivery fee"))?;
    afford(provider, user, fee, None).await?;
    let mode = bridge.mode().call().await.map_err(read("the bridge's mode"))?;
    let approve = mode == bridge_mode::COLLATERAL
        && token.allowance(user, *bridge.address()).call().await.map_err(read("allowance"))? < amount;
    Ok(Plan { fee, approve })
}

/// Checks that `user` holds the delivery `fee` and, once the transaction is estimated,
/// its `gas` cost at most, naming the shortfall in ETH.
async fn afford(provider: &DynProvider, user: Address, fee: U256, gas: Option<U256>) -> Result<(), BridgeError> {
    let needed = fee + gas.unwrap_or_default();
    let native = provider.get_balance(user).await.map_err(|e| chain_error("the account's balance")(e.to_string()))?;
    if native >= needed {
        return Ok(());
    }
    let what = match gas {
        Some(gas) => format!(
            "the delivery fee is {} ETH and the transaction's gas up to {} ETH;",
            token_units(fee, 18),
            token_units(gas, 18)
        ),
        None => format!("the delivery fee is {} ETH and", token_units(fee, 18)),
    };
    Err(BridgeError::Insufficient(format!(
        "{what} {user} holds {} ETH: short by {} ETH",
        token_units(native, 18),
        token_units(needed - native, 18)
    )))
}

/// `value` of a token with `decimals` as a person writes it: `10`, `0.00036`.
pub fn token_units(value: U256, decimals: u8) -> String {
    match format_units(value, decimals) {
        Ok(text) if text.contains('.') => text.trim_end_matches('0').trim_end_matches('.').to_string(),
        Ok(text) => text,
        Err(_) => value.to_string(),
    }
}

/// The record of `id` from a running ferry's HTTP API at `base` (`http://host:port`),
/// or `None` while it does not know the message yet.
pub async fn status(base: &str, id: B256) -> Result<Option<MessageRecord>, BridgeError> {
    let url = format!("{base}/messages/{id}");
    let response = reqwest_get(&url).await?;
    match response {
        (200, body) => serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| BridgeError::Chain { what: "ferry API", reason: format!("{url}: {e}") }),
        (404, _) => Ok(None),
        (code, body) => Err(BridgeError::Chain {
            what: "ferry API",
            reason: format!("{url}: HTTP {code}: {}", String::from_utf8_lossy(&body)),
        }),
    }
}

/// Whether `Mailbox.delivered(id)` reads true on chain `to`: the ground truth when
/// the API is out of reach.
pub async fn delivered_on_chain(config: &Config, to: &str, id: B256) -> Result<bool, BridgeError> {
    let chain = config.chains.get(to).ok_or_else(|| BridgeError::Config(format!("no chain {to:?}")))?;
    let url = chain.rpc_url.parse().map_err(|e| BridgeError::Config(format!("chains.{to}.rpc_url: {e}")))?;
    let provider = ProviderBuilder::new().connect_http(url);
    Mailbox::new(chain.mailbox, provider)
        .delivered(id)
        .call()
        .await
        .map_err(|e| chain_error("delivered(id)")(e.to_string()))
}

/// Polls the API until the message is delivered or parked, calling `progress` on every
/// stage change; gives up after `timeout`.
pub async fn follow(
    base: &str,
    id: B256,
    timeout: Duration,
    mut progress: impl FnMut(Stage),
) -> Result<MessageRecord, BridgeError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        // The service may be restarting: keep polling through errors until the deadline.
        if let Ok(Some(record)) = status(base, id).await {
            if last != Some(record.stage()) {
                last = Some(record.stage());
                progress(record.stage());
            }
            if record.stage().is_final() {
                return Ok(record);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BridgeError::Chain {
                what: "waiting for delivery",
                reason: format!("message {id} still {} after {timeout:?}", last.map_or("unknown", Stage::as_str)),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A minimal HTTP GET over the alloy reqwest client: (status, body).
async fn reqwest_get(url: &str) -> Result<(u16, Vec<u8>), BridgeError> {
    let err = |e: reqwest::Error| BridgeError::Chain { what: "ferry API", reason: format!("{url}: {e}") };
    let response = reqwest::get(url).await.map_err(err)?;
    let code = response.status().as_u16();
    let body = response.bytes().await.map_err(err)?;
    Ok((code, body.to_vec()))
}
