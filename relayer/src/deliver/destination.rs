//! The destination chain as the deliverer sees it: its provider (with the relayer's
//! wallet), every call timed out, timed and counted, and the reads the stages share.

use std::future::IntoFuture;

use alloy::{
    consensus::Header,
    eips::BlockId,
    eips::eip2718::Encodable2718,
    network::{Ethereum, EthereumWallet, NetworkTransactionBuilder, TransactionBuilder},
    primitives::{Address, B256, Bytes, U256},
    providers::{DynProvider, Provider},
    rpc::types::{TransactionReceipt, TransactionRequest},
    signers::local::PrivateKeySigner,
    sol_types::SolCall,
    transports::TransportError,
};
use ferry_messages::contracts::{Mailbox, TokenBridge};

use super::DeliverError;
use crate::{ChainConfig, Context, Secret, metrics::DeliveryMetrics};

/// `eth_call`s per JSON-RPC batch request.
const READS_PER_REQUEST: usize = 200;

/// A transaction signed by the relayer: its hash and its raw bytes.
pub(super) struct Signed {
    pub hash: B256,
    raw: Bytes,
}

/// What became of a send.
pub(super) enum Sent {
    /// A node took it.
    Accepted,
    /// A node had it already (an earlier send of the same bytes got through).
    Known,
    /// Its nonce is used: by a version of it mined already, or by another transaction.
    NonceTaken(String),
    /// A replacement that does not pay enough more than the version it replaces.
    Underpriced(String),
    /// Refused for another reason (funds, gas): it did not go out.
    Refused(DeliverError),
    /// No answer (timeout, connection lost): it may or may not have gone out.
    Unknown(String),
}

impl std::fmt::Display for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sent::Accepted => f.write_str("accepted"),
            Sent::Known => f.write_str("already known"),
            Sent::NonceTaken(e) | Sent::Underpriced(e) | Sent::Unknown(e) => f.write_str(e),
            Sent::Refused(e) => write!(f, "{e}"),
        }
    }
}

/// One destination chain and the relayer's account on it.
pub(super) struct Destination {
    /// The chain's configured name (its metric label).
    pub name: String,
    /// Its settings.
    pub chain: ChainConfig,
    /// The relayer's address, which pays for deliveries.
    pub relayer: Address,
    /// What the deliverer counts, bound to the chain's label.
    pub metrics: DeliveryMetrics,
    provider: DynProvider,
    wallet: EthereumWallet,
}

impl Destination {
    pub(super) fn new(context: &Context, name: String, chain: ChainConfig, key: &Secret) -> Result<Self, DeliverError> {
        let signer = PrivateKeySigner::from_bytes(key.expose()).map_err(|e| DeliverError::Config(e.to_string()))?;
        let relayer = signer.address();
        let wallet = EthereumWallet::from(signer);
        let provider = context.endpoints(&name, &chain).provider(Some(wallet.clone()));
        let metrics = context.metrics.delivery(&name);
        Ok(Self { name, chain, relayer, metrics, provider, wallet })
    }

    /// The chain's provider (for state reads on the executors' threads).
    pub(super) fn provider(&self) -> DynProvider {
        self.provider.clone()
    }

