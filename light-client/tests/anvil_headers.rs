//! Real anvil chains: hundreds of blocks with every transaction type verified from
//! genesis on three forks, every header field tampered, and every fork's header layout.

mod common;

use alloy::{
    consensus::Header,
    primitives::{Address, B64, B256, Bloom, Bytes, U256},
    providers::{Provider, ext::AnvilApi},
};
use common::{Fork, anvil, client_from_genesis, plain, source, traffic};
use ferry_light_client::{Event, sync};

async fn verify_from_genesis(fork: Fork) {
    let chain = anvil(fork).await;
    let rounds = 300usize.div_ceil(fork.tx_types().len() - usize::from(fork != Fork::London)) + 1;
    let receipts = traffic(&chain, fork, rounds).await;
    let mut kinds: Vec<u8> = receipts.iter().map(|r| r.inner.tx_type() as u8).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds, fork.tx_types());

    let latest = plain(&chain).get_block_number().await.unwrap();
    assert!(latest >= 300, "only {latest} blocks");
    let mut client = client_from_genesis(&chain, fork, 5).await;
    let events = sync(&mut client, &source(&chain), latest).await.unwrap();
    let heads = events.iter().filter(|e| matches!(e, Event::NewHead(_))).count() as u64;
    let finals = events.iter().filter(|e| matches!(e, Event::Finalized(_))).count() as u64;
    assert_eq!(heads, latest, "every block became head once, in order");
    assert_eq!(finals, latest - 5);
    assert_eq!(client.head().number, latest);
    assert_eq!(client.finalized().number, latest - 5);
    assert!(!events.iter().any(|e| matches!(e, Event::Reorg(_))));
}

#[tokio::test]
async fn three_hundred_blocks_of_every_tx_type_verify_from_genesis() {
    verify_from_genesis(Fork::Latest).await;
}

#[tokio::test]
async fn three_hundred_cancun_blocks_verify_from_genesis() {
    verify_from_genesis(Fork::Cancun).await;
}

#[tokio::test]
async fn three_hundred_london_blocks_verify_from_genesis() {
    verify_from_genesis(Fork::London).await;
}

#[tokio::test]
async fn every_fork_anvil_runs_hashes_right() {
    // Fields: 15 before London, then base fee (16), withdrawals (17), blob gas used,
    // excess blob gas and beacon root (20), requests hash (21).
    for (fork, fields) in
        [("london", 16), ("paris", 16), ("shanghai", 17), ("cancun", 20), ("prague", 21), ("osaka", 21), ("bpo1", 21)]
    {
        let chain = ferry_devnet::Anvil::spawn(ferry_devnet::AnvilOptions {
            hardfork: Some(fork.into()),
            ..Default::default()
        })
        .await
        .unwrap();
        let provider = plain(&chain);
        provider.evm_mine(None).await.unwrap();
        provider.evm_mine(None).await.unwrap();
        for n in 0..=2u64 {
            let block = provider.get_block_by_number(n.into()).await.unwrap().unwrap();
            let header = block.header.inner.clone();
            // anvil's genesis carries extra fields on older forks; mined blocks do not.
            if n > 0 {
                assert_eq!(count_fields(&header), fields, "{fork} block {n}");
            }
            ferry_light_client::verify::seal(header, block.header.hash).unwrap_or_else(|e| panic!("{fork}: {e}"));
        }
    }
}

