//! Fork choice, finality and the safety fault on synthetic chains (no network): every
//! header here is valid under Ethereum's rules, so only the structure is under test.

use alloy::{
    consensus::{EMPTY_OMMER_ROOT_HASH, Header},
    primitives::{B256, Bytes},
};
use ferry_light_client::{
    CheckpointStore, Event, HeaderError, LightClient, LightClientConfig, LightClientError, SealedHeader,
};

fn genesis() -> SealedHeader {
    let header = Header {
        gas_limit: 30_000_000,
        base_fee_per_gas: Some(1_000_000_000),
        timestamp: 1_700_000_000,
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        ..Default::default()
    };
    let hash = header.hash_slow();
    SealedHeader::new_unchecked(header, hash)
}

/// A valid child; `salt` in extra_data makes sibling branches differ.
fn child(parent: &SealedHeader, salt: u8) -> SealedHeader {
    let header = Header {
        parent_hash: parent.hash(),
        number: parent.number + 1,
        timestamp: parent.timestamp + 12,
        base_fee_per_gas: parent.next_block_base_fee(alloy::eips::eip1559::BaseFeeParams::ethereum()),
        extra_data: Bytes::from(vec![salt]),
        ..parent.inner().clone()
    };
    let hash = header.hash_slow();
    SealedHeader::new_unchecked(header, hash)
}

fn chain(from: &SealedHeader, len: usize, salt: u8) -> Vec<SealedHeader> {
    let mut out: Vec<SealedHeader> = Vec::with_capacity(len);
    for _ in 0..len {
        let next = child(out.last().unwrap_or(from), salt);
        out.push(next);
    }
    out
}

fn feed(client: &mut LightClient, headers: &[SealedHeader]) -> Vec<Event> {
    headers.iter().flat_map(|h| client.insert(h.inner().clone(), h.hash()).unwrap()).collect()
}

fn finalized_numbers(events: &[Event]) -> Vec<u64> {
    events.iter().filter_map(|e| if let Event::Finalized(h) = e { Some(h.number) } else { None }).collect()
}

#[test]
fn finality_follows_confirmations_in_order() {
    let g = genesis();
    let mut client = LightClient::new(LightClientConfig::new(1, 5), g.clone());
    let main = chain(&g, 10, 0);
    let events = feed(&mut client, &main[..5]);
    assert!(finalized_numbers(&events).is_empty(), "nothing has 5 confirmations yet");
    let events = feed(&mut client, &main[5..]);
    assert_eq!(finalized_numbers(&events), vec![1, 2, 3, 4, 5]);
    assert_eq!(client.head().number, 10);
    assert_eq!(client.finalized().number, 5);
    assert_eq!(client.fork_choice().window_len(), 5);
}

#[test]
fn a_longer_branch_reorgs_and_reports_what_moved() {
    let g = genesis();
    let mut client = LightClient::new(LightClientConfig::new(1, 5), g.clone());
    let main = chain(&g, 8, 0); // final up to 3
    feed(&mut client, &main);
    // Fork off block 5 (still above finality): 4 new blocks beat the 3 old ones.
    let fork = chain(&main[4], 4, 1);
    let events = feed(&mut client, &fork[..3]);
    assert!(events.iter().all(|e| !matches!(e, Event::Reorg(_))), "an equal branch does not win");
    assert_eq!(client.head().hash(), main[7].hash());

    let events = feed(&mut client, &fork[3..]);
    let reorg =
        events.iter().find_map(|e| if let Event::Reorg(r) = e { Some(r.clone()) } else { None }).expect("reorg event");
    assert_eq!(reorg.common_ancestor.hash, main[4].hash());
    assert_eq!(
        reorg.dropped.iter().map(|n| n.hash).collect::<Vec<_>>(),
        [main[7].hash(), main[6].hash(), main[5].hash()]
    );
    assert_eq!(
        reorg.added.iter().map(|n| n.hash).collect::<Vec<_>>(),
        fork.iter().map(|h| h.hash()).collect::<Vec<_>>()
    );
    assert_eq!(client.head().hash(), fork[3].hash());
    // Head 9 with 5 confirmations: blocks 4 final, from the main chain below the fork.
    assert_eq!(finalized_numbers(&events), vec![4]);
    assert_eq!(client.finalized().hash(), main[3].hash());
}

