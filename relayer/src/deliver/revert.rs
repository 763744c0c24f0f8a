//! Naming a failed delivery: the Mailbox's, the bridge's or the recipient's error a
//! revert carries, as a metric label and a readable reason.

use alloy::{primitives::Bytes, sol_types::SolInterface};
use ferry_executors::{TxOutcome, TxStatus};
use ferry_messages::contracts::{Mailbox, TestRecipient, TokenBridge};

/// The label of a delivery the recipient bridge's inbound rate limit refuses for now:
/// it waits for the bucket to refill rather than being parked.
pub(super) const RATE_LIMITED: &str = "rate_limited";

/// A metric label and a readable reason for a failed delivery.
pub(super) fn revert_reason(outcome: &TxOutcome) -> (&'static str, String) {
    match &outcome.status {
        TxStatus::Halt { reason } => ("halt", reason.clone()),
        TxStatus::Revert { reason } => {
            let (label, decoded) = decode_revert(&outcome.output, "revert");
            if label == "revert" { (label, reason.clone()) } else { (label, decoded) }
        }
        _ => ("revert", format!("{:?}", outcome.status)),
    }
}

/// Names a revert by the Mailbox's or the bridge's error it carries.
pub(super) fn decode_revert(data: &[u8], fallback: &'static str) -> (&'static str, String) {
    if let Ok(e) = Mailbox::MailboxErrors::abi_decode(data) {
        let label = match &e {
            Mailbox::MailboxErrors::AlreadyDelivered(_) => "AlreadyDelivered",
            Mailbox::MailboxErrors::InvalidRecipient(_) => "InvalidRecipient",
            Mailbox::MailboxErrors::UnknownOrigin(_) => "UnknownOrigin",
            Mailbox::MailboxErrors::InsufficientSignatures(_)
            | Mailbox::MailboxErrors::InvalidSignature(_)
            | Mailbox::MailboxErrors::SignersNotAscending(_)
            | Mailbox::MailboxErrors::NotValidator(_) => "bad_signatures",
            _ => "mailbox",
        };
        return (label, format!("{e:?}"));
    }
    if let Ok(e) = TokenBridge::TokenBridgeErrors::abi_decode(data) {
        let label = match &e {
            TokenBridge::TokenBridgeErrors::RateLimited(_) => RATE_LIMITED,
            _ => "bridge",
        };
        return (label, format!("{e:?}"));
    }
    if let Ok(e) = TestRecipient::TestRecipientErrors::abi_decode(data) {
        return ("recipient", format!("{e:?}"));
    }
    if let Ok(text) = <alloy::sol_types::Revert as alloy::sol_types::SolError>::abi_decode(data) {
        return ("recipient", text.reason);
    }
    (
        fallback,
        if data.is_empty() {
            "reverted without data".into()
        } else {
            format!("revert data {}", Bytes::copy_from_slice(data))
        },
    )
}
