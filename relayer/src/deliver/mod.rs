//! The delivery side of the relayer role, one deliverer per destination chain: takes
//! deliverables from the destination's durable JetStream consumer (shared by every
//! relayer process, so each message goes to one of them) and passes them through its
//! stages, each with one job:
//!
//! - [`admission`]: bus payloads -> checked items, refusing bad input and acking what is
//!   settled already;
//! - [`prediction`]: items -> `processBatch` transactions with their predicted gas and
//!   effects, on the chain's latest state with what is in flight laid over it; the
//!   items that would fail set apart;
//! - [`tracker`]: the transactions from send to finality (nonces, replacements,
//!   receipts validated against their prediction, reorgs);
//! - [`outcome`]: what becomes of a message at the end (delivered, parked, back later),
//!   recorded, acked and counted in one place.
//!
//! A message is acked only once `Mailbox.delivered(id)` reads true in a final block.
//! Rounds are pipelined: up to `relayer.max_in_flight` transactions wait for a block at
//! once, so that a destination takes a round every block rather than one every round
//! trip. See docs/architecture.md.

mod admission;
mod chunks;
mod destination;
mod error;
mod fees;
mod outcome;
mod policy;
mod prediction;
mod revert;
mod slots;
mod tracker;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::primitives::{Bytes, U256};
use async_nats::jetstream::Message as JsMessage;
use ferry_messages::{Message, wire::message_subject};
use tracing::{debug, error, warn};

pub(crate) use error::DeliverError;

use crate::{ChainConfig, Context, Secret, backoff::Backoff, bus, cpu, lifecycle::MessageRecord};

/// How often the receipts of transactions in flight are looked for.
const RECEIPT_POLL: Duration = Duration::from_millis(100);
/// How long an idle deliverer waits on the bus for the first message of a round.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// When a message delivered in a block not yet final comes back to be acked.
const FINALITY_RETRY: Duration = Duration::from_secs(2);
/// When a message held back by the fee cap is looked at again.
const FEE_RETRY: Duration = Duration::from_secs(5);
/// When a message whose delivery transaction was invalid (our funds or nonce) comes back.
const INVALID_RETRY: Duration = Duration::from_secs(5);
/// How soon a message not paid for is checked again (a top-up may have come).
const PAYMENT_RETRY: Duration = Duration::from_secs(5);

/// A deliverable taken from the bus and checked: what the stages pass along.
struct Item {
    js: JsMessage,
    message: Message,
    metadata: Bytes,
    record: MessageRecord,
    /// What it paid for its delivery, in this chain's native token (wei; zero when
    /// payment is not required or was not read).
    fee: U256,
}

/// One destination chain's deliverer.
pub(crate) struct Deliverer {
    context: Arc<Context>,
    destination: Arc<destination::Destination>,
    admission: admission::Admission,
    prediction: prediction::Prediction,
    tracker: tracker::Tracker,
    outcomes: outcome::Outcomes,
    policy: policy::Policy,
    fees: fees::FeePolicy,
}

impl Deliverer {
    pub(crate) fn new(
        context: Arc<Context>,
        name: String,
        chain: ChainConfig,
        key: &Secret,
    ) -> Result<Self, DeliverError> {
        let destination = Arc::new(destination::Destination::new(&context, name, chain, key)?);
        let outcomes = outcome::Outcomes::new(context.clone(), destination.clone());
        Ok(Self {
            admission: admission::Admission::new(context.clone(), destination.clone()),
            prediction: prediction::Prediction::new(context.clone(), destination.clone())?,
            tracker: tracker::Tracker::new(context.clone(), destination.clone(), outcomes.clone()),
            fees: fees::FeePolicy::new(&destination.chain),
            outcomes,
            policy: policy::Policy::new(context.clone(), destination.chain.chain_id as u32),
            destination,
            context,
        })
    }

    /// Runs until aborted, retrying with backoff after errors (unacked messages come
    /// back from JetStream, so nothing is lost).
    pub(crate) async fn run(mut self) {
        let mut backoff = Backoff::task();
        loop {
            match self.consume().await {
                Ok(()) => return,
                Err(e) => {
                    let retry_in = backoff.next_delay();
                    warn!(chain = %self.destination.name, error = %e, ?retry_in, "deliverer failed");
                    self.tracker.forget_nonce();
                    tokio::time::sleep(retry_in).await;
                }
            }
        }
    }

