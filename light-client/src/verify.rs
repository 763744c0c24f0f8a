//! Header verification: a header on its own (its hash) and against its parent (the
//! consensus rules of [`HeaderRules`]).

use alloy::{
    consensus::{EMPTY_OMMER_ROOT_HASH, Header, Sealed},
    eips::eip4844::DATA_GAS_PER_BLOB,
    primitives::{B64, B256, U256},
};

use crate::{HeaderError, HeaderRules, SealedHeader, TimestampRule};

/// The lowest gas limit Ethereum allows.
const MIN_GAS_LIMIT: u64 = 5000;
/// The gas limit may move by less than parent / 1024 per block.
const GAS_LIMIT_BOUND_DIVISOR: u64 = 1024;
/// EIP-1559's elasticity: the gas limit is twice the gas target.
const ELASTICITY_MULTIPLIER: u64 = 2;
/// The base fee of the first EIP-1559 block.
const INITIAL_BASE_FEE: u64 = 1_000_000_000;

/// Checks that `header` hashes to `claimed` (`keccak256(rlp(header))`) and seals it.
pub fn seal(header: Header, claimed: B256) -> Result<SealedHeader, HeaderError> {
    let actual = header.hash_slow();
    if actual != claimed {
        return Err(HeaderError::HashMismatch { number: header.number, claimed, actual });
    }
    Ok(Sealed::new_unchecked(header, claimed))
}

/// Where a header sits, for the rules that anvil bends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// The parent already has another child: this header starts a new branch.
    pub starts_branch: bool,
}

/// Checks the consensus rules of `header` against `parent`. The caller has checked the
/// hash ([`seal`]) and that `header.parent_hash == parent.hash()`.
pub fn check_against_parent(
    parent: &SealedHeader,
    header: &SealedHeader,
    rules: &HeaderRules,
    position: Position,
) -> Result<(), HeaderError> {
    check_alone(header, rules)?;
    if rules.sequential_numbers && Some(header.number) != parent.number.checked_add(1) {
        return Err(HeaderError::NumberNotSequential { number: header.number, parent: parent.number });
    }
    if rules.gas_limit_bounds {
        // EIP-1559: at the London block the gas limit doubles (the parent's limit counts
        // as the new target, half the new limit).
        let london = header.base_fee_per_gas.is_some() && parent.base_fee_per_gas.is_none();
        let parent_limit =
            if london { parent.gas_limit.saturating_mul(ELASTICITY_MULTIPLIER) } else { parent.gas_limit };
        check_gas_limit(parent_limit, header.gas_limit)?;
    }
    check_timestamp(parent.timestamp, header.timestamp, rules.timestamp)?;
    if rules.eip1559_base_fee {
        // anvil copies genesis's fee into block 1, and gives a reorg's first block the fee
        // that would have followed the dropped tip, which the new parent cannot predict.
        let copied = header.base_fee_per_gas == parent.base_fee_per_gas;
        let forgiven = rules.anvil_base_fee_quirks && ((header.number == 1 && copied) || position.starts_branch);
        if !forgiven {
            check_base_fee(parent, header, rules)?;
        }
    }
    if rules.eip4844_blob_gas {
        check_blob_gas(parent, header, rules)?;
    }
    Ok(())
}

/// The rules a header satisfies on its own.
fn check_alone(header: &Header, rules: &HeaderRules) -> Result<(), HeaderError> {
    if rules.gas_used_within_limit && header.gas_used > header.gas_limit {
        return Err(HeaderError::GasUsedAboveLimit { used: header.gas_used, limit: header.gas_limit });
    }
    if rules.extra_data_limit && header.extra_data.len() > 32 {
        return Err(HeaderError::ExtraDataTooLong { len: header.extra_data.len() });
    }
    if rules.post_merge {
        if header.difficulty != U256::ZERO {
            return Err(HeaderError::NotPostMerge { field: "difficulty" });
        }
        if header.nonce != B64::ZERO {
            return Err(HeaderError::NotPostMerge { field: "nonce" });
        }
        if header.ommers_hash != EMPTY_OMMER_ROOT_HASH {
            return Err(HeaderError::NotPostMerge { field: "ommers_hash" });
        }
    }
    Ok(())
}

fn check_gas_limit(parent: u64, limit: u64) -> Result<(), HeaderError> {
    if limit.abs_diff(parent) >= parent / GAS_LIMIT_BOUND_DIVISOR || limit < MIN_GAS_LIMIT {
        return Err(HeaderError::GasLimitOutOfBounds { limit, parent });
    }
    Ok(())
}

