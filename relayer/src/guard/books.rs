//! The accountant's books: per token route (`origin -> destination`), what the origin's
//! bridge locked or burned for it and what the destination's bridge released or minted
//! from it, summed from the bridges' events in final blocks whose receipts were proven
//! against the verified header. The rule a validator signs by: a transfer may not take a
//! route's released past its locked, nor leave a chain whose own tokens are unbacked.

use std::collections::BTreeMap;

use alloy::{
    consensus::ReceiptEnvelope,
    primitives::{Address, U256},
    sol_types::SolEvent,
};
use ferry_messages::contracts::TokenBridge;
use serde::{Deserialize, Serialize};

/// One route's books, in token base units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Books {
    /// Locked (collateral side) or burned (synthetic side) by the origin's bridge.
    pub locked: U256,
    /// Released or minted by the destination's bridge.
    pub released: U256,
}

impl Books {
    /// Released beyond locked: tokens on the destination that nothing locked.
    pub fn unbacked(&self) -> U256 {
        self.released.saturating_sub(self.locked)
    }

    /// The stored form: locked then released, 32 bytes each, big-endian.
    pub(crate) fn to_bytes(self) -> [u8; 64] {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&self.locked.to_be_bytes::<32>());
        bytes[32..].copy_from_slice(&self.released.to_be_bytes::<32>());
        bytes
    }

    /// Reads [`Books::to_bytes`].
    pub(crate) fn from_bytes(bytes: &[u8; 64]) -> Self {
        Self { locked: U256::from_be_slice(&bytes[..32]), released: U256::from_be_slice(&bytes[32..]) }
    }
}

/// Which side of a route a bridge event books.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `SentTransferRemote` on the origin.
    Locked,
    /// `ReceivedTransferRemote` on the destination.
    Released,
}

/// A token movement one bridge reported in a final block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// The route's origin chain id.
    pub origin: u32,
    /// The route's destination chain id.
    pub destination: u32,
    /// The side it books.
    pub side: Side,
    /// In base units.
    pub amount: U256,
}

/// The bridge `bridge`'s transfer events on chain `chain` in a block's (verified) receipts.
pub fn flows(chain: u32, bridge: Address, receipts: &[ReceiptEnvelope]) -> Vec<Flow> {
    let logs = receipts.iter().flat_map(|r| r.logs()).filter(|log| log.address == bridge);
    logs.filter_map(|log| match log.topics().first() {
        Some(&TokenBridge::SentTransferRemote::SIGNATURE_HASH) => {
            let sent = TokenBridge::SentTransferRemote::decode_log(log).ok()?;
            Some(Flow { origin: chain, destination: sent.destination, side: Side::Locked, amount: sent.amount })
        }
        Some(&TokenBridge::ReceivedTransferRemote::SIGNATURE_HASH) => {
            let received = TokenBridge::ReceivedTransferRemote::decode_log(log).ok()?;
            Some(Flow { origin: received.origin, destination: chain, side: Side::Released, amount: received.amount })
        }
        _ => None,
    })
    .collect()
}

/// Why a transfer may not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Shortfall {
    /// It would take its own route's released past locked.
    #[error(
        "releasing {amount} would take the route's released to {} past its locked {} (released so far {})",
        books.released.saturating_add(*amount), books.locked, books.released
    )]
    Route {
        /// The transfer's amount.
        amount: U256,
        /// Its route's books.
        books: Books,
    },
    /// The tokens it moves out of its origin are unbacked: the reverse route released
    /// more on the origin than was ever locked for it.
    #[error(
        "the origin holds {} unbacked tokens: the reverse route released {} but locked {}",
        reverse.unbacked(), reverse.released, reverse.locked
    )]
    Unbacked {
        /// The reverse route's books.
        reverse: Books,
    },
}

impl Shortfall {
    /// Whether the reverse route's books decide it (read from the destination chain's
    /// events, which may lag while that chain's watcher catches up).
    pub fn needs_reverse(&self) -> bool {
        matches!(self, Shortfall::Unbacked { .. })
    }
}

/// Every route's books.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    routes: BTreeMap<(u32, u32), Books>,
}

impl Ledger {
    /// A ledger holding `routes`.
    pub fn new(routes: BTreeMap<(u32, u32), Books>) -> Self {
        Self { routes }
    }

    /// Books one flow.
    pub fn add(&mut self, flow: &Flow) {
        let books = self.routes.entry((flow.origin, flow.destination)).or_default();
        match flow.side {
            Side::Locked => books.locked = books.locked.saturating_add(flow.amount),
            Side::Released => books.released = books.released.saturating_add(flow.amount),
        }
    }

    /// The books of the route `origin -> destination`.
    pub fn route(&self, origin: u32, destination: u32) -> Books {
        self.routes.get(&(origin, destination)).copied().unwrap_or_default()
    }

    /// Every route with books.
    pub fn routes(&self) -> &BTreeMap<(u32, u32), Books> {
        &self.routes
    }

    /// Whether a transfer of `amount` from `origin` to `destination` may be signed: it
    /// keeps the route's released within its locked (its own lock is booked by then), and
    /// the origin's tokens are backed (the reverse route released no more than it locked).
    pub fn check(&self, origin: u32, destination: u32, amount: U256) -> Result<(), Shortfall> {
        let books = self.route(origin, destination);
        if books.released.saturating_add(amount) > books.locked {
            return Err(Shortfall::Route { amount, books });
        }
        let reverse = self.route(destination, origin);
        if reverse.released > reverse.locked {
            return Err(Shortfall::Unbacked { reverse });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(origin: u32, destination: u32, side: Side, amount: u64) -> Flow {
        Flow { origin, destination, side, amount: U256::from(amount) }
    }

    #[test]
    fn a_transfer_is_signed_only_within_what_its_route_locked_and_only_from_backed_tokens() {
        let mut ledger = Ledger::default();
        ledger.add(&flow(1, 2, Side::Locked, 100));
        assert_eq!(ledger.check(1, 2, U256::from(100)), Ok(()));
        ledger.add(&flow(1, 2, Side::Released, 60));
        assert_eq!(ledger.check(1, 2, U256::from(40)), Ok(()));
        let over = ledger.check(1, 2, U256::from(41)).unwrap_err();
        assert_eq!(over, Shortfall::Route { amount: U256::from(41), books: ledger.route(1, 2) });
        assert!(over.to_string().contains("to 101 past its locked 100"), "{over}");
        // Chain 2 minted 1,000 that chain 1 never locked: what leaves chain 2 is refused.
        ledger.add(&flow(1, 2, Side::Released, 1_000));
        ledger.add(&flow(2, 1, Side::Locked, 500));
        let unbacked = ledger.check(2, 1, U256::from(500)).unwrap_err();
        assert!(unbacked.needs_reverse());
        assert_eq!(ledger.route(1, 2).unbacked(), U256::from(960));
        assert!(unbacked.to_string().contains("960 unbacked"), "{unbacked}");
    }

    #[test]
    fn books_round_trip_through_their_stored_form() {
        let books = Books { locked: U256::MAX, released: U256::from(7) };
        assert_eq!(Books::from_bytes(&books.to_bytes()), books);
    }
}
