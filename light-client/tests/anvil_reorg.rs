//! Reorgs made by anvil itself (`anvil_reorg`): followed when shallower than finality,
//! a halting safety fault when deeper.

mod common;

use std::collections::BTreeMap;

use alloy::{
    primitives::B256,
    providers::{Provider, ext::AnvilApi},
    rpc::types::anvil::ReorgOptions,
};
use common::{Fork, anvil, client_from_genesis, plain, source, traffic};
use ferry_light_client::{Event, LightClient, LightClientError, SourceError, sync};

const CONFIRMATIONS: u64 = 5;

/// A chain of at least 14 blocks with transactions, and a client synced to its head.
async fn synced() -> (ferry_devnet::Anvil, LightClient, u64) {
    let chain = anvil(Fork::Latest).await;
    traffic(&chain, Fork::Latest, 4).await;
    let latest = plain(&chain).get_block_number().await.unwrap();
    assert!(latest >= 14);
    let mut client = client_from_genesis(&chain, Fork::Latest, CONFIRMATIONS).await;
    sync(&mut client, &source(&chain), latest).await.unwrap();
    assert_eq!(client.finalized().number, latest - CONFIRMATIONS);
    (chain, client, latest)
}

fn finals(client: &LightClient) -> BTreeMap<u64, B256> {
    client.fork_choice().final_headers().map(|h| (h.number, h.hash())).collect()
}

async fn shallow_reorg_is_followed(depth: u64) {
    let (chain, mut client, latest) = synced().await;
    let final_before = finals(&client);
    let provider = plain(&chain);
    let old_head = client.head().hash();
    provider.anvil_reorg(ReorgOptions { depth, tx_block_pairs: vec![] }).await.unwrap();
    provider.evm_mine(None).await.unwrap(); // the new branch becomes the longer one
    let new_tip = provider.get_block_by_number((latest + 1).into()).await.unwrap().unwrap().header.hash;

    let events = sync(&mut client, &source(&chain), latest + 1).await.unwrap();
    let reorg = events
        .iter()
        .find_map(|e| if let Event::Reorg(r) = e { Some(r.clone()) } else { None })
        .expect("a reorg event");
    assert_eq!(reorg.common_ancestor.number, latest - depth);
    assert_eq!(reorg.dropped.len() as u64, depth);
    assert_eq!(reorg.dropped[0].hash, old_head);
    assert_eq!(reorg.added.len() as u64, depth + 1);
    assert_eq!(reorg.added.last().unwrap().hash, new_tip);
    assert_eq!(client.head().hash(), new_tip);
    assert!(client.halted().is_none());

    // No final header was touched; finality moved on by one, on the new branch's side.
    let final_after = finals(&client);
    for (number, hash) in &final_before {
        assert_eq!(final_after.get(number), Some(hash), "final block {number} changed");
    }
    assert_eq!(client.finalized().number, latest + 1 - CONFIRMATIONS);
    let canonical = provider.get_block_by_number(client.finalized().number.into()).await.unwrap().unwrap();
    assert_eq!(canonical.header.hash, client.finalized().hash());
}

#[tokio::test]
async fn a_reorg_of_depth_one_is_followed() {
    shallow_reorg_is_followed(1).await;
}

#[tokio::test]
async fn a_reorg_of_depth_three_is_followed() {
    shallow_reorg_is_followed(3).await;
}

#[tokio::test]
async fn a_reorg_below_finality_is_a_safety_fault_that_halts() {
    let (chain, mut client, latest) = synced().await;
    let final_before = finals(&client);
    let finalized = client.finalized().clone();
    let provider = plain(&chain);
    let depth = CONFIRMATIONS + 2;
    provider.anvil_reorg(ReorgOptions { depth, tx_block_pairs: vec![] }).await.unwrap();
    provider.evm_mine(None).await.unwrap();

    let err = sync(&mut client, &source(&chain), latest + 1).await.unwrap_err();
    let SourceError::LightClient(LightClientError::SafetyFault(fault)) = err else {
        panic!("expected a safety fault, got {err}")
    };
    let replaced = latest - depth + 1;
    assert_eq!(fault.number, replaced);
    assert_eq!(fault.final_hash, final_before[&replaced]);
    let rival = provider.get_block_by_number(replaced.into()).await.unwrap().unwrap();
    assert_eq!(fault.conflicting_hash, rival.header.hash);

    assert_eq!(client.halted(), Some(&fault));
    assert_eq!(client.finalized().hash(), finalized.hash(), "nothing final was rewritten");
    assert_eq!(finals(&client), final_before);
    // And it stays halted.
    let err = sync(&mut client, &source(&chain), latest + 1).await.unwrap_err();
    assert!(matches!(err, SourceError::LightClient(LightClientError::Halted { .. })), "{err}");
}