fn check_timestamp(parent: u64, timestamp: u64, rule: TimestampRule) -> Result<(), HeaderError> {
    let ok = match rule {
        TimestampRule::Increasing => timestamp > parent,
        TimestampRule::NonDecreasing => timestamp >= parent,
        TimestampRule::Off => true,
    };
    if ok { Ok(()) } else { Err(HeaderError::TimestampBeforeParent { timestamp, parent }) }
}

fn check_base_fee(parent: &Header, header: &Header, rules: &HeaderRules) -> Result<(), HeaderError> {
    let expected = match parent.base_fee_per_gas {
        Some(_) => parent.next_block_base_fee(rules.base_fee_params()),
        // The London block itself starts at the initial base fee.
        None => header.base_fee_per_gas.map(|_| INITIAL_BASE_FEE),
    };
    if expected != header.base_fee_per_gas {
        return Err(HeaderError::BaseFeeMismatch { expected, actual: header.base_fee_per_gas });
    }
    Ok(())
}

fn check_blob_gas(parent: &Header, header: &Header, rules: &HeaderRules) -> Result<(), HeaderError> {
    let params = rules.blob_schedule.params();
    if let Some(used) = header.blob_gas_used {
        let max = params.max_blob_gas_per_block();
        if used > max || !used.is_multiple_of(DATA_GAS_PER_BLOB) {
            return Err(HeaderError::BlobGasUsedInvalid { used, max });
        }
    }
    let expected = match (header.excess_blob_gas, parent.excess_blob_gas) {
        // No blob fields: a pre-Cancun header (anvil's genesis carries them even on london).
        (None, _) => return Ok(()),
        // The Cancun block itself starts from zero.
        (Some(_), None) => Some(0),
        (_, Some(_)) => parent.next_block_excess_blob_gas(params),
    };
    if expected != header.excess_blob_gas {
        return Err(HeaderError::ExcessBlobGasMismatch { expected, actual: header.excess_blob_gas });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EthereumHardfork;

    fn genesis() -> Header {
        Header {
            gas_limit: 30_000_000,
            base_fee_per_gas: Some(INITIAL_BASE_FEE),
            timestamp: 1_700_000_000,
            ommers_hash: EMPTY_OMMER_ROOT_HASH,
            ..Default::default()
        }
    }

    fn child(parent: &SealedHeader, rules: &HeaderRules) -> SealedHeader {
        let header = Header {
            parent_hash: parent.hash(),
            number: parent.number + 1,
            timestamp: parent.timestamp + 12,
            base_fee_per_gas: parent.next_block_base_fee(rules.base_fee_params()),
            ..parent.inner().clone()
        };
        let hash = header.hash_slow();
        seal(header, hash).unwrap()
    }

    #[test]
    fn a_well_formed_child_passes_and_rules_name_their_breaks() {
        let rules = HeaderRules::ethereum();
        let g = genesis();
        let parent = seal(g.clone(), g.hash_slow()).unwrap();
        let good = child(&parent, &rules);
        check_against_parent(&parent, &good, &rules, Position::default()).unwrap();

        let broken = |f: &dyn Fn(&mut Header)| {
            let mut h = good.inner().clone();
            f(&mut h);
            let hash = h.hash_slow();
            check_against_parent(&parent, &seal(h, hash).unwrap(), &rules, Position::default()).unwrap_err().reason()
        };
        assert_eq!(broken(&|h| h.number += 1), "number");
        assert_eq!(broken(&|h| h.gas_used = h.gas_limit + 1), "gas_used");
        assert_eq!(broken(&|h| h.gas_limit += h.gas_limit / 1024), "gas_limit");
        assert_eq!(broken(&|h| h.timestamp = parent.timestamp), "timestamp");
        assert_eq!(broken(&|h| h.base_fee_per_gas = Some(7)), "base_fee");
        assert_eq!(broken(&|h| h.difficulty = U256::from(1)), "post_merge");
        assert_eq!(broken(&|h| h.extra_data = vec![0; 33].into()), "extra_data");
        assert_eq!(broken(&|h| h.excess_blob_gas = Some(1)), "excess_blob_gas");
        assert_eq!(broken(&|h| h.blob_gas_used = Some(1)), "blob_gas_used");
    }

    #[test]
    fn gas_limit_may_move_just_under_a_1024th() {
        // 30,000,000 / 1024 = 29,296 (rounded down): the move must stay below it.
        assert!(check_gas_limit(30_000_000, 30_000_000 + 29_295).is_ok());
        assert!(check_gas_limit(30_000_000, 30_000_000 + 29_296).is_err());
        assert!(check_gas_limit(30_000_000, 30_000_000 - 29_295).is_ok());
        assert!(check_gas_limit(30_000_000, 30_000_000 - 29_296).is_err());
        assert!(check_gas_limit(6000, 6000).is_ok());
        assert!(check_gas_limit(6000, 4999).is_err());
    }

    #[test]
    fn the_hash_must_match() {
        let g = genesis();
        let err = seal(g.clone(), B256::repeat_byte(1)).unwrap_err();
        assert_eq!(err.reason(), "hash_mismatch");
        assert!(seal(g.clone(), g.hash_slow()).is_ok());
    }

    /// A pre-London parent and its London child: the limit doubled, the base fee at 1 gwei.
    fn london_pair() -> (SealedHeader, Header) {
        let parent = Header { gas_limit: 15_000_000, difficulty: U256::from(10u64.pow(15)), ..genesis() };
        let parent = Header { base_fee_per_gas: None, ..parent };
        let parent = seal(parent.clone(), parent.hash_slow()).unwrap();
        let child = Header {
            parent_hash: parent.hash(),
            number: parent.number + 1,
            timestamp: parent.timestamp + 13,
            gas_limit: 30_000_000,
            base_fee_per_gas: Some(INITIAL_BASE_FEE),
            ..parent.inner().clone()
        };
        (parent, child)
    }

    fn check(parent: &SealedHeader, header: Header, rules: &HeaderRules) -> Result<(), HeaderError> {
        let hash = header.hash_slow();
        check_against_parent(parent, &seal(header, hash)?, rules, Position::default())
    }

    #[test]
    fn the_london_block_doubles_the_gas_limit_and_starts_the_base_fee_at_one_gwei() {
        let rules = HeaderRules::for_fork(EthereumHardfork::London);
        let (parent, child) = london_pair();
        check(&parent, child.clone(), &rules).unwrap();
        // Doubled, then moved by no more than a 1024th of the doubled limit.
        let too_far = Header { gas_limit: 30_000_000 + 30_000_000 / 1024, ..child.clone() };
        assert_eq!(check(&parent, too_far, &rules).unwrap_err().reason(), "gas_limit");
        let wrong_fee = Header { base_fee_per_gas: Some(INITIAL_BASE_FEE + 1), ..child.clone() };
        assert_eq!(check(&parent, wrong_fee, &rules).unwrap_err().reason(), "base_fee");
        // The same pair under proof-of-stake rules: a mined header is refused.
        let merged = HeaderRules::for_fork(EthereumHardfork::Paris);
        assert_eq!(check(&parent, child, &merged).unwrap_err().reason(), "post_merge");
    }

    #[test]
    fn a_pre_london_header_keeps_the_old_gas_limit_bound() {
        let rules = HeaderRules::for_fork(EthereumHardfork::Berlin);
        let (parent, child) = london_pair();
        let doubled_without_base_fee = Header { base_fee_per_gas: None, ..child };
        assert_eq!(check(&parent, doubled_without_base_fee, &rules).unwrap_err().reason(), "gas_limit");
    }

    #[test]
    fn each_fork_has_its_rules_and_mainnet_its_schedule() {
        use EthereumHardfork as F;
        let frontier = HeaderRules::for_fork(F::Frontier);
        assert!(!frontier.eip1559_base_fee && !frontier.post_merge && !frontier.eip4844_blob_gas);
        assert!(HeaderRules::for_fork(F::London).eip1559_base_fee);
        assert!(!HeaderRules::for_fork(F::London).post_merge);
        assert!(HeaderRules::for_fork(F::Paris).post_merge);
        assert!(!HeaderRules::for_fork(F::Shanghai).eip4844_blob_gas);
        assert_eq!(HeaderRules::for_fork(F::Cancun).blob_schedule, crate::BlobSchedule::Cancun);
        assert_eq!(HeaderRules::for_fork(F::Prague).blob_schedule, crate::BlobSchedule::Prague);
        assert_eq!(HeaderRules::for_fork(F::Bpo2).blob_schedule, crate::BlobSchedule::Bpo2);

        let mainnet = crate::ForkSchedule::mainnet();
        assert_eq!(mainnet.fork_at(46_147, 1_438_918_233), F::Frontier);
        assert_eq!(mainnet.fork_at(12_964_999, 1_628_166_812), F::Berlin);
        assert_eq!(mainnet.fork_at(12_965_000, 1_628_166_822), F::London);
        assert_eq!(mainnet.fork_at(15_537_393, 1_663_224_162), F::GrayGlacier);
        assert_eq!(mainnet.fork_at(15_537_394, 1_663_224_179), F::Paris);
        assert_eq!(mainnet.fork_at(17_034_870, 1_681_338_455), F::Shanghai);
        assert_eq!(mainnet.fork_at(19_426_587, 1_710_338_135), F::Cancun);
    }
}
