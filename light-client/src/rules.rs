//! Per-chain switches for the header rules and for finality, and the rules of each
//! Ethereum fork with the schedule that says which fork a header belongs to.

use alloy::eips::{eip1559::BaseFeeParams, eip7840::BlobParams};
pub use alloy_hardforks::EthereumHardfork;
use alloy_hardforks::ForkCondition;
use serde::{Deserialize, Serialize};

/// How a header's timestamp must relate to its parent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampRule {
    /// Strictly after the parent (Ethereum).
    Increasing,
    /// Not before the parent (anvil under automine mines several blocks a second).
    NonDecreasing,
    /// Not checked.
    Off,
}

/// Which EIP-4844/7840 blob parameters the chain's current fork uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobSchedule {
    /// Cancun: target 3, max 6.
    Cancun,
    /// Prague: target 6, max 9.
    Prague,
    /// Osaka: Prague's counts with the EIP-7918 reserve price.
    Osaka,
    /// The first blob-parameter-only fork after Osaka.
    Bpo1,
    /// The second.
    Bpo2,
}

impl BlobSchedule {
    /// The parameters alloy knows for this schedule.
    pub fn params(self) -> BlobParams {
        match self {
            Self::Cancun => BlobParams::cancun(),
            Self::Prague => BlobParams::prague(),
            Self::Osaka => BlobParams::osaka(),
            Self::Bpo1 => BlobParams::bpo1(),
            Self::Bpo2 => BlobParams::bpo2(),
        }
    }
}

/// The consensus rules a header must satisfy against its parent, each switchable.
///
/// The hash check (`keccak256(rlp(header)) == hash`) and the parent link are not
/// switchable: without them nothing else means anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeaderRules {
    /// `number == parent.number + 1`.
    pub sequential_numbers: bool,
    /// `gas_used <= gas_limit`.
    pub gas_used_within_limit: bool,
    /// The gas limit moves by less than 1/1024 of the parent's and stays >= 5000.
    pub gas_limit_bounds: bool,
    /// How timestamps must move.
    pub timestamp: TimestampRule,
    /// The base fee follows EIP-1559 from the parent's.
    pub eip1559_base_fee: bool,
    /// Forgive block 1's base fee when copied from genesis, and the base fee of the first
    /// block of a new branch: anvil breaks EIP-1559 in both places.
    pub anvil_base_fee_quirks: bool,
    /// Blob gas used and excess blob gas follow EIP-4844 where present.
    pub eip4844_blob_gas: bool,
    /// Blob parameters for the excess blob gas rule.
    pub blob_schedule: BlobSchedule,
    /// Proof-of-stake headers: zero difficulty and nonce, no ommers.
    pub post_merge: bool,
    /// `extra_data` is at most 32 bytes.
    pub extra_data_limit: bool,
}

impl HeaderRules {
    /// Every rule, as Ethereum mainnet keeps them (blob parameters of BPO2, mainnet's
    /// schedule since January 2026).
    pub const fn ethereum() -> Self {
        Self {
            sequential_numbers: true,
            gas_used_within_limit: true,
            gas_limit_bounds: true,
            timestamp: TimestampRule::Increasing,
            eip1559_base_fee: true,
            anvil_base_fee_quirks: false,
            eip4844_blob_gas: true,
            blob_schedule: BlobSchedule::Bpo2,
            post_merge: true,
            extra_data_limit: true,
        }
    }

    /// Ethereum's rules with anvil's deliberate departures forgiven (equal timestamps,
    /// the copied base fee of block 1 and of a reorg's first block), and the blob
    /// parameters of anvil's default fork (Osaka with BPO1).
    pub const fn anvil() -> Self {
        Self {
            timestamp: TimestampRule::NonDecreasing,
            anvil_base_fee_quirks: true,
            blob_schedule: BlobSchedule::Bpo1,
            ..Self::ethereum()
        }
    }

    /// Ethereum's rules at `fork`: base fees from London (the London block itself starts
    /// at 1 gwei, its parent's gas limit counting double), blob gas from Cancun with
    /// each fork's blob parameters, proof-of-stake headers from Paris (the merge).
    pub fn for_fork(fork: EthereumHardfork) -> Self {
        use EthereumHardfork as F;
        let blob_schedule = match fork {
            F::Prague => BlobSchedule::Prague,
            F::Osaka => BlobSchedule::Osaka,
            F::Bpo1 => BlobSchedule::Bpo1,
            f if f >= F::Bpo2 => BlobSchedule::Bpo2,
            _ => BlobSchedule::Cancun,
        };
        Self {
            eip1559_base_fee: fork >= F::London,
            eip4844_blob_gas: fork >= F::Cancun,
            blob_schedule,
            post_merge: fork >= F::Paris,
            ..Self::ethereum()
        }
    }

    /// EIP-1559 parameters (Ethereum's).
    pub(crate) fn base_fee_params(&self) -> BaseFeeParams {
        BaseFeeParams::ethereum()
    }
}

impl Default for HeaderRules {
    fn default() -> Self {
        Self::ethereum()
    }
}

/// When a header becomes final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finality {
    /// Once this many blocks sit on top of it on the canonical branch.
    Confirmations(u64),
    /// When the chain's `finalized` block tag reaches it (fed to the client).
    Tag,
}

/// Which fork a chain runs at each block: activations by block number (to the merge)
/// and by timestamp (after it), as alloy's hardfork types give them.
#[derive(Debug, Clone)]
pub struct ForkSchedule {
    /// Every fork with its activation, in order.
    forks: Vec<(EthereumHardfork, ForkCondition)>,
}

impl ForkSchedule {
    /// Ethereum mainnet's schedule.
    pub fn mainnet() -> Self {
        Self::new(EthereumHardfork::mainnet())
    }

    /// A schedule from forks and their activations, in any order.
    pub fn new(forks: impl IntoIterator<Item = (EthereumHardfork, ForkCondition)>) -> Self {
        let mut forks: Vec<_> = forks.into_iter().collect();
        forks.sort_by_key(|(fork, _)| *fork);
        Self { forks }
    }

    /// The newest fork active at block `number` with `timestamp`.
    pub fn fork_at(&self, number: u64, timestamp: u64) -> EthereumHardfork {
        self.forks
            .iter()
            .rev()
            .find(|(_, condition)| condition.active_at_timestamp_or_number(timestamp, number))
            .map_or(EthereumHardfork::Frontier, |(fork, _)| *fork)
    }

    /// The rules a header at block `number` with `timestamp` must keep.
    pub fn rules_at(&self, number: u64, timestamp: u64) -> HeaderRules {
        HeaderRules::for_fork(self.fork_at(number, timestamp))
    }
}