    async fn consume(&mut self) -> Result<(), DeliverError> {
        let chain_id = self.destination.chain.chain_id;
        let name = bus::deliverer_consumer(chain_id);
        let bus = &self.context.bus;
        let consumer = bus.consumer(bus.stream(), &name, message_subject(chain_id as u32)).await?;
        loop {
            self.tracker.settle().await?;
            let relayer = &self.context.config.relayer;
            let room = relayer.max_in_flight.saturating_sub(self.tracker.in_flight());
            if room > 0 {
                // Wait on the bus only when no receipt needs watching meanwhile.
                let wait = if self.tracker.in_flight() == 0 { IDLE_WAIT } else { Duration::ZERO };
                let taken = bus::take(&consumer, relayer.batch_size * room, wait).await?;
                if !taken.is_empty() {
                    self.round(taken).await?;
                    continue;
                }
            }
            if self.tracker.in_flight() > 0 {
                tokio::time::sleep(RECEIPT_POLL).await;
            }
        }
    }

    /// The relayer's policy over admitted items: what the lists refuse is parked for
    /// good, what was not paid for enough awaits payment; the rest goes on.
    async fn apply_policy(&self, items: Vec<Item>) -> Result<Vec<Item>, DeliverError> {
        let mut allowed = Vec::with_capacity(items.len());
        for item in items {
            match self.policy.refusal(&item.message) {
                Some(reason) => self.outcomes.refuse(item, reason).await?,
                None => allowed.push(item),
            }
        }
        if !self.policy.requires_payment() || allowed.is_empty() {
            return Ok(allowed);
        }
        let payments = self.policy.payments(&allowed).await?;
        let (mut paid, mut unpaid) = (Vec::with_capacity(allowed.len()), Vec::new());
        for (mut item, (payment, needed)) in allowed.into_iter().zip(payments) {
            if payment.gas >= needed {
                item.fee = payment.fee;
                paid.push(item);
            } else {
                unpaid.push((item, payment.gas, needed));
            }
        }
        self.outcomes.await_payment(unpaid, PAYMENT_RETRY).await?;
        Ok(paid)
    }

    /// One round: admit, predict on top of what is in flight, settle what would fail,
    /// send the rest.
    async fn round(&mut self, taken: Vec<JsMessage>) -> Result<(), DeliverError> {
        let started = Instant::now();
        let items = cpu::metered(cpu::Stage::Execute, self.admission.admit(taken, &self.tracker.held())).await?;
        let items = self.apply_policy(items).await?;
        if items.is_empty() {
            return Ok(());
        }
        // Fees first: over the cap nothing is predicted or sent, the messages wait.
        let price = self.destination.gas_price().await?;
        let fees = match self.fees.offer(price) {
            Ok(fees) => fees,
            Err(over) => {
                self.destination.metrics.fees_over_cap.set(1);
                return self.outcomes.wait(items, &over.to_string(), FEE_RETRY).await;
            }
        };
        self.destination.metrics.fees_over_cap.set(0);
        let (admitted, messages) = (started.elapsed(), items.len());
        let round =
            cpu::metered(cpu::Stage::Execute, self.prediction.predict(items, &self.tracker.predictions())).await?;
        let predicted = started.elapsed();
        for chunk in &round.chunks {
            self.policy.learn(&chunk.items, chunk.predicted.gas_used);
        }
        for (item, reason) in round.invalid {
            // Our own transaction is invalid (funds, nonce): not the message's fault.
            let record = &item.record;
            error!(chain = %self.destination.name, id = %record.id, origin = record.origin, destination = record.destination, %reason, "delivery transaction invalid; will retry");
            self.outcomes.later(&item, INVALID_RETRY).await;
        }
        for (item, label, reason) in round.reverted {
            self.outcomes.failed(item, label, reason).await?;
        }
        for chunk in round.chunks {
            self.tracker.send(chunk, round.basis.clone(), fees).await?;
        }
        debug!(chain = %self.destination.name, messages, ?admitted, ?predicted, sent = ?started.elapsed(), "round");
        Ok(())
    }
}
