//! A transfer this process's validators hold unsigned, as the store keeps it and the API
//! shows it.

use alloy::primitives::{Address, B256, Bytes, U256};
use ferry_messages::{Message, wire::OriginBlock};
use serde::{Deserialize, Serialize};

/// Why a transfer is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HoldReason {
    /// The governor's delay for a large transfer: signed at `until_ms` (ms since the
    /// epoch) unless an operator releases or cancels it first.
    Delay {
        /// When the delay ends.
        until_ms: u64,
    },
    /// The accountant refuses it: signing would break its route's books.
    Accountant {
        /// What the books say.
        shortfall: String,
    },
}

impl HoldReason {
    /// The metric label: `delay` or `accountant`.
    pub fn label(&self) -> &'static str {
        match self {
            HoldReason::Delay { .. } => "delay",
            HoldReason::Accountant { .. } => "accountant",
        }
    }
}

/// A held transfer: the message and what signing it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The message id.
    pub id: B256,
    /// Origin chain id.
    pub origin: u32,
    /// Destination chain id.
    pub destination: u32,
    /// The amount transferred, in base units.
    pub amount: U256,
    /// Why it is held.
    pub reason: HoldReason,
    /// When it was first held (ms since the epoch).
    pub held_at_ms: u64,
    /// The packed message.
    pub message: Bytes,
    /// The origin Mailbox.
    pub origin_mailbox: Address,
    /// The final origin block holding its `Dispatch` log.
    pub block: OriginBlock,
}

impl Held {
    /// The message, unpacked.
    pub fn decoded(&self) -> Option<Message> {
        Message::decode(&self.message).ok()
    }
}
