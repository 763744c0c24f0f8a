//! What becomes of a message at the end of its way: delivered (recorded, counted, held
//! until final), parked (recorded, counted, acked) or back for another try. Every stage
//! that settles a message does it here, so that the records, the acks and the metrics
//! of a settled message are written in one place.

use std::{collections::HashMap, sync::Arc, time::Duration};

use alloy::{
    primitives::{Address, B256, Bytes, U256},
    rpc::types::TransactionReceipt,
    sol_types::SolValue,
};
use async_nats::jetstream::AckKind;
use ferry_messages::contracts::Mailbox;
use tracing::{info, warn};

use super::{
    DeliverError, FINALITY_RETRY, Item,
    destination::Destination,
    revert::{RATE_LIMITED, decode_revert},
};
use crate::{
    Context, Stage, bus,
    lifecycle::{MessageRecord, Transition, applied},
    store::now_ms,
};

/// The longest a rate-limited message waits before its bucket is looked at again.
const RATE_LIMIT_RECHECK: Duration = Duration::from_secs(60);

/// The longest a message awaiting payment waits before it is checked again.
const PAYMENT_RECHECK: Duration = Duration::from_secs(30);

/// Settles messages of one destination.
#[derive(Clone)]
pub(super) struct Outcomes {
    context: Arc<Context>,
    destination: Arc<Destination>,
}

impl Outcomes {
    pub(super) fn new(context: Arc<Context>, destination: Arc<Destination>) -> Self {
        Self { context, destination }
    }

    /// Marks each message of a mined transaction delivered (where `delivered`, what
    /// `Mailbox.delivered(id)` read in the receipt's block, says so; returned, to be
    /// acked when the block is final) or parked (its item failed on chain, acked; its id
    /// pushed onto `carried` as it is parked, since a reorg may yet let the transaction
    /// deliver it); anything else goes back for another try. `count` is false for a
    /// delivery sent again after a reorg, which the metrics already counted.
    pub(super) async fn confirm(
        &self,
        items: Vec<Item>,
        delivered: Vec<bool>,
        receipt: &TransactionReceipt,
        mismatch: Option<String>,
        count: bool,
        carried: &mut Vec<B256>,
    ) -> Result<Vec<Item>, DeliverError> {
        let failed = failures(receipt);
        if count {
            self.count_spent(&items, receipt);
        }
        let ids: Vec<B256> = items.iter().map(|i| i.record.id).collect();
        let tx = receipt.transaction_hash;
        let detail = format!("tx {tx}");
        let done: Vec<B256> = ids.iter().zip(&delivered).filter(|(_, d)| **d).map(|(id, _)| *id).collect();
        if let Some(mismatch) = &mismatch {
            // On every message the transaction carried: those it delivered get it below.
            let others: Vec<B256> = ids.iter().zip(&delivered).filter(|(_, d)| !**d).map(|(id, _)| *id).collect();
            self.context.store.update(&others, |r| r.flag_mismatch(mismatch))?;
        }
        // One write for the whole transaction's messages: they were delivered together.
        self.context.store.update(&done, |r| applied(r.deliver(mismatch.clone(), detail.clone())))?;
        let mut kept = Vec::with_capacity(done.len());
        for (item, delivered) in items.into_iter().zip(delivered) {
            let id = item.record.id;
            if delivered {
                if count {
                    self.count_delivered(&item);
                }
                info!(%id, origin = item.message.origin, destination = item.message.destination, %tx, "delivered");
                kept.push(item);
            } else if let Some(reason) = failed.get(&id) {
                let (label, why) = failed_on_chain(tx, reason);
                if self.failed(item, label, why).await? {
                    carried.push(id);
                }
            } else {
                warn!(%id, origin = item.message.origin, destination = item.message.destination, %tx, status = receipt.status(), "not delivered by its transaction; will retry");
                self.later(&item, Duration::from_secs(2)).await;
            }
        }
        Ok(kept)
    }

