//! Proofs on a real chain: every log of a 200-transaction block (receipt types 0 to 4)
//! proven against `receiptsRoot`, proven messages checked offline, account and storage
//! proofs from `eth_getProof` against `stateRoot`, and tampered ones refused.

mod common;

use alloy::{
    consensus::ReceiptEnvelope,
    network::{EthereumWallet, TransactionBuilder},
    primitives::{Address, B256, Bytes, U256, keccak256},
    providers::{DynProvider, Provider, ProviderBuilder, ext::AnvilApi},
    rpc::types::{Block, TransactionRequest},
    signers::local::PrivateKeySigner,
    sol_types::SolValue,
};
use common::{Fork, plain, typed};
use ferry_light_client::{ProvenMessage, ReceiptProof, ReceiptTrie, SealedHeader, dispatched, proofs, verify};
use ferry_messages::contracts::{Mailbox, TestToken};

struct BigBlock {
    chain: ferry_devnet::Anvil,
    block: Block,
    header: SealedHeader,
    receipts: Vec<ReceiptEnvelope>,
    token: Address,
    mailbox: Address,
    holder: Address,
}

fn cached_wallet(chain: &ferry_devnet::Anvil, account: usize) -> DynProvider {
    let signer = PrivateKeySigner::from_bytes(&chain.private_keys()[account]).unwrap();
    ProviderBuilder::new()
        .with_cached_nonce_management()
        .wallet(EthereumWallet::from(signer))
        .connect_http(chain.rpc_url().parse().unwrap())
        .erased()
}

/// One block of 200 transactions: ERC-20 transfers and Mailbox dispatches in types 0,
/// 1 and 2 from four senders, two blob transactions and two EIP-7702 ones.
async fn big_block() -> BigBlock {
    let chain = common::anvil(Fork::Latest).await;
    let owner = cached_wallet(&chain, 0);
    let owner_address = PrivateKeySigner::from_bytes(&chain.private_keys()[0]).unwrap().address();
    let token = TestToken::deploy(&owner, "T".into(), "T".into(), owner_address).await.unwrap();
    let mailbox = Mailbox::deploy(&owner, owner_address, vec![Address::repeat_byte(1)], 1).await.unwrap();
    let senders: Vec<DynProvider> = (1..=4).map(|i| cached_wallet(&chain, i)).collect();
    for i in 1..=4 {
        let who = PrivateKeySigner::from_bytes(&chain.private_keys()[i]).unwrap().address();
        token.mint(who, U256::from(1_000_000u64)).send().await.unwrap().get_receipt().await.unwrap();
    }

    let provider = plain(&chain);
    provider.anvil_set_auto_mine(false).await.unwrap();
    let authority = PrivateKeySigner::from_bytes(&chain.private_keys()[9]).unwrap();
    let mut pending = Vec::new();
    for i in 0..196usize {
        let sender = &senders[i % 4];
        let base = if i % 3 == 0 {
            let call = Mailbox::dispatchCall {
                destination: 31338,
                recipient: B256::repeat_byte(i as u8),
                body: Bytes::from(vec![i as u8; i % 40]),
            };
            TransactionRequest::default()
                .with_to(*mailbox.address())
                .with_input(alloy::sol_types::SolCall::abi_encode(&call))
        } else {
            let call = TestToken::transferCall { to: Address::with_last_byte(i as u8 + 1), value: U256::from(i + 1) };
            TransactionRequest::default()
                .with_to(*token.address())
                .with_input(alloy::sol_types::SolCall::abi_encode(&call))
        };
        let kind = (i % 3) as u8; // types 0, 1, 2
        let tx = typed(sender, Fork::Latest, kind, base.with_gas_limit(200_000), &authority).await;
        pending.push(sender.send_transaction(tx).await.unwrap());
    }
    // Blob and 7702 transactions from senders of their own (a pool keeps blob senders apart).
    let blobber = cached_wallet(&chain, 6);
    let delegator = cached_wallet(&chain, 7);
    for _ in 0..2 {
        let tx = typed(
            &blobber,
            Fork::Latest,
            3,
            TransactionRequest::default().with_to(Address::repeat_byte(0xb0)),
            &authority,
        )
        .await;
        pending.push(blobber.send_transaction(tx).await.unwrap());
    }
    for i in 0..2u64 {
        let authority = PrivateKeySigner::from_bytes(&chain.private_keys()[8 + i as usize]).unwrap();
        let base = TransactionRequest::default().with_to(*token.address()).with_gas_limit(100_000);
        let tx = typed(&delegator, Fork::Latest, 4, base, &authority).await;
        pending.push(delegator.send_transaction(tx).await.unwrap());
    }
    assert_eq!(pending.len(), 200);
    provider.evm_mine(None).await.unwrap();
    let number = provider.get_block_number().await.unwrap();
    let block = provider.get_block_by_number(number.into()).await.unwrap().unwrap();
    assert_eq!(block.transactions.len(), 200, "all 200 in one block");
    let header = verify::seal(block.header.inner.clone(), block.header.hash).unwrap();
    let receipts: Vec<ReceiptEnvelope> = provider
        .get_block_receipts(number.into())
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|r| r.inner.into_primitives_receipt())
        .collect();
    let holder = PrivateKeySigner::from_bytes(&chain.private_keys()[1]).unwrap().address();
    BigBlock { chain, block, header, receipts, token: *token.address(), mailbox: *mailbox.address(), holder }
}