#[test]
fn a_branch_replacing_a_final_header_halts_the_chain() {
    let g = genesis();
    let mut client = LightClient::new(LightClientConfig::new(7, 3), g.clone());
    let main = chain(&g, 10, 0); // final up to 7
    feed(&mut client, &main);
    let rival = child(&main[4], 9); // a valid block 6 on top of final block 5
    let err = client.insert(rival.inner().clone(), rival.hash()).unwrap_err();
    let LightClientError::SafetyFault(fault) = err else { panic!("expected a safety fault, got {err}") };
    assert_eq!((fault.chain_id, fault.number), (7, 6));
    assert_eq!(fault.final_hash, main[5].hash());
    assert_eq!(fault.conflicting_hash, rival.hash());
    assert_eq!(client.halted(), Some(&fault));
    assert_eq!(client.finalized().hash(), main[6].hash(), "nothing final was rewritten");

    // Halted: even a good header is refused until an operator acts.
    let next = child(&main[9], 0);
    assert!(matches!(client.insert(next.inner().clone(), next.hash()), Err(LightClientError::Halted { .. })));
}

#[test]
fn junk_below_finality_is_refused_without_halting() {
    let g = genesis();
    let mut client = LightClient::new(LightClientConfig::new(1, 3), g.clone());
    let main = chain(&g, 10, 0);
    feed(&mut client, &main);
    // A block 6 that does not build on final block 5.
    let stray = child(&chain(&g, 5, 3)[4], 3);
    let err = client.insert(stray.inner().clone(), stray.hash()).unwrap_err();
    assert!(matches!(err, LightClientError::Header(HeaderError::BelowFinality { number: 6, .. })), "{err}");
    assert!(client.halted().is_none());
    // Re-sending a final header is harmless.
    assert!(client.insert(main[2].inner().clone(), main[2].hash()).unwrap().is_empty());
}

#[test]
fn unknown_parents_and_bad_hashes_are_refused() {
    let g = genesis();
    let mut client = LightClient::new(LightClientConfig::new(1, 3), g.clone());
    let main = chain(&g, 3, 0);
    let err = client.insert(main[1].inner().clone(), main[1].hash()).unwrap_err();
    assert_eq!(err.reason(), "unknown_parent");
    let err = client.insert(main[0].inner().clone(), B256::repeat_byte(1)).unwrap_err();
    assert_eq!(err.reason(), "hash_mismatch");
    assert_eq!(client.head().number, 0);
}

#[test]
fn the_window_is_bounded() {
    let g = genesis();
    let config = LightClientConfig { window: 4, ..LightClientConfig::new(1, 100) };
    let mut client = LightClient::new(config, g.clone());
    let main = chain(&g, 5, 0);
    feed(&mut client, &main[..4]);
    let err = client.insert(main[4].inner().clone(), main[4].hash()).unwrap_err();
    assert_eq!(err.reason(), "window_full");
}

#[test]
fn finalized_tag_mode_finalizes_what_it_is_told() {
    let g = genesis();
    let config = LightClientConfig { finality: ferry_light_client::Finality::Tag, ..LightClientConfig::new(1, 0) };
    let mut client = LightClient::new(config, g.clone());
    let main = chain(&g, 6, 0);
    assert!(finalized_numbers(&feed(&mut client, &main)).is_empty());
    let events = client.finalize(main[3].hash()).unwrap();
    assert_eq!(finalized_numbers(&events), vec![1, 2, 3, 4]);
    let side = child(&main[4], 5);
    client.insert(side.inner().clone(), side.hash()).unwrap();
    assert!(matches!(client.finalize(side.hash()), Err(LightClientError::NotCanonical { .. })));
}

#[test]
fn a_restarted_client_resumes_from_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.redb");
    let g = genesis();
    let main = chain(&g, 20, 0);
    {
        let mut client =
            LightClient::open(LightClientConfig::new(1, 4), CheckpointStore::open(&path).unwrap(), g.clone()).unwrap();
        feed(&mut client, &main[..12]);
        assert_eq!(client.finalized().number, 8);
    }
    // Reopen with a bogus checkpoint: the store wins, nothing new is trusted.
    let bogus = child(&g, 42);
    let mut client =
        LightClient::open(LightClientConfig::new(1, 4), CheckpointStore::open(&path).unwrap(), bogus).unwrap();
    assert_eq!(client.finalized().hash(), main[7].hash());
    // The non-final window was not stored: blocks 9..12 come again, verified again.
    let events = feed(&mut client, &main[8..]);
    assert_eq!(finalized_numbers(&events), (9..=16).collect::<Vec<_>>());
    assert_eq!(client.head().hash(), main[19].hash());
}