    /// Settles the messages `carried` that a transaction mined again after a reorg
    /// carries without holding them (their NATS messages were acked): parked, because it
    /// failed them, or because a reorg dropped the block where it delivered them.
    /// `delivered` is what `Mailbox.delivered(id)` read in its new block. A parked one it
    /// delivered is recorded delivered; one it failed again stays parked with the chain's
    /// reason in place of the reorg's; the others stay parked as they are, where an
    /// operator sees them and may retry them. A record another path has taken on since
    /// (an operator's retry) is left to it.
    pub(super) fn settle_carried(
        &self,
        carried: &[B256],
        delivered: &[bool],
        versions: &[B256],
        receipt: &TransactionReceipt,
    ) -> Result<(), DeliverError> {
        if carried.is_empty() {
            // Every transaction not touched by a reorg: no logs to decode again.
            return Ok(());
        }
        let tx = receipt.transaction_hash;
        let failed = failures(receipt);
        let reasons: HashMap<B256, String> =
            carried.iter().filter_map(|id| failed.get(id).map(|reason| (*id, failed_on_chain(tx, reason).1))).collect();
        let failed_again: Vec<B256> = reasons.keys().copied().collect();
        let changed = self.context.store.update(&failed_again, |r| {
            r.stage() == Stage::Parked
                && sent_by(r, versions)
                && reasons.get(&r.id).is_some_and(|why| r.reason_parked(why.clone()))
        })?;
        for record in changed {
            let (id, origin, destination) = (record.id, record.origin, record.destination);
            warn!(%id, origin, destination, %tx, reason = record.parked_reason(), "a transaction mined again after a reorg failed it on chain; stays parked");
        }
        let now: Vec<B256> = carried.iter().zip(delivered).filter(|(_, d)| **d).map(|(id, _)| *id).collect();
        if now.is_empty() {
            return Ok(());
        }
        let detail = format!("tx {tx}, mined again after a reorg");
        let changed = self.context.store.update(&now, |r| {
            r.stage() == Stage::Parked && sent_by(r, versions) && applied(r.deliver(None, detail.clone()))
        })?;
        for record in changed {
            let (id, origin, destination) = (record.id, record.origin, record.destination);
            // Counted the first time it is delivered only.
            if record.history().iter().filter(|e| e.stage == Stage::Delivered).count() == 1 {
                self.context.route(origin, destination).delivered.inc();
            }
            info!(%id, origin, destination, %tx, "delivered by a transaction mined again after a reorg; it had been parked");
        }
        Ok(())
    }

    /// Parks a message whose delivery reverts (and returns true), or settles it as
    /// delivered when the revert is the Mailbox saying it already was (and
    /// `delivered(id)` agrees), or has it wait (rate limited, or delivered by someone in
    /// a block not yet final).
    pub(super) async fn failed(&self, item: Item, label: &'static str, reason: String) -> Result<bool, DeliverError> {
        let id = item.record.id;
        if label == "AlreadyDelivered" {
            let latest = self.destination.latest_number().await?;
            let final_block = latest.saturating_sub(self.destination.chain.confirmations);
            if self.destination.delivered(&[id], final_block).await?.first() == Some(&true) {
                // Not delivered by us: what validation found before stays.
                self.context.store.update(&[id], |r| {
                    let mismatch = r.mismatch().map(str::to_owned);
                    applied(r.deliver(mismatch, "already delivered".into()))
                })?;
                info!(%id, origin = item.message.origin, destination = item.message.destination, "already delivered; acked");
                bus::ack(&item.js, AckKind::Ack).await;
                return Ok(false);
            }
            if self.destination.delivered(&[id], latest).await?.first() == Some(&true) {
                // Somebody's delivery, in a block not yet final: acked once it is.
                self.later(&item, FINALITY_RETRY).await;
                return Ok(false);
            }
        }
        if label == RATE_LIMITED {
            let after = self.refill_wait(&item).await;
            let reason = format!("rate_limited: {reason}; tried again in {}s", after.as_secs());
            self.context.route(item.message.origin, item.message.destination).rate_limited.inc();
            return self.wait(vec![item], &reason, after).await.map(|()| false);
        }
        self.context.store.update(&[id], |r| applied(r.park(reason.clone())))?;
        self.context.route(item.message.origin, item.message.destination).parked(label);
        warn!(%id, origin = item.message.origin, destination = item.message.destination, %reason, "parked: delivery would revert");
        bus::ack(&item.js, AckKind::Ack).await;
        Ok(true)
    }

    /// Sets aside for good a message the relayer's policy does not carry: parked with
    /// the reason (an operator may change the policy and retry it) and acked.
    pub(super) async fn refuse(&self, item: Item, reason: String) -> Result<(), DeliverError> {
        let id = item.record.id;
        self.context.store.update(&[id], |r| applied(r.park(reason.clone())))?;
        self.context.route(item.message.origin, item.message.destination).parked("policy");
        warn!(%id, origin = item.message.origin, destination = item.message.destination, %reason, "parked: the relayer's policy does not carry it");
        bus::ack(&item.js, AckKind::Ack).await;
        Ok(())
    }

    /// Leaves messages whose delivery was not paid for enough: recorded as awaiting
    /// payment with what each paid (once: a message checked again keeps its entry), and
    /// back on the bus to be checked again, `after` times the checks so far (at most
    /// [`PAYMENT_RECHECK`]): a thousand unpaid messages cost a few reads a second.
    pub(super) async fn await_payment(
        &self,
        unpaid: Vec<(Item, U256, U256)>,
        after: Duration,
    ) -> Result<(), DeliverError> {
        if unpaid.is_empty() {
            return Ok(());
        }
        let gas: HashMap<B256, (U256, U256)> =
            unpaid.iter().map(|(item, paid, needed)| (item.record.id, (*paid, *needed))).collect();
        let ids: Vec<B256> = gas.keys().copied().collect();
        // A message checked again keeps its one entry, saying what it paid by now.
        let changed = self.context.store.update(&ids, |r| {
            let (paid, needed) = gas.get(&r.id).copied().unwrap_or_default();
            let reason = format!("awaiting_payment: paid for {paid} gas of {needed} needed");
            r.still_awaits_payment(reason.clone())
                || (r.can(Transition::AwaitPayment) && applied(r.await_payment(reason)))
        })?;
        if !changed.is_empty() {
            info!(chain = %self.destination.name, messages = changed.len(), "messages await payment");
        }
        for (item, _, _) in &unpaid {
            let checks = item.js.info().map_or(1, |info| info.delivered.clamp(1, 64) as u32);
            self.later(item, (after * checks).min(PAYMENT_RECHECK)).await;
        }
        Ok(())
    }

