//! Helpers shared by the contract tests: providers, dispatch parsing, hand-made
//! validator signatures.

#![allow(dead_code)]

use alloy::{
    primitives::{Address, B256, Bytes, Signature},
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::types::TransactionReceipt,
    signers::{SignerSync, local::PrivateKeySigner},
};
use ferry_devnet::{Devnet, DevnetOptions};
use ferry_messages::{Attestation, Message, QuorumCertificate, contracts::Mailbox};
use serde::Deserialize;

/// `testdata/message_vectors.json`, written by ops/message-vectors.mjs.
#[derive(Deserialize)]
pub struct Vectors {
    pub max_body_bytes: usize,
    pub valid: Vec<ValidVector>,
    pub invalid: Vec<InvalidVector>,
    pub rate_limits: Vec<BucketVector>,
}

/// A TokenBridge bucket and transfers tried against it, with what the JS model expects.
#[derive(Deserialize)]
pub struct BucketVector {
    pub name: String,
    pub capacity: alloy::primitives::U256,
    pub refill_per_second: alloy::primitives::U256,
    pub steps: Vec<BucketStep>,
}

/// A transfer `at_secs` after the bucket was set: whether it goes through, and what the
/// bucket holds right after (`None`: no limit).
#[derive(Deserialize)]
pub struct BucketStep {
    pub at_secs: u64,
    pub amount: alloy::primitives::U256,
    pub ok: bool,
    pub available_after: Option<alloy::primitives::U256>,
}

/// A message with its packed bytes and id.
#[derive(Deserialize)]
pub struct ValidVector {
    pub name: String,
    pub version: u8,
    pub nonce: u32,
    pub origin: u32,
    pub sender: B256,
    pub destination: u32,
    pub recipient: B256,
    pub body: Bytes,
    pub encoded: Bytes,
    pub id: B256,
}

/// Bytes that are not a message, and why (`too_short`, `too_long`, `unsupported_version`).
#[derive(Deserialize)]
pub struct InvalidVector {
    pub name: String,
    pub encoded: Bytes,
    pub error: String,
}

pub fn vectors() -> Vectors {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/message_vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("vectors file")).expect("vectors parse")
}

/// A devnet that mines a block per transaction, so tests wait on nothing but receipts.
pub async fn devnet() -> Devnet {
    Devnet::start(DevnetOptions { block_time: None, ..Default::default() }).await.expect("devnet starts")
}

/// A provider on `url` that signs with `key`.
pub fn wallet(url: &str, key: B256) -> DynProvider {
    ferry_devnet::wallet(url, key).expect("a devnet key and URL")
}

/// A provider on `url` without a key (anvil signs for impersonated accounts).
pub fn plain(url: &str) -> DynProvider {
    ProviderBuilder::new().connect_http(url.parse().expect("url")).erased()
}

/// A message as it left its origin: the emitted bytes, id and block.
#[derive(Debug, Clone)]
pub struct Dispatched {
    pub message: Bytes,
    pub id: B256,
    pub block_hash: B256,
}

impl Dispatched {
    pub fn decoded(&self) -> Message {
        Message::decode(&self.message).expect("the Mailbox emits decodable messages")
    }
}

/// Every `Dispatch` in a receipt.
pub fn dispatches(receipt: &TransactionReceipt) -> Vec<Dispatched> {
    let block_hash = receipt.block_hash.expect("mined");
    receipt
        .inner
        .logs()
        .iter()
        .filter_map(|log| log.log_decode::<Mailbox::Dispatch>().ok())
        .map(|log| Dispatched { message: log.inner.data.message.clone(), id: log.inner.data.id, block_hash })
        .collect()
}

/// The attestation validators sign for `d`, dispatched by `origin_mailbox`.
pub fn attestation(d: &Dispatched, origin_mailbox: Address) -> Attestation {
    let m = d.decoded();
    Attestation {
        origin: m.origin,
        origin_mailbox: origin_mailbox.into_word(),
        destination: m.destination,
        block_hash: d.block_hash,
        id: d.id,
    }
}

/// Signatures by `keys` over `attestation`, in key order.
pub fn sign(attestation: &Attestation, keys: &[B256]) -> Vec<Signature> {
    keys.iter()
        .map(|key| {
            let signer = PrivateKeySigner::from_bytes(key).expect("valid key");
            signer.sign_hash_sync(&attestation.signing_hash()).expect("signing works")
        })
        .collect()
}

/// Metadata with signatures by `keys`, ordered as the Mailbox wants.
pub fn metadata(attestation: &Attestation, keys: &[B256]) -> Bytes {
    QuorumCertificate::ordered(attestation, sign(attestation, keys)).expect("signatures recover").metadata().into()
}

/// Metadata with signatures exactly in the order given (to build bad certificates).
pub fn metadata_as_is(block_hash: B256, signatures: Vec<Signature>) -> Bytes {
    QuorumCertificate { block_hash, signatures }.metadata().into()
}

/// The gas limit of transactions that touch a TokenBridge bucket. Their cost depends on
/// the block's second (the bucket writes its timestamp, free when it is unchanged), and
/// an estimate is exact: estimated in the second the bucket was last written, such a
/// transaction runs out of gas when it is mined a second later.
pub const TX_GAS: u64 = 500_000;

/// Sends a call and returns its receipt, asserting it succeeded.
pub async fn mined(
    tx: Result<alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>, alloy::contract::Error>,
) -> TransactionReceipt {
    let receipt = tx.expect("transaction accepted").get_receipt().await.expect("receipt");
    assert!(receipt.status(), "transaction {} reverted", receipt.transaction_hash);
    receipt
}

/// The block number a provider is at (to wait on nothing in particular, never used as a clock).
pub async fn head(provider: &DynProvider) -> u64 {
    provider.get_block_number().await.expect("block number")
}
