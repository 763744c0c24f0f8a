//! Real mainnet headers, Frontier to Cancun: every one hashes to the hash the chain
//! gives it, and every consecutive pair passes the rules of the child's fork (among
//! them the Byzantium, Constantinople, Berlin, London, merge, Shanghai and Cancun
//! transitions), while proof-of-stake rules refuse the mined ones.
//!
//! The headers come from `executors/tests/data/mainnet/headers.json.gz` (the headers of
//! all 85 blocks of pevm's published set, which the repository carries), or from the
//! blocks of the data directory `FERRY_MAINNET_DATA` names. The suite always runs.

use std::path::{Path, PathBuf};

use alloy::{consensus::Header, primitives::B256, rpc::types::Block};
use ferry_light_client::{
    EthereumHardfork, ForkSchedule, HeaderRules, SealedHeader,
    verify::{Position, check_against_parent, seal},
};

/// Every header in the data, by number, with the hash the chain gives it.
fn headers() -> Vec<(Header, B256)> {
    let mut headers = match std::env::var_os("FERRY_MAINNET_DATA") {
        Some(dir) => block_headers(Path::new(&dir)),
        None => carried_headers(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../executors/tests/data/mainnet")),
    };
    headers.sort_by_key(|(h, _)| h.number);
    headers
}

/// The headers of the blocks of a data directory `ops/mainnet-data.py` made.
fn block_headers(dir: &Path) -> Vec<(Header, B256)> {
    let entries = std::fs::read_dir(dir.join("blocks")).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    entries
        .map(|entry| {
            let path = entry.unwrap().path().join("block.json");
            let block: Block = serde_json::from_slice(&std::fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (block.header.inner, block.header.hash)
        })
        .collect()
}

/// The headers the repository carries (`ops/mainnet-compact.py` wrote them).
fn carried_headers(dir: &Path) -> Vec<(Header, B256)> {
    let path = dir.join("headers.json.gz");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut json = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(file), &mut json).unwrap();
    let headers: Vec<alloy::rpc::types::Header> =
        serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    headers.into_iter().map(|h| (h.inner, h.hash)).collect()
}

#[test]
fn real_headers_hash_right_and_consecutive_ones_pass_their_forks_rules() {
    let sealed: Vec<SealedHeader> = headers()
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
    for fork in [
        EthereumHardfork::Byzantium,
        EthereumHardfork::Petersburg,
        EthereumHardfork::Berlin,
        EthereumHardfork::London,
        EthereumHardfork::Paris,
        EthereumHardfork::Shanghai,
        EthereumHardfork::Cancun,
    ] {
        assert!(transitions.contains(&fork), "the {fork:?} transition is among the pairs");
    }
}
