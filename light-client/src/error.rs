//! The light client's errors, in the domain's words and with the offending values.

use alloy::primitives::B256;
use serde::{Deserialize, Serialize};

/// Why a header was rejected. [`reason`](Self::reason) is the short label metrics use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The header does not hash to the hash it came with.
    #[error("header {number} hashes to {actual}, not the claimed {claimed}")]
    HashMismatch {
        /// Its number.
        number: u64,
        /// The hash it came with.
        claimed: B256,
        /// `keccak256(rlp(header))`.
        actual: B256,
    },
    /// Its parent is neither final nor in the window.
    #[error("header {number} ({hash}) has unknown parent {parent}")]
    UnknownParent {
        /// Its number.
        number: u64,
        /// Its hash.
        hash: B256,
        /// The parent it names.
        parent: B256,
    },
    /// Its number is not its parent's plus one.
    #[error("header number {number} does not follow parent number {parent}")]
    NumberNotSequential {
        /// Its number.
        number: u64,
        /// The parent's.
        parent: u64,
    },
    /// More gas used than the limit.
    #[error("gas used {used} exceeds gas limit {limit}")]
    GasUsedAboveLimit {
        /// Gas used.
        used: u64,
        /// Gas limit.
        limit: u64,
    },
    /// The gas limit moved by 1/1024 of the parent's or more, or fell below 5000.
    #[error("gas limit {limit} is out of bounds of parent gas limit {parent}")]
    GasLimitOutOfBounds {
        /// Gas limit.
        limit: u64,
        /// The parent's.
        parent: u64,
    },
    /// The timestamp goes back (or stands still where it must move).
    #[error("timestamp {timestamp} is not after parent timestamp {parent}")]
    TimestampBeforeParent {
        /// Its timestamp.
        timestamp: u64,
        /// The parent's.
        parent: u64,
    },
    /// The base fee is not what EIP-1559 gives from the parent.
    #[error("base fee {actual:?} differs from the expected {expected:?}")]
    BaseFeeMismatch {
        /// What EIP-1559 gives.
        expected: Option<u64>,
        /// What the header says.
        actual: Option<u64>,
    },
    /// Blob gas used is over the block maximum or not whole blobs.
    #[error("blob gas used {used} is invalid (maximum {max})")]
    BlobGasUsedInvalid {
        /// Blob gas used.
        used: u64,
        /// The block maximum.
        max: u64,
    },
    /// Excess blob gas is not what EIP-4844 gives from the parent.
    #[error("excess blob gas {actual:?} differs from the expected {expected:?}")]
    ExcessBlobGasMismatch {
        /// What EIP-4844 gives.
        expected: Option<u64>,
        /// What the header says.
        actual: Option<u64>,
    },
    /// A proof-of-stake header with difficulty, a nonce or ommers.
    #[error("post-merge header has {field} set")]
    NotPostMerge {
        /// The offending field.
        field: &'static str,
    },
    /// More than 32 bytes of extra data.
    #[error("extra data is {len} bytes, more than 32")]
    ExtraDataTooLong {
        /// Its length.
        len: usize,
    },
    /// A header at or below the final height that is not the final header there.
    #[error("header {number} ({hash}) is below finality and not on the final chain")]
    BelowFinality {
        /// Its number.
        number: u64,
        /// Its hash.
        hash: B256,
    },
    /// Too many non-final headers held already.
    #[error("non-final window is full ({limit} headers)")]
    WindowFull {
        /// The window's limit.
        limit: usize,
    },
}

impl HeaderError {
    /// A short stable label for metrics (`ferry_light_client_headers_rejected_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::HashMismatch { .. } => "hash_mismatch",
            Self::UnknownParent { .. } => "unknown_parent",
            Self::NumberNotSequential { .. } => "number",
            Self::GasUsedAboveLimit { .. } => "gas_used",
            Self::GasLimitOutOfBounds { .. } => "gas_limit",
            Self::TimestampBeforeParent { .. } => "timestamp",
            Self::BaseFeeMismatch { .. } => "base_fee",
            Self::BlobGasUsedInvalid { .. } => "blob_gas_used",
            Self::ExcessBlobGasMismatch { .. } => "excess_blob_gas",
            Self::NotPostMerge { .. } => "post_merge",
            Self::ExtraDataTooLong { .. } => "extra_data",
            Self::BelowFinality { .. } => "below_finality",
            Self::WindowFull { .. } => "window_full",
        }
    }
}

/// A reorg that would replace a final header: the chain is halted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "safety fault on chain {chain_id}: block {number} is final as {final_hash}, but {conflicting_hash} builds on the final chain at that height"
)]
pub struct SafetyFault {
    /// The chain.
    pub chain_id: u64,
    /// The height where the two disagree.
    pub number: u64,
    /// The header ferry holds final there.
    pub final_hash: B256,
    /// The header that would replace it.
    pub conflicting_hash: B256,
}

