//! The relayer's policy (`[relayer.policy]`): which messages it carries (allow and deny
//! lists of origins, destinations, senders and recipients) and whether their delivery
//! was paid for at the origin's GasPaymaster. A message the lists refuse is parked for
//! good; one not paid for enough waits in `awaiting_payment` and costs nothing: no
//! prediction, no transaction.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use alloy::{
    eips::BlockId,
    primitives::{Address, B256, U256},
    providers::DynProvider,
};
use ferry_messages::{Message, contracts::GasPaymaster};

use super::{DeliverError, Item, destination::batch_calls};
use crate::{Context, PolicyConfig};

/// Payments remembered as enough (a message is delivered once; the map is cleared
/// past this size).
const REMEMBERED: usize = 100_000;

/// How long a paymaster's exchange rate is taken as read.
const RATE_TTL: Duration = Duration::from_secs(60);

/// The paymaster's exchange-rate fixed point (`GasPaymaster.RATE_SCALE`).
const RATE_SCALE: u64 = 10_000_000_000;

/// A transaction's intrinsic gas: a `processBatch` pays it once for all its deliveries,
/// so it is not any one delivery's cost.
const TX_BASE_GAS: u64 = 21_000;

/// The gas a delivery to a recipient no delivery was predicted to yet is taken to need:
/// its first paid message goes, and its cost is learned from it.
const UNSEEN_DELIVERY_GAS: u64 = 100_000;

/// Recipients whose delivery cost is remembered (the book is cleared past this size).
const RECIPIENTS: usize = 10_000;

/// What a message paid for its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Payment {
    /// Destination gas paid for (with the paymaster's overhead).
    pub gas: U256,
    /// What was paid, in the destination's native token (wei, at the paymaster's
    /// exchange rate); zero until the payment is enough.
    pub fee: U256,
}

/// The policy of one deliverer.
pub(super) struct Policy {
    context: Arc<Context>,
    config: PolicyConfig,
    /// This deliverer's destination, as paymasters know it.
    destination: u32,
    /// Messages known to have paid enough, with what they paid.
    paid: Mutex<HashMap<B256, Payment>>,
    /// Each origin paymaster's exchange rate for this destination, with when it was read.
    rates: Mutex<HashMap<u32, (U256, Instant)>>,
    /// What a delivery to each recipient costs.
    costs: DeliveryCosts,
    /// The paymaster of each configured origin that has one, by chain id.
    paymasters: HashMap<u32, Paymaster>,
}

/// An origin chain's paymaster and how to read it.
struct Paymaster {
    /// The origin's configured name.
    origin: String,
    address: Address,
    provider: DynProvider,
}

