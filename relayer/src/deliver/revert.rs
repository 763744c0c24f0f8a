//! Naming a failed delivery: the Mailbox's, the bridge's or the recipient's error a
//! revert carries, as a metric label and a readable reason.

use alloy::{primitives::Bytes, sol_types::SolInterface};
use ferry_executors::{TxOutcome, TxStatus};
use ferry_messages::{
    contracts::{Mailbox, TokenBridge},
    describe_revert,
};

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

/// Names a revert by the error it carries: a metric label from the Mailbox's or the
/// bridge's errors, and the error's name and arguments as the reason.
pub(super) fn decode_revert(data: &[u8], fallback: &'static str) -> (&'static str, String) {
    let Some(reason) = describe_revert(data) else {
        return (
            fallback,
            if data.is_empty() {
                "reverted without data".into()
            } else {
                format!("revert data {}", Bytes::copy_from_slice(data))
            },
        );
    };
    let label = if let Ok(e) = Mailbox::MailboxErrors::abi_decode(data) {
        match e {
            Mailbox::MailboxErrors::AlreadyDelivered(_) => "AlreadyDelivered",
            Mailbox::MailboxErrors::InvalidRecipient(_) => "InvalidRecipient",
            Mailbox::MailboxErrors::UnknownOrigin(_) => "UnknownOrigin",
            Mailbox::MailboxErrors::InsufficientSignatures(_)
            | Mailbox::MailboxErrors::InvalidSignature(_)
            | Mailbox::MailboxErrors::SignersNotAscending(_)
            | Mailbox::MailboxErrors::NotValidator(_) => "bad_signatures",
            _ => "mailbox",
        }
    } else if let Ok(e) = TokenBridge::TokenBridgeErrors::abi_decode(data) {
        match e {
            TokenBridge::TokenBridgeErrors::RateLimited(_) => RATE_LIMITED,
            _ => "bridge",
        }
    } else {
        // The recipient's own error, a require message or a panic.
        "recipient"
    };
    (label, reason)
}