    /// Holds messages back for `reason` (the relayer's own limits): recorded as waiting
    /// (once: a message held back again keeps its entry) and back on the bus in `after`.
    pub(super) async fn wait(&self, items: Vec<Item>, reason: &str, after: Duration) -> Result<(), DeliverError> {
        let ids: Vec<B256> = items.iter().map(|i| i.record.id).collect();
        let newly =
            self.context.store.update(&ids, |r| r.can(Transition::Wait) && applied(r.wait(reason.to_string())))?;
        if !newly.is_empty() {
            info!(chain = %self.destination.name, messages = newly.len(), %reason, "messages wait");
        }
        for item in &items {
            self.later(item, after).await;
        }
        Ok(())
    }

    /// How long until the recipient bridge's inbound bucket holds this transfer's amount
    /// (between 1 s and [`RATE_LIMIT_RECHECK`]: an owner may raise the limit meanwhile).
    async fn refill_wait(&self, item: &Item) -> Duration {
        let amount = <(Address, U256) as SolValue>::abi_decode(&item.message.body).map(|(_, amount)| amount);
        let bridge = item.message.recipient_address();
        let (Ok(amount), Some(bridge)) = (amount, bridge) else { return RATE_LIMIT_RECHECK };
        match self.destination.inbound_rate_limit(bridge, item.message.origin).await {
            Ok((_, available, refill)) if !refill.is_zero() => {
                let seconds = amount.saturating_sub(available).div_ceil(refill);
                Duration::from_secs(u64::try_from(seconds).unwrap_or(u64::MAX).clamp(1, RATE_LIMIT_RECHECK.as_secs()))
            }
            _ => RATE_LIMIT_RECHECK,
        }
    }

    /// Puts a message back on the bus for another try in `after`.
    pub(super) async fn later(&self, item: &Item, after: Duration) {
        bus::ack(&item.js, AckKind::Nak(Some(after))).await;
    }

    fn count_delivered(&self, item: &Item) {
        let record = &item.record;
        let route = self.context.route(record.origin, record.destination);
        route.delivered.inc();
        route.fees_paid_wei.inc_by(wei_f64(item.fee));
        let latency = (now_ms() as f64 / 1000.0 - record.block.timestamp as f64).max(0.0);
        route.delivery_seconds.observe(latency);
    }

    /// Books what a mined delivery transaction cost, shared equally among its messages'
    /// routes (whatever became of each message: a failed item's gas was spent too).
    fn count_spent(&self, items: &[Item], receipt: &TransactionReceipt) {
        if items.is_empty() {
            return;
        }
        let spent = receipt.gas_used as f64 * receipt.effective_gas_price as f64;
        let share = spent / items.len() as f64;
        for item in items {
            self.context.route(item.message.origin, item.message.destination).gas_spent_wei.inc_by(share);
        }
    }

    /// Reads the relayer's balance into its gauge (a failed read leaves the gauge).
    pub(super) async fn update_balance(&self) {
        if let Ok(balance) = self.destination.balance().await {
            self.destination.metrics.wallet_balance_wei.set(wei_f64(balance));
        }
    }
}

/// Wei as a float, for metrics (exact up to 2^53 wei, close enough beyond).
fn wei_f64(wei: U256) -> f64 {
    f64::from(wei)
}

/// The revert reasons of the items a delivery transaction failed (`ProcessFailed`), by
/// message id.
fn failures(receipt: &TransactionReceipt) -> HashMap<B256, Bytes> {
    receipt
        .inner
        .logs()
        .iter()
        .filter_map(|l| l.log_decode::<Mailbox::ProcessFailed>().ok())
        .map(|l| (l.inner.data.id, l.inner.data.reason.clone()))
        .collect()
}

/// The metric label and the parked reason of an item transaction `tx` failed on chain
/// with `reason` (its `ProcessFailed` data).
fn failed_on_chain(tx: B256, reason: &[u8]) -> (&'static str, String) {
    let (label, text) = decode_revert(reason, "process_failed");
    (label, format!("failed on chain in {tx}: {text}"))
}

/// Whether `record` was last submitted in one of a transaction's `versions`: no other
/// transaction (after an operator's retry) has taken it on since.
pub(super) fn sent_by(record: &MessageRecord, versions: &[B256]) -> bool {
    record.tx_hash().is_some_and(|hash| versions.contains(&hash))
}