    /// Awaits `call` (timed out, timed and counted by the provider's layers), naming
    /// its method in the error.
    pub(super) async fn rpc<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<T, TransportError>>,
    ) -> Result<T, DeliverError> {
        call.await.map_err(|source| DeliverError::Rpc { method, source })
    }

    /// The latest block's number.
    pub(super) async fn latest_number(&self) -> Result<u64, DeliverError> {
        self.rpc("eth_blockNumber", self.provider.get_block_number()).await
    }

    /// The latest block's header.
    pub(super) async fn latest_header(&self) -> Result<Header, DeliverError> {
        let method = "eth_getBlockByNumber";
        let block = self.rpc(method, self.provider.get_block_by_number(Default::default()).into_future()).await?;
        Ok(block.ok_or(DeliverError::Malformed { method, reason: "no latest block".into() })?.header.inner)
    }

    /// The canonical hash of block `number`.
    pub(super) async fn block_hash(&self, number: u64) -> Result<Option<B256>, DeliverError> {
        let block =
            self.rpc("eth_getBlockByNumber", self.provider.get_block_by_number(number.into()).into_future()).await?;
        Ok(block.map(|b| b.header.hash))
    }

    /// The relayer's nonce at `block`: how many of its transactions that block includes.
    pub(super) async fn nonce_at(&self, block: u64) -> Result<u64, DeliverError> {
        let call = self.provider.get_transaction_count(self.relayer).number(block).into_future();
        self.rpc("eth_getTransactionCount", call).await
    }

    /// The relayer's nonce counting the node's pending transactions.
    pub(super) async fn pending_nonce(&self) -> Result<u64, DeliverError> {
        let call = self.provider.get_transaction_count(self.relayer).pending().into_future();
        self.rpc("eth_getTransactionCount", call).await
    }

    /// The node's gas price.
    pub(super) async fn gas_price(&self) -> Result<u128, DeliverError> {
        self.rpc("eth_gasPrice", self.provider.get_gas_price()).await
    }

    /// The inbound rate limit of the bridge at `bridge` for transfers from `origin`:
    /// (capacity, available now, refill per second).
    pub(super) async fn inbound_rate_limit(
        &self,
        bridge: Address,
        origin: u32,
    ) -> Result<(U256, U256, U256), DeliverError> {
        let method = "eth_call";
        let call = TransactionRequest::default()
            .with_to(bridge)
            .with_input(TokenBridge::rateLimitCall { remote: origin, inbound: true }.abi_encode());
        let bytes = self.rpc(method, self.provider.call(call).into_future()).await?;
        let limit = TokenBridge::rateLimitCall::abi_decode_returns(&bytes)
            .map_err(|e| DeliverError::Malformed { method, reason: format!("rateLimit(): {e}") })?;
        Ok((limit.capacity, limit.available, limit.refillPerSecond))
    }

    /// The relayer's balance.
    pub(super) async fn balance(&self) -> Result<U256, DeliverError> {
        self.rpc("eth_getBalance", self.provider.get_balance(self.relayer).into_future()).await
    }

    /// Signs a complete transaction request (nonce, gas, fees and chain id set) with the
    /// relayer's key, here: its hash is known before anything is sent.
    pub(super) async fn sign(&self, request: TransactionRequest) -> Result<Signed, DeliverError> {
        let envelope = <TransactionRequest as NetworkTransactionBuilder<Ethereum>>::build(request, &self.wallet)
            .await
            .map_err(|e| DeliverError::Config(format!("signing: {e}")))?;
        Ok(Signed { hash: *envelope.tx_hash(), raw: envelope.encoded_2718().into() })
    }

    /// Sends a signed transaction (to every healthy endpoint) and says how it went.
    pub(super) async fn send(&self, signed: &Signed) -> Sent {
        match self.provider.send_raw_transaction(&signed.raw).await {
            Ok(_) => Sent::Accepted,
            Err(e) => match e.as_error_resp().map(|payload| payload.message.to_lowercase()) {
                Some(m)
                    if m.contains("already known")
                        || m.contains("known transaction")
                        || m.contains("already imported") =>
                {
                    Sent::Known
                }
                Some(m) if m.contains("nonce too low") || m.contains("nonce is too low") => {
                    Sent::NonceTaken(e.to_string())
                }
                Some(m) if m.contains("underpriced") => Sent::Underpriced(e.to_string()),
                Some(_) => Sent::Refused(DeliverError::Rpc { method: "eth_sendRawTransaction", source: e }),
                // No answer: it may have gone out, and its hash is what tells.
                None => Sent::Unknown(e.to_string()),
            },
        }
    }

    /// The receipt of transaction `hash`, once mined.
    pub(super) async fn receipt(&self, hash: B256) -> Result<Option<TransactionReceipt>, DeliverError> {
        self.rpc("eth_getTransactionReceipt", self.provider.get_transaction_receipt(hash)).await
    }

    /// Whether the node has transaction `hash`, in its pool or in a block: a node that
    /// answers no to one of ours dropped it (a reorg that left it behind a nonce gap, an
    /// eviction, a restart), and it must be sent again.
    pub(super) async fn knows(&self, hash: B256) -> Result<bool, DeliverError> {
        let found = self.rpc("eth_getTransactionByHash", self.provider.get_transaction_by_hash(hash)).await?;
        Ok(found.is_some())
    }

    /// `Mailbox.delivered(id)` at `block` for each of `ids`, read in JSON-RPC batches.
    pub(super) async fn delivered(&self, ids: &[B256], block: impl Into<BlockId>) -> Result<Vec<bool>, DeliverError> {
        let calls = ids.iter().map(|id| Mailbox::deliveredCall { id: *id });
        batch_calls(&self.provider, self.chain.mailbox, calls, block.into()).await
    }
}

/// Each of `calls` to the contract at `to`, at `block`, sent in JSON-RPC batches of
/// [`READS_PER_REQUEST`]; their decoded returns, in order.
pub(super) async fn batch_calls<C: SolCall>(
    provider: &DynProvider,
    to: Address,
    calls: impl IntoIterator<Item = C>,
    block: BlockId,
) -> Result<Vec<C::Return>, DeliverError> {
    let method = "eth_call";
    let calls: Vec<C> = calls.into_iter().collect();
    let mut out = Vec::with_capacity(calls.len());
    for chunk in calls.chunks(READS_PER_REQUEST) {
        let mut batch = alloy::rpc::client::BatchRequest::new(provider.client());
        let mut waiters = Vec::with_capacity(chunk.len());
        for call in chunk {
            let request = TransactionRequest::default().with_to(to).with_input(call.abi_encode());
            let waiter = batch
                .add_call::<_, Bytes>(method, &(request, block))
                .map_err(|source| DeliverError::Rpc { method, source })?;
            waiters.push(waiter);
        }
        batch.send().await.map_err(|source| DeliverError::Rpc { method, source })?;
        for waiter in waiters {
            let bytes = waiter.await.map_err(|source| DeliverError::Rpc { method, source })?;
            let decoded = C::abi_decode_returns(&bytes)
                .map_err(|e| DeliverError::Malformed { method, reason: format!("{}: {e}", C::SIGNATURE) })?;
            out.push(decoded);
        }
    }
    Ok(out)
}