impl Policy {
    pub(super) fn new(context: Arc<Context>, destination: u32) -> Self {
        let config = context.config.relayer.policy.clone();
        let paymasters = context
            .config
            .chains
            .iter()
            .filter_map(|(name, chain)| {
                let provider = context.endpoints(name, chain).provider(None);
                let paymaster = Paymaster { origin: name.clone(), address: chain.paymaster?, provider };
                Some((chain.chain_id as u32, paymaster))
            })
            .collect();
        Self {
            context,
            config,
            destination,
            paid: Mutex::new(HashMap::new()),
            rates: Mutex::new(HashMap::new()),
            costs: DeliveryCosts::default(),
            paymasters,
        }
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

    /// Takes in a predicted `processBatch` of `items` that uses `gas_used`.
    pub(super) fn learn(&self, items: &[Item], gas_used: u64) {
        let recipients: Vec<Address> =
            items.iter().map(|item| item.message.recipient_address().unwrap_or(Address::ZERO)).collect();
        self.costs.learn(&recipients, gas_used);
    }

    /// The gas `message`'s delivery must have been paid for: what a delivery to its
    /// recipient was last predicted to take, times `min_payment_percent`.
    pub(super) fn gas_needed(&self, message: &Message) -> U256 {
        let predicted = self.costs.predicted(message.recipient_address().unwrap_or(Address::ZERO));
        U256::from(predicted) * U256::from(self.config.min_payment_percent) / U256::from(100)
    }

    /// What each item paid, read from its origin's paymaster (remembered once enough),
    /// with the gas it had to pay for; an item from a chain without a paymaster paid
    /// nothing. What is not remembered is read in one batched request per origin.
    pub(super) async fn payments(&self, items: &[Item]) -> Result<Vec<(Payment, U256)>, DeliverError> {
        let needed: Vec<U256> = items.iter().map(|item| self.gas_needed(&item.message)).collect();
        let mut paid: Vec<Option<Payment>> = items.iter().map(|item| self.known(&item.record.id)).collect();
        let mut unknown: HashMap<u32, Vec<usize>> = HashMap::new();
        for (at, _) in paid.iter().enumerate().filter(|(_, p)| p.is_none()) {
            unknown.entry(items[at].message.origin).or_default().push(at);
        }
        for (origin, at) in unknown {
            let ids: Vec<B256> = at.iter().map(|&i| items[i].record.id).collect();
            let read = self.read_payments(origin, &ids).await?;
            let enough = at.iter().zip(&read).any(|(&i, (gas, _))| *gas >= needed[i]);
            // An origin without a rate for us sold no gas here: its fees count as nothing.
            let rate = if enough { self.rate(origin).await? } else { U256::ZERO };
            let mut known = self.paid.lock().unwrap_or_else(PoisonError::into_inner);
            if known.len() >= REMEMBERED {
                known.clear();
            }
            for (&i, (gas, fee)) in at.iter().zip(read) {
                if gas < needed[i] {
                    paid[i] = Some(Payment { gas, fee: U256::ZERO });
                    continue;
                }
                let fee = if rate.is_zero() { U256::ZERO } else { fee * U256::from(RATE_SCALE) / rate };
                let payment = Payment { gas, fee };
                known.insert(items[i].record.id, payment);
                paid[i] = Some(payment);
            }
        }
        Ok(paid.into_iter().map(Option::unwrap_or_default).zip(needed).collect())
    }

    /// `payments(id)` (gas paid for, fee in the origin's wei) of each of `ids` at
    /// `origin`'s paymaster, in JSON-RPC batches; nothing for an origin without one.
    async fn read_payments(&self, origin: u32, ids: &[B256]) -> Result<Vec<(U256, U256)>, DeliverError> {
        let Some(paymaster) = self.paymasters.get(&origin) else {
            return Ok(vec![(U256::ZERO, U256::ZERO); ids.len()]);
        };
        let calls = ids.iter().map(|id| GasPaymaster::paymentsCall { id: *id });
        let paid = batch_calls(&paymaster.provider, paymaster.address, calls, BlockId::latest())
            .await
            .map_err(|e| DeliverError::Payment { origin: paymaster.origin.clone(), reason: e.to_string() })?;
        Ok(paid.into_iter().map(|paid| (paid.gas, paid.fee)).collect())
    }

    /// The exchange rate `origin`'s paymaster sells this destination's gas at (read again
    /// after [`RATE_TTL`]: its owner may change it).
    async fn rate(&self, origin: u32) -> Result<U256, DeliverError> {
        let cached = self.rates.lock().unwrap_or_else(PoisonError::into_inner).get(&origin).copied();
        if let Some((rate, _)) = cached.filter(|(_, read)| read.elapsed() < RATE_TTL) {
            return Ok(rate);
        }
        let Some(paymaster) = self.paymasters.get(&origin) else { return Ok(U256::ZERO) };
        let oracle =
            GasPaymaster::new(paymaster.address, &paymaster.provider).oracles(self.destination).call().await.map_err(
                |e| DeliverError::Payment { origin: paymaster.origin.clone(), reason: ferry_messages::explain(&e) },
            )?;
        let rate = U256::from(oracle.exchangeRate);
        self.rates.lock().unwrap_or_else(PoisonError::into_inner).insert(origin, (rate, Instant::now()));
        Ok(rate)
    }

    fn known(&self, id: &B256) -> Option<Payment> {
        self.paid.lock().unwrap_or_else(PoisonError::into_inner).get(id).copied()
    }
}

/// The gas one delivery to each recipient was last predicted to add to a batch, beyond
/// the transaction's own base.
#[derive(Debug, Default)]
struct DeliveryCosts {
    gas: Mutex<HashMap<Address, u64>>,
}

impl DeliveryCosts {
    /// Takes in a predicted batch delivering to `recipients` (one per message) that uses
    /// `gas_used`. A batch of one recipient's messages teaches that recipient's cost; a
    /// mixed one gives a first figure to recipients not seen yet.
    fn learn(&self, recipients: &[Address], gas_used: u64) {
        let Some(&only) = recipients.first() else { return };
        let per_item = gas_used.saturating_sub(TX_BASE_GAS) / recipients.len() as u64;
        let mut gas = self.gas.lock().unwrap_or_else(PoisonError::into_inner);
        if gas.len() >= RECIPIENTS {
            gas.clear();
        }
        if recipients.iter().all(|r| *r == only) {
            // A quick average: deliveries that grow dearer show within a few batches.
            let known = gas.get(&only).copied();
            gas.insert(only, known.map_or(per_item, |known| (known * 3 + per_item) / 4));
        } else {
            for recipient in recipients {
                gas.entry(*recipient).or_insert(per_item);
            }
        }
    }

    /// What a delivery to `recipient` is predicted to take (before any was seen,
    /// [`UNSEEN_DELIVERY_GAS`]).
    fn predicted(&self, recipient: Address) -> u64 {
        self.gas.lock().unwrap_or_else(PoisonError::into_inner).get(&recipient).copied().unwrap_or(UNSEEN_DELIVERY_GAS)
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

    #[test]
    fn delivery_costs_leave_out_the_transaction_base_and_learn_per_recipient() {
        let (bridge, other) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let costs = DeliveryCosts::default();
        assert_eq!(costs.predicted(bridge), UNSEEN_DELIVERY_GAS);
        // One delivery alone and four in a batch cost the same per delivery.
        costs.learn(&[bridge], TX_BASE_GAS + 130_000);
        assert_eq!(costs.predicted(bridge), 130_000);
        costs.learn(&[bridge; 4], TX_BASE_GAS + 4 * 130_000);
        assert_eq!(costs.predicted(bridge), 130_000);
        // Dearer deliveries raise the figure within a few batches, cheaper ones lower it.
        costs.learn(&[bridge], TX_BASE_GAS + 230_000);
        assert_eq!(costs.predicted(bridge), 155_000);
        costs.learn(&[bridge; 2], TX_BASE_GAS + 2 * 55_000);
        assert_eq!(costs.predicted(bridge), 130_000);
        // A mixed batch gives only a first figure, and changes no known one.
        costs.learn(&[bridge, other], TX_BASE_GAS + 2 * 60_000);
        assert_eq!((costs.predicted(bridge), costs.predicted(other)), (130_000, 60_000));
        costs.learn(&[], 1_000_000);
        assert_eq!(costs.predicted(bridge), 130_000);
    }
}
