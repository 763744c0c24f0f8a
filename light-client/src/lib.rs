//! ferry's light client: which headers of a chain are true, which are final, and what
//! they prove.
//!
//! Split by concern, after Helios:
//! - [`verify`]: one header on its own and against its parent ([`HeaderRules`], each rule
//!   switchable per chain because anvil breaks some on purpose; the rules of each
//!   Ethereum fork, and [`ForkSchedule`] to say which fork a header is under).
//! - [`ForkChoice`]: a bounded window of non-final headers, the longest valid branch as
//!   head, finality by confirmations or by the chain's `finalized` tag, reorg events, and
//!   the safety fault when a reorg would replace a final header.
//! - [`proofs`]: receipt proofs against `receiptsRoot`, account and storage proofs
//!   against `stateRoot`, and [`ProvenMessage`], a message checkable offline against
//!   nothing but a trusted header.
//! - [`committee`]: validator keys signing attestations with k256, and
//!   [`ValidatorSet`] checking a [`QuorumCertificate`](ferry_messages::QuorumCertificate)
//!   the way the Mailbox does.
//! - [`CheckpointStore`]: final headers, the finality cursor and the halted state in redb.
//! - [`bench`]: the throughput measurements behind `ferry bench light-client`.
//! - [`LightClient`] ties them together; [`HeaderSource`] is the seam to a chain's RPC
//!   and [`sync`] walks a client up to a target block.

pub mod bench;
mod client;
pub mod committee;
mod error;
mod fork_choice;
pub mod proofs;
mod rules;
mod source;
mod store;
pub mod verify;

pub use client::{LightClient, LightClientConfig};
pub use committee::{ValidatorKey, ValidatorSet};
pub use error::{CommitteeError, HeaderError, LightClientError, ProofError, SafetyFault, SourceError, StoreError};
pub use fork_choice::{Event, ForkChoice, Reorg};
pub use proofs::{DispatchedMessage, ProvenMessage, ReceiptProof, ReceiptTrie, dispatched};
pub use rules::{BlobSchedule, EthereumHardfork, Finality, ForkSchedule, HeaderRules, TimestampRule};
pub use source::{HeaderSource, RpcHeaderSource, sync};
pub use store::CheckpointStore;

/// A header together with its hash, which the light client has checked.
pub type SealedHeader = alloy::consensus::Sealed<alloy::consensus::Header>;