/// What the light client refuses, as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LightClientError {
    /// A header broke a rule.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A reorg below finality; the chain is now halted.
    #[error(transparent)]
    SafetyFault(#[from] SafetyFault),
    /// The chain halted earlier and accepts nothing until an operator clears it.
    #[error("chain {chain_id} is halted: {fault}")]
    Halted {
        /// The chain.
        chain_id: u64,
        /// The fault that halted it.
        fault: SafetyFault,
    },
    /// `finalize` named a header that is not on the canonical branch.
    #[error("cannot finalize {hash}: not a canonical header in the window")]
    NotCanonical {
        /// The header named.
        hash: B256,
    },
    /// The checkpoint store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LightClientError {
    /// A short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Header(e) => e.reason(),
            Self::SafetyFault(_) => "safety_fault",
            Self::Halted { .. } => "halted",
            Self::NotCanonical { .. } => "not_canonical",
            Self::Store(_) => "store",
        }
    }
}

/// Why a proof does not prove what it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The Merkle-Patricia proof does not lead from the root to the value.
    #[error("{what} proof does not verify against root {root}: {reason}")]
    Trie {
        /// Receipt, account or storage.
        what: &'static str,
        /// The root checked against.
        root: B256,
        /// What the trie verifier said.
        reason: String,
    },
    /// The receipts, as given, do not build the header's receipts root.
    #[error("receipts build root {actual}, header says {expected}")]
    ReceiptsRootMismatch {
        /// The header's `receiptsRoot`.
        expected: B256,
        /// What the receipts build.
        actual: B256,
    },
    /// No receipt at that index.
    #[error("no receipt at index {index} (block has {count})")]
    NoSuchReceipt {
        /// The index asked for.
        index: u64,
        /// Receipts in the block.
        count: usize,
    },
    /// The proven header is not the trusted one.
    #[error("header hashes to {actual}, not the trusted {trusted}")]
    UntrustedHeader {
        /// The trusted hash.
        trusted: B256,
        /// The header's hash.
        actual: B256,
    },
    /// The receipt holds no log at that index.
    #[error("receipt has no log {index} (it has {count})")]
    NoSuchLog {
        /// The index asked for.
        index: u64,
        /// Logs in the receipt.
        count: usize,
    },
    /// The log is not a `Dispatch` of the expected Mailbox carrying this message.
    #[error("log does not carry the message: {reason}")]
    LogMismatch {
        /// What differs.
        reason: String,
    },
    /// Bytes that do not decode.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
}

/// Why a quorum certificate does not stand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitteeError {
    /// A validator set that cannot reach its own threshold, or with repeats.
    #[error("invalid validator set: {reason}")]
    InvalidSet {
        /// What is wrong.
        reason: String,
    },
    /// The certificate names another block than the attestation.
    #[error("certificate is for block {certificate}, attestation for {attestation}")]
    BlockMismatch {
        /// The certificate's block.
        certificate: B256,
        /// The attestation's block.
        attestation: B256,
    },
    /// Fewer signatures than the threshold.
    #[error("{count} signatures, threshold is {threshold}")]
    InsufficientSignatures {
        /// Signatures present.
        count: usize,
        /// Signatures needed.
        threshold: usize,
    },
    /// A signature with `s` in the upper half (malleable; the Mailbox refuses it).
    #[error("signature {index} has a high s value")]
    HighS {
        /// Its position.
        index: usize,
    },
    /// A signature that recovers no signer.
    #[error("signature {index} recovers no signer: {reason}")]
    Recovery {
        /// Its position.
        index: usize,
        /// What recovery said.
        reason: String,
    },
    /// Signers not strictly ascending: a repeat or a disorder.
    #[error("signer {signer} does not follow {previous} in ascending order (repeated or unordered)")]
    SignersNotAscending {
        /// The signer before.
        previous: alloy::primitives::Address,
        /// This signer.
        signer: alloy::primitives::Address,
    },
    /// A signer outside the set.
    #[error("{signer} is not a validator")]
    NotValidator {
        /// The signer.
        signer: alloy::primitives::Address,
    },
    /// A key that is not a secp256k1 scalar.
    #[error("invalid validator key")]
    InvalidKey,
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// The checkpoint store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// redb said no.
    #[error("checkpoint store: {0}")]
    Database(String),
    /// A stored record that does not decode or does not hash right.
    #[error("checkpoint store holds a corrupt {what}: {reason}")]
    Corrupt {
        /// The record.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        Self::Database(e.into().to_string())
    }
}

/// A header source (RPC) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The request failed.
    #[error("{what}: {reason}")]
    Request {
        /// The request.
        what: String,
        /// The error.
        reason: String,
    },
    /// The source answered with something that does not parse as the answer asked for.
    #[error("{what}: malformed answer: {reason}")]
    Malformed {
        /// The request.
        what: String,
        /// What would not parse.
        reason: String,
    },
    /// The source has no such header.
    #[error("{0} not found")]
    NotFound(String),
    /// The source is several endpoints and too few of them agree on the answer.
    #[error("{what}: endpoints disagree: {reason}")]
    Disagreement {
        /// The request.
        what: String,
        /// Who said what.
        reason: String,
    },
    /// Syncing hit a light-client refusal.
    #[error(transparent)]
    LightClient(#[from] LightClientError),
}
