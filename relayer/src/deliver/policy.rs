//! The relayer's policy (`[relayer.policy]`): which messages it carries (allow and deny
//! lists of origins, destinations, senders and recipients) and whether their delivery
//! was paid for at the origin's GasPaymaster. A message the lists refuse is parked for
//! good; one not paid for enough waits in `awaiting_payment` and costs nothing: no
//! prediction, no transaction.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use alloy::primitives::{Address, B256, U256};
use ferry_messages::{Message, contracts::GasPaymaster};
use futures_util::{StreamExt, stream};

use super::{DeliverError, Item};
use crate::{Context, PolicyConfig};

/// Payment reads in flight at once, per round.
const CONCURRENT_READS: usize = 16;

/// Payments remembered as enough (a message is delivered once; the map is cleared
/// past this size).
const REMEMBERED: usize = 100_000;

/// What a message paid for its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Payment {
    /// Destination gas paid for.
    pub gas: U256,
    /// Native token of the origin paid, in wei.
    pub wei: U256,
}

/// The policy of one deliverer.
pub(super) struct Policy {
    context: Arc<Context>,
    config: PolicyConfig,
    /// Messages known to have paid enough, with what they paid.
    paid: Mutex<HashMap<B256, Payment>>,
}

impl Policy {
    pub(super) fn new(context: Arc<Context>) -> Self {
        let config = context.config.relayer.policy.clone();
        Self { context, config, paid: Mutex::new(HashMap::new()) }
    }

    /// Why the lists refuse `message`, if they do.
    pub(super) fn refusal(&self, message: &Message) -> Option<String> {
        let config = &self.config;
        let origin = self.context.chain_label(message.origin.into());
        let destination = self.context.chain_label(message.destination.into());
        if let Some(why) = listed("origin", &origin, &config.allow_origins, &config.deny_origins) {
            return Some(why);
        }
        if let Some(why) = listed("destination", &destination, &config.allow_destinations, &config.deny_destinations) {
            return Some(why);
        }
        let sender = message.sender_address().unwrap_or(Address::ZERO);
        if let Some(why) = listed("sender", &sender, &config.allow_senders, &config.deny_senders) {
            return Some(why);
        }
        let recipient = message.recipient_address().unwrap_or(Address::ZERO);
        listed("recipient", &recipient, &config.allow_recipients, &config.deny_recipients)
    }

    /// Whether payment is required at all.
    pub(super) fn requires_payment(&self) -> bool {
        self.config.require_payment
    }

    /// The gas a delivery must have paid for, given the gas one is predicted to take.
    pub(super) fn gas_needed(&self, predicted: u64) -> U256 {
        U256::from(predicted) * U256::from(self.config.min_payment_percent) / U256::from(100)
    }

    /// What each item paid, read from its origin's paymaster (remembered once enough);
    /// an item from a chain without a paymaster paid nothing.
    pub(super) async fn payments(&self, items: &[Item], needed: U256) -> Result<Vec<Payment>, DeliverError> {
        let reads = items.iter().map(|item| self.payment(&item.message, needed));
        let answers: Vec<_> = stream::iter(reads).buffered(CONCURRENT_READS).collect().await;
        answers.into_iter().collect()
    }

    async fn payment(&self, message: &Message, needed: U256) -> Result<Payment, DeliverError> {
        let id = message.id();
        if let Some(known) = self.known(&id) {
            return Ok(known);
        }
        let Some((name, chain)) = self.context.config.chain_by_id(message.origin.into()) else {
            return Ok(Payment::default());
        };
        let Some(paymaster) = chain.paymaster else { return Ok(Payment::default()) };
        let provider = self.context.endpoints(name, chain).provider(None);
        let paymaster = GasPaymaster::new(paymaster, provider);
        let (gas, wei) = tokio::try_join!(paymaster.gasPaid(id).call(), paymaster.paid(id).call())
            .map_err(|e| DeliverError::Payment { origin: name.to_string(), reason: e.to_string() })?;
        let payment = Payment { gas, wei };
        if gas >= needed {
            let mut paid = self.paid.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if paid.len() >= REMEMBERED {
                paid.clear();
            }
            paid.insert(id, payment);
        }
        Ok(payment)
    }

    fn known(&self, id: &B256) -> Option<Payment> {
        self.paid.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(id).copied()
    }

    /// What `id` paid, if it was read as enough.
    pub(super) fn paid(&self, id: &B256) -> Option<Payment> {
        self.known(id)
    }
}

/// Why `value` is refused by an allow list (non-empty, without it) or a deny list.
fn listed<T: PartialEq + std::fmt::Display>(what: &str, value: &T, allow: &[T], deny: &[T]) -> Option<String> {
    if deny.contains(value) {
        return Some(format!("policy: {what} {value} is denied"));
    }
    (!allow.is_empty() && !allow.contains(value)).then(|| format!("policy: {what} {value} is not allowed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_lists_win_and_an_empty_allow_list_allows_everything() {
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        assert_eq!(listed("sender", &a, &[], &[]), None);
        assert_eq!(listed("sender", &a, &[a], &[]), None);
        assert!(listed("sender", &b, &[a], &[]).unwrap().contains("is not allowed"));
        assert!(listed("sender", &a, &[a], &[a]).unwrap().contains("is denied"));
        assert!(listed("origin", &"alpha".to_string(), &[], &["alpha".to_string()]).unwrap().contains("origin alpha"));
    }
}
