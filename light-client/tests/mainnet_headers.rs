//! Real mainnet headers, Frontier to Cancun: every one hashes to the hash the chain
//! gives it, and every consecutive pair passes the rules of the child's fork (among
//! them the Byzantium, Constantinople, Berlin, London, merge, Shanghai and Cancun
//! transitions), while proof-of-stake rules refuse the mined ones.
//!
//! The headers come from the data directory the executors' conformance suite reads
//! (`FERRY_MAINNET_DATA`, else `shared/mainnet-blocks` beside the repository); without
//! one the suite says so and checks nothing.

use std::path::PathBuf;

use alloy::{consensus::Header, primitives::B256, rpc::types::Block};
use ferry_light_client::{
    EthereumHardfork, ForkSchedule, HeaderRules, SealedHeader,
    verify::{Position, check_against_parent, seal},
};

fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FERRY_MAINNET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/mainnet-blocks"));
    if dir.join("blocks").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "no real blocks at {}: set FERRY_MAINNET_DATA to a directory ops/mainnet-data.py made",
            dir.display()
        );
        None
    }
}

/// Every header in the directory, by number, with the hash the chain gives it.
fn headers(dir: &std::path::Path) -> Vec<(Header, B256)> {
    let mut headers: Vec<(Header, B256)> = std::fs::read_dir(dir.join("blocks"))
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path().join("block.json");
            let block: Block = serde_json::from_slice(&std::fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (block.header.inner, block.header.hash)
        })
        .collect();
    headers.sort_by_key(|(h, _)| h.number);
    headers
}

#[test]
fn real_headers_hash_right_and_consecutive_ones_pass_their_forks_rules() {
    let Some(dir) = data_dir() else { return };
    let sealed: Vec<SealedHeader> = headers(&dir)
        .into_iter()
        .map(|(header, hash)| {
            let number = header.number;
            seal(header, hash).unwrap_or_else(|e| panic!("block {number}: {e}"))
        })
        .collect();
    let schedule = ForkSchedule::mainnet();
    let mut transitions = Vec::new();
    let mut pairs = 0;
    for pair in sealed.windows(2) {
        let (parent, child) = (&pair[0], &pair[1]);
        if child.number != parent.number + 1 {
            continue;
        }
        assert_eq!(child.parent_hash, parent.hash(), "block {} links to its parent", child.number);
        let fork = schedule.fork_at(child.number, child.timestamp);
        let rules = schedule.rules_at(child.number, child.timestamp);
        check_against_parent(parent, child, &rules, Position::default())
            .unwrap_or_else(|e| panic!("block {} under {fork:?}: {e}", child.number));
        let parent_fork = schedule.fork_at(parent.number, parent.timestamp);
        if parent_fork != fork {
            transitions.push(fork);
        }
        // Before the merge, proof-of-stake rules refuse a mined header.
        if fork < EthereumHardfork::Paris {
            let staked = HeaderRules::for_fork(EthereumHardfork::Paris);
            let refused = check_against_parent(parent, child, &staked, Position::default());
            assert!(refused.is_err(), "block {} ({fork:?}) passes proof-of-stake rules", child.number);
        }
        pairs += 1;
    }
    eprintln!("{} headers hash right; {pairs} consecutive pairs pass; fork transitions: {transitions:?}", sealed.len());
    assert!(sealed.len() > 1 && pairs > 0);
    for fork in [EthereumHardfork::London, EthereumHardfork::Paris] {
        assert!(transitions.contains(&fork), "the {fork:?} transition is among the pairs");
    }
}
