//! Shared by the anvil tests: providers, transactions of every type, syncing a client.

#![allow(dead_code)]

use alloy::{
    consensus::{BlobTransactionSidecarVariant, SidecarBuilder, SimpleCoder},
    eips::{eip2930::AccessList, eip2930::AccessListItem, eip7702::Authorization},
    network::{TransactionBuilder, TransactionBuilder4844, TransactionBuilder7702},
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::types::{TransactionReceipt, TransactionRequest},
    signers::{SignerSync, local::PrivateKeySigner},
};
use ferry_devnet::Anvil;
use ferry_light_client::{
    BlobSchedule, Finality, HeaderRules, LightClient, LightClientConfig, RpcHeaderSource, SealedHeader, verify,
};

/// The transaction types a fork accepts, and how blobs travel on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    London,
    Cancun,
    /// anvil's default (Osaka with the BPO1 blob parameters).
    Latest,
}

impl Fork {
    pub fn anvil_arg(self) -> Option<String> {
        match self {
            Self::London => Some("london".into()),
            Self::Cancun => Some("cancun".into()),
            Self::Latest => None,
        }
    }

    pub fn tx_types(self) -> &'static [u8] {
        match self {
            Self::London => &[0, 1, 2],
            Self::Cancun => &[0, 1, 2, 3],
            Self::Latest => &[0, 1, 2, 3, 4],
        }
    }

    pub fn rules(self) -> HeaderRules {
        let blob_schedule = match self {
            Self::Cancun => BlobSchedule::Cancun,
            _ => BlobSchedule::Bpo1, // london has no blobs; latest is BPO1
        };
        HeaderRules { blob_schedule, ..HeaderRules::anvil() }
    }
}

pub async fn anvil(fork: Fork) -> Anvil {
    Anvil::spawn(ferry_devnet::AnvilOptions { hardfork: fork.anvil_arg(), ..Default::default() }).await.unwrap()
}

pub fn wallet(anvil: &Anvil, account: usize) -> DynProvider {
    ferry_devnet::wallet(&anvil.rpc_url(), anvil.private_keys()[account]).unwrap()
}

pub fn plain(anvil: &Anvil) -> DynProvider {
    ProviderBuilder::new().connect_http(anvil.rpc_url().parse().unwrap()).erased()
}

/// A transfer of 1 wei to `to` as a transaction of EIP-2718 type `kind` (0 to 4).
/// Type 4 delegates `authority` (a key that is not the sender's) to `to`.
pub async fn request(
    provider: &DynProvider,
    fork: Fork,
    kind: u8,
    to: Address,
    authority: &PrivateKeySigner,
) -> TransactionRequest {
    let base = TransactionRequest::default().with_to(to).with_value(U256::from(1u64));
    typed(provider, fork, kind, base, authority).await
}

/// `base` made into a transaction of EIP-2718 type `kind` (0 to 4).
pub async fn typed(
    provider: &DynProvider,
    fork: Fork,
    kind: u8,
    base: TransactionRequest,
    authority: &PrivateKeySigner,
) -> TransactionRequest {
    let gas_price = provider.get_gas_price().await.unwrap();
    let to = base.to.and_then(|k| k.to().copied()).unwrap_or_default();
    match kind {
        0 => base.with_gas_price(gas_price),
        1 => base.with_gas_price(gas_price).with_access_list(AccessList(vec![AccessListItem {
            address: to,
            storage_keys: vec![B256::with_last_byte(1)],
        }])),
        2 => base,
        3 => {
            let builder = SidecarBuilder::<SimpleCoder>::from_slice(b"ferry light client blob");
            let sidecar = match fork {
                Fork::Cancun => BlobTransactionSidecarVariant::Eip4844(builder.build_4844().unwrap()),
                _ => BlobTransactionSidecarVariant::Eip7594(builder.build_7594().unwrap()),
            };
            base.with_blob_sidecar(sidecar)
        }
        4 => {
            let nonce = provider.get_transaction_count(authority.address()).await.unwrap();
            let chain_id = provider.get_chain_id().await.unwrap();
            let auth = Authorization { chain_id: U256::from(chain_id), address: to, nonce };
            let signature = authority.sign_hash_sync(&auth.signature_hash()).unwrap();
            base.with_authorization_list(vec![auth.into_signed(signature)])
        }
        other => panic!("no transaction type {other}"),
    }
}

/// Sends one transaction of each type the fork knows per round, one block each; blob
/// transactions (slow to build: KZG proofs) only every eighth round.
pub async fn traffic(anvil: &Anvil, fork: Fork, rounds: usize) -> Vec<TransactionReceipt> {
    let provider = wallet(anvil, 0);
    let authority = PrivateKeySigner::from_bytes(&anvil.private_keys()[5]).unwrap();
    let to = Address::from(anvil.private_keys()[1].0[..20].try_into().unwrap_or([7u8; 20]));
    let mut receipts = Vec::new();
    for round in 0..rounds {
        for &kind in fork.tx_types().iter().filter(|k| **k != 3 || round % 8 == 0) {
            let tx = request(&provider, fork, kind, to, &authority).await;
            let pending = provider
                .send_transaction(tx.clone())
                .await
                .unwrap_or_else(|e| panic!("type {kind} round {round}: {e}: {tx:?}"));
            let receipt = pending.get_receipt().await.unwrap();
            assert!(receipt.status(), "type {kind} transaction reverted");
            assert_eq!(receipt.inner.tx_type() as u8, kind);
            receipts.push(receipt);
        }
    }
    receipts
}

/// The chain's genesis as a trusted checkpoint.
pub async fn genesis(provider: &DynProvider) -> SealedHeader {
    let block = provider.get_block_by_number(0.into()).await.unwrap().unwrap();
    verify::seal(block.header.inner, block.header.hash).unwrap()
}

pub fn config(chain_id: u64, fork: Fork, confirmations: u64) -> LightClientConfig {
    LightClientConfig {
        rules: fork.rules(),
        finality: Finality::Confirmations(confirmations),
        ..LightClientConfig::new(chain_id, confirmations)
    }
}

pub async fn client_from_genesis(anvil: &Anvil, fork: Fork, confirmations: u64) -> LightClient {
    let provider = plain(anvil);
    LightClient::new(config(anvil.chain_id(), fork, confirmations), genesis(&provider).await)
}

pub fn source(anvil: &Anvil) -> RpcHeaderSource<DynProvider> {
    RpcHeaderSource::new(plain(anvil))
}