#[tokio::test]
async fn every_log_of_a_200_tx_block_is_proven_and_tampering_is_caught() {
    let b = big_block().await;
    let mut types: Vec<u8> = b.receipts.iter().map(|r| r.tx_type() as u8).collect();
    types.sort();
    types.dedup();
    assert_eq!(types, vec![0, 1, 2, 3, 4], "receipt types in the block");

    let mut logs = 0;
    let mut messages = 0;
    for (index, receipt) in b.receipts.iter().enumerate() {
        let proof = ReceiptProof::build(&b.receipts, index as u64, b.header.receipts_root).unwrap();
        let proven = proof.verify(b.header.receipts_root).unwrap();
        assert_eq!(&proven, receipt, "receipt {index}");
        for (log_index, log) in receipt.logs().iter().enumerate() {
            assert_eq!(&proven.logs()[log_index], log);
            logs += 1;
            if log.address == b.mailbox {
                let message = ProvenMessage::build(&b.header, &b.receipts, index as u64, log_index as u64).unwrap();
                let id = message.verify(b.header.hash(), 31337, b.mailbox).unwrap();
                assert_eq!(id, log.topics()[1], "the id the Mailbox emitted");
                // Read off the receipts checked whole, it is the same message with the same id.
                let read = dispatched(receipt, log_index as u64, 31337, b.mailbox).unwrap();
                assert_eq!((read.message, read.id), (message.message, id));
                messages += 1;
            }
        }
    }
    assert!(logs >= 196, "{logs} logs proven");
    assert_eq!(messages, 66);

    // One byte flipped anywhere in a proof.
    let proof = ReceiptProof::build(&b.receipts, 137, b.header.receipts_root).unwrap();
    for node in 0..proof.nodes.len() {
        for at in [0, proof.nodes[node].len() / 2, proof.nodes[node].len() - 1] {
            let mut bad = proof.clone();
            let mut bytes = bad.nodes[node].to_vec();
            bytes[at] ^= 0x01;
            bad.nodes[node] = bytes.into();
            assert!(bad.verify(b.header.receipts_root).is_err(), "node {node} byte {at}");
        }
    }
    let mut bad = proof.clone();
    let mut receipt = bad.receipt.to_vec();
    let last = receipt.len() - 1;
    receipt[last] ^= 0x80;
    bad.receipt = receipt.into();
    assert!(bad.verify(b.header.receipts_root).is_err(), "tampered receipt");
    let mut bad = proof.clone();
    bad.index = 138;
    assert!(bad.verify(b.header.receipts_root).is_err(), "proof for another index");

    // Against another block's root.
    let parent = plain(&b.chain).get_block_by_hash(b.header.parent_hash).await.unwrap().unwrap();
    assert!(proof.verify(parent.header.inner.receipts_root).is_err());

    // The receipts checked whole: the block's list passes, a changed or missing receipt does not.
    ReceiptTrie::check_root(&b.receipts, b.header.receipts_root).unwrap();
    let mut changed = b.receipts.clone();
    if let Some(inner) = changed[137].as_receipt_with_bloom_mut() {
        inner.receipt.cumulative_gas_used += 1;
    }
    assert!(ReceiptTrie::check_root(&changed, b.header.receipts_root).is_err(), "a changed receipt");
    assert!(ReceiptTrie::check_root(&b.receipts[1..], b.header.receipts_root).is_err(), "a missing receipt");
    assert!(ReceiptTrie::check_root(&b.receipts, parent_root(&b).await).is_err(), "another block's root");

    // Proven messages: wrong log index, wrong mailbox, wrong origin, untrusted header.
    let dispatch_tx = b.receipts.iter().position(|r| r.logs().iter().any(|l| l.address == b.mailbox)).unwrap() as u64;
    let message = ProvenMessage::build(&b.header, &b.receipts, dispatch_tx, 0).unwrap();
    let receipt = &b.receipts[dispatch_tx as usize];
    assert!(dispatched(receipt, 0, 31337, b.token).is_err(), "another emitter");
    assert!(dispatched(receipt, 0, 31338, b.mailbox).is_err(), "another origin");
    assert!(dispatched(receipt, receipt.logs().len() as u64, 31337, b.mailbox).is_err(), "no such log");
    let mut reverted = receipt.clone();
    if let Some(inner) = reverted.as_receipt_with_bloom_mut() {
        inner.receipt.status = false.into();
    }
    assert!(dispatched(&reverted, 0, 31337, b.mailbox).is_err(), "a reverted dispatch");
    let mut wrong_log = message.clone();
    wrong_log.log_index = 1;
    assert!(wrong_log.verify(b.header.hash(), 31337, b.mailbox).is_err());
    assert!(message.verify(b.header.hash(), 31337, b.token).is_err());
    assert!(message.verify(b.header.hash(), 31338, b.mailbox).is_err());
    assert!(message.verify(parent.header.hash, 31337, b.mailbox).is_err());
    let mut other_message = message.clone();
    other_message.message.nonce += 1;
    assert!(other_message.verify(b.header.hash(), 31337, b.mailbox).is_err());
    let mut other_header = message.clone();
    other_header.header.gas_used += 1;
    assert!(other_header.verify(b.header.hash(), 31337, b.mailbox).is_err());
    // And a ProvenMessage survives a JSON round trip, as it will travel.
    let json = serde_json::to_string(&message).unwrap();
    let back: ProvenMessage = serde_json::from_str(&json).unwrap();
    assert_eq!(back.verify(b.header.hash(), 31337, b.mailbox).unwrap(), message.id());
    let _ = b.block;
}

