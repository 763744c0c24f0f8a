//! The ferry message and everything that names, signs or carries it.
//!
//! - [`Message`]: the packed cross-chain message of the Mailbox contract and its id,
//!   `keccak256` of the packed bytes.
//! - [`Attestation`]: the statement a validator signs about a message (its origin, the
//!   origin Mailbox, its destination, the origin block and its id), and
//!   [`QuorumCertificate`], the signatures that the destination Mailbox takes as
//!   `metadata`.
//! - [`wire`]: the NATS subjects and the envelopes validators and relayers exchange.
//! - [`contracts`]: `sol!` bindings generated from the committed contract artifacts
//!   under `contracts/out`; [`describe_revert`] names what they revert with.
//!
//! Test vectors shared with the Solidity contracts live in
//! `testdata/message_vectors.json`.

mod attestation;
pub mod contracts;
mod error;
mod message;
mod revert;
pub mod wire;

pub use attestation::{Attestation, QuorumCertificate, SIGNATURE_LEN};
pub use error::{MessageError, MetadataError};
pub use message::{HEADER_LEN, MAX_BODY_LEN, Message, MessageId, VERSION};
pub use revert::{describe_revert, explain};