fn count_fields(h: &Header) -> usize {
    15 + [
        h.base_fee_per_gas.is_some(),
        h.withdrawals_root.is_some(),
        h.blob_gas_used.is_some(),
        h.excess_blob_gas.is_some(),
        h.parent_beacon_block_root.is_some(),
        h.requests_hash.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count()
}

/// A real block with transactions (so every field is interesting), its parent known.
#[tokio::test]
async fn every_header_field_tampered_is_rejected_with_its_reason() {
    let chain = anvil(Fork::Latest).await;
    traffic(&chain, Fork::Latest, 2).await;
    let latest = plain(&chain).get_block_number().await.unwrap();
    let mut client = client_from_genesis(&chain, Fork::Latest, 3).await;
    sync(&mut client, &source(&chain), latest - 1).await.unwrap();
    let block = plain(&chain).get_block_by_number(latest.into()).await.unwrap().unwrap();
    let (good, hash) = (block.header.inner.clone(), block.header.hash);
    assert!(good.blob_gas_used.is_some() && good.requests_hash.is_some(), "a full-width header");

    type Tamper = fn(&mut Header);
    let tampers: [(&str, Tamper); 21] = [
        ("parent_hash", |h| h.parent_hash = B256::repeat_byte(1)),
        ("ommers_hash", |h| h.ommers_hash = B256::repeat_byte(2)),
        ("beneficiary", |h| h.beneficiary = Address::repeat_byte(3)),
        ("state_root", |h| h.state_root = B256::repeat_byte(4)),
        ("transactions_root", |h| h.transactions_root = B256::repeat_byte(5)),
        ("receipts_root", |h| h.receipts_root = B256::repeat_byte(6)),
        ("logs_bloom", |h| h.logs_bloom = Bloom::repeat_byte(7)),
        ("difficulty", |h| h.difficulty = U256::from(8)),
        ("number", |h| h.number += 1),
        ("gas_limit", |h| h.gas_limit += h.gas_limit / 100),
        ("gas_used", |h| h.gas_used = h.gas_limit + 1),
        ("timestamp", |h| h.timestamp = h.timestamp.saturating_sub(1000)),
        ("extra_data", |h| h.extra_data = Bytes::from(vec![9; 33])),
        ("mix_hash", |h| h.mix_hash = B256::repeat_byte(10)),
        ("nonce", |h| h.nonce = B64::repeat_byte(11)),
        ("base_fee_per_gas", |h| h.base_fee_per_gas = h.base_fee_per_gas.map(|f| f * 2 + 1)),
        ("withdrawals_root", |h| h.withdrawals_root = Some(B256::repeat_byte(12))),
        ("blob_gas_used", |h| h.blob_gas_used = Some(12345)),
        ("excess_blob_gas", |h| h.excess_blob_gas = h.excess_blob_gas.map(|g| g + 131_072)),
        ("parent_beacon_block_root", |h| h.parent_beacon_block_root = Some(B256::repeat_byte(13))),
        ("requests_hash", |h| h.requests_hash = Some(B256::repeat_byte(14))),
    ];
    // Fields a light client can judge beyond the hash, and the reason it gives once the
    // tampered header is re-hashed (as a lying node would serve it).
    let rule_reasons = [
        ("parent_hash", "unknown_parent"),
        ("ommers_hash", "post_merge"),
        ("difficulty", "post_merge"),
        ("number", "number"),
        ("gas_limit", "gas_limit"),
        ("gas_used", "gas_used"),
        ("timestamp", "timestamp"),
        ("extra_data", "extra_data"),
        ("nonce", "post_merge"),
        ("base_fee_per_gas", "base_fee"),
        ("blob_gas_used", "blob_gas_used"),
        ("excess_blob_gas", "excess_blob_gas"),
    ];
    for (field, tamper) in tampers {
        let mut bad = good.clone();
        tamper(&mut bad);
        assert_ne!(bad, good, "{field} was not changed");
        // Served with the original hash: the hash gives it away.
        let err = client.insert(bad.clone(), hash).unwrap_err();
        assert_eq!(err.reason(), "hash_mismatch", "{field}: {err}");
        // Served with its own hash: the consensus rules catch what they can. Roots,
        // bloom, beneficiary and mix hash only the hash link can tell (the claimed hash,
        // the next block's parent_hash): a re-hashed one is simply another block.
        if let Some((_, reason)) = rule_reasons.iter().find(|(f, _)| *f == field) {
            let rehashed = bad.hash_slow();
            let err = client.insert(bad, rehashed).expect_err(field);
            assert_eq!(err.reason(), *reason, "{field}: {err}");
        }
    }
    assert!(client.halted().is_none());
    // The genuine header still goes in, and becomes head.
    let events = client.insert(good, hash).unwrap();
    assert!(events.iter().any(|e| matches!(e, Event::NewHead(h) if h.hash() == hash)));
}

#[tokio::test]
async fn a_client_restarted_from_its_store_continues_where_it_stopped() {
    let chain = anvil(Fork::Latest).await;
    let provider = plain(&chain);
    provider.anvil_mine(Some(100), None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.redb");
    let config = common::config(chain.chain_id(), Fork::Latest, 5);
    let genesis = common::genesis(&provider).await;

    let finalized = {
        let store = ferry_light_client::CheckpointStore::open(&path).unwrap();
        let mut client = ferry_light_client::LightClient::open(config, store, genesis.clone()).unwrap();
        sync(&mut client, &source(&chain), 100).await.unwrap();
        assert_eq!(client.finalized().number, 95);
        client.finalized().clone()
    };

    provider.anvil_mine(Some(50), None).await.unwrap();
    let store = ferry_light_client::CheckpointStore::open(&path).unwrap();
    let mut client = ferry_light_client::LightClient::open(config, store, genesis).unwrap();
    assert_eq!(client.finalized().hash(), finalized.hash(), "resumed at the stored cursor");
    assert_eq!(client.head().number, 95, "the non-final window is verified again, not trusted");
    let events = sync(&mut client, &source(&chain), 150).await.unwrap();
    let first_new = events.iter().find_map(|e| if let Event::NewHead(h) = e { Some(h.number) } else { None });
    assert_eq!(first_new, Some(96));
    assert_eq!(client.head().number, 150);
    assert_eq!(client.finalized().number, 145);
    let rpc = provider.get_block_by_number(145.into()).await.unwrap().unwrap();
    assert_eq!(rpc.header.hash, client.finalized().hash());
}