/// The receipts root of the parent of `b`'s block.
async fn parent_root(b: &BigBlock) -> B256 {
    let parent = plain(&b.chain).get_block_by_hash(b.header.parent_hash).await.unwrap().unwrap();
    parent.header.inner.receipts_root
}

#[tokio::test]
async fn account_and_storage_proofs_verify_and_tampered_ones_do_not() {
    let b = big_block().await;
    let provider = plain(&b.chain);
    let at = b.header.number;
    let balance_slot = keccak256((b.holder, U256::ZERO).abi_encode());
    let empty_slot = B256::repeat_byte(0x77);
    let proof = provider.get_proof(b.token, vec![balance_slot, empty_slot]).block_id(at.into()).await.unwrap();
    assert!(proof.storage_proof[0].value > U256::ZERO, "the holder has a balance");
    assert!(proof.storage_proof[1].value.is_zero());
    proofs::verify_account_proof(b.header.state_root, &proof).unwrap();

    // An account that does not exist: an exclusion proof.
    let nobody = Address::repeat_byte(0x5a);
    let absent = provider.get_proof(nobody, vec![]).block_id(at.into()).await.unwrap();
    proofs::verify_account_proof(b.header.state_root, &absent).unwrap();
    // An EOA with a balance.
    let eoa = provider.get_proof(b.holder, vec![]).block_id(at.into()).await.unwrap();
    proofs::verify_account_proof(b.header.state_root, &eoa).unwrap();

    let mut bad = proof.clone();
    bad.balance += U256::from(1);
    assert!(proofs::verify_account_proof(b.header.state_root, &bad).is_err(), "balance");
    let mut bad = proof.clone();
    bad.nonce += 1;
    assert!(proofs::verify_account_proof(b.header.state_root, &bad).is_err(), "nonce");
    let mut bad = proof.clone();
    bad.storage_proof[0].value += U256::from(1);
    assert!(proofs::verify_account_proof(b.header.state_root, &bad).is_err(), "storage value");
    let mut bad = proof.clone();
    bad.storage_proof[1].value = U256::from(1);
    assert!(proofs::verify_account_proof(b.header.state_root, &bad).is_err(), "absent slot claimed present");
    let mut bad = proof.clone();
    let mut node = bad.account_proof[0].to_vec();
    node[5] ^= 1;
    bad.account_proof[0] = node.into();
    assert!(proofs::verify_account_proof(b.header.state_root, &bad).is_err(), "account node");
    let mut bad = absent.clone();
    bad.balance = U256::from(1);
    assert!(proofs::verify_account_proof(b.header.state_root, &bad).is_err(), "absent account claimed funded");
    let parent = provider.get_block_by_hash(b.header.parent_hash).await.unwrap().unwrap();
    assert!(proofs::verify_account_proof(parent.header.inner.state_root, &proof).is_err(), "another block's root");
}
