//! Admission: what comes off the bus becomes items to deliver, or is refused (bad
//! input: counted, logged, termed), or acked (a settled message handed back, a replay).
//! Records of messages first seen here are written; messages recorded delivered in a
//! block not known final are checked against the chain.

use std::{collections::HashSet, sync::Arc};

use alloy::primitives::{B256, Bytes, U256};
use async_nats::jetstream::{AckKind, Message as JsMessage};
use ferry_messages::{Message, wire::Deliverable};
use tracing::{debug, info, warn};

use super::{DeliverError, FINALITY_RETRY, Item, destination::Destination};
use crate::{
    Context, bus,
    lifecycle::{MessageRecord, Stage, Transition, applied},
};

/// A deliverable that passed [`Admission::check`], with its stored record if it has one.
struct Checked {
    deliverable: Deliverable,
    message: Message,
    stored: Option<MessageRecord>,
}

/// Why a deliverable is refused: a metric label and the reason.
type Refusal = (&'static str, String);

/// The admission stage of one destination.
pub(super) struct Admission {
    context: Arc<Context>,
    destination: Arc<Destination>,
}

impl Admission {
    pub(super) fn new(context: Arc<Context>, destination: Arc<Destination>) -> Self {
        Self { context, destination }
    }

    /// Decodes and checks what came off the bus; refuses bad input, acks replays, and
    /// leaves alone copies of messages in `held` (being delivered already: their first
    /// copy is acked when that delivery is final).
    pub(super) async fn admit(&self, taken: Vec<JsMessage>, held: &HashSet<B256>) -> Result<Vec<Item>, DeliverError> {
        let mut items: Vec<Item> = Vec::new();
        let mut unconfirmed: Vec<Item> = Vec::new();
        // Records first seen here, or that this process had not seen published yet.
        let mut received: Vec<MessageRecord> = Vec::new();
        let mut seen = HashSet::new();
        for js in taken {
            if js.info().is_ok_and(|info| info.delivered > 1) {
                self.destination.metrics.redeliveries.inc();
            }
            let Checked { deliverable, message, stored } = match self.check(&js.payload)? {
                Ok(checked) => checked,
                Err((label, reason)) => {
                    warn!(chain = %self.destination.name, subject = %js.subject, %reason, "refused a deliverable");
                    self.context.metrics.bad_input("nats_message", label);
                    bus::ack(&js, AckKind::Term).await;
                    continue;
                }
            };
            let id = message.id();
            if held.contains(&id) {
                // JetStream handed it out again before the progress of its delivery reached
                // it (a slow round, a NATS restart): not ours to deliver twice.
                debug!(%id, "a copy of a message being delivered; left alone");
                continue;
            }
            let mut record = stored.unwrap_or_else(|| {
                MessageRecord::certified(
                    &message,
                    deliverable.origin_mailbox,
                    deliverable.block,
                    deliverable.metadata.clone(),
                )
            });
            if receive(&mut record, &deliverable.metadata) {
                received.push(record.clone());
            }
            let redelivered = js.info().is_ok_and(|info| info.delivered > 1);
            if record.stage() == Stage::Delivered && redelivered && !seen.contains(&id) {
                // Recorded delivered but never acked: this process (or another) stopped
                // before the block was final. Whether it still is, the chain says.
                unconfirmed.push(Item { js, message, metadata: deliverable.metadata, record, fee: U256::ZERO });
                seen.insert(id);
                continue;
            }
            if record.stage().is_final() || !seen.insert(id) {
                // JetStream handing back what we had not acked is ordinary; a first
                // delivery of a settled message is somebody publishing it again.
                if record.stage() == Stage::Delivered && !redelivered {
                    warn!(%id, origin = message.origin, destination = message.destination, "refused a replay of a delivered message");
                    self.context.metrics.bad_input("nats_message", "replay");
                } else {
                    info!(%id, origin = message.origin, destination = message.destination, stage = %record.stage(), "already settled; acked");
                }
                bus::ack(&js, AckKind::Ack).await;
                continue;
            }
            items.push(Item { js, message, metadata: deliverable.metadata, record, fee: U256::ZERO });
        }
        // One write for the records of every message first seen here.
        self.context.store.write(|tx| received.iter().try_for_each(|record| tx.put(record)))?;
        items.extend(self.recheck(unconfirmed).await?);
        Ok(items)
    }

    /// Of messages recorded delivered whose block was not known final, acks the ones the
    /// chain has delivered and returns the others (a reorg took them back), undelivered,
    /// to be delivered again.
    async fn recheck(&self, unconfirmed: Vec<Item>) -> Result<Vec<Item>, DeliverError> {
        if unconfirmed.is_empty() {
            return Ok(unconfirmed);
        }
        let latest = self.destination.latest_number().await?;
        let ids: Vec<B256> = unconfirmed.iter().map(|i| i.record.id).collect();
        let now = self.destination.delivered(&ids, latest).await?;
        let final_ =
            self.destination.delivered(&ids, latest.saturating_sub(self.destination.chain.confirmations)).await?;
        let mut again = Vec::new();
        for ((mut item, now), final_) in unconfirmed.into_iter().zip(now).zip(final_) {
            if final_ {
                bus::ack(&item.js, AckKind::Ack).await;
                continue;
            }
            if now {
                // Delivered in a block not yet final: back later, when it may be.
                bus::ack(&item.js, AckKind::Nak(Some(FINALITY_RETRY))).await;
                continue;
            }
            let id = item.record.id;
            warn!(%id, origin = item.message.origin, destination = item.message.destination, "recorded delivered, but the chain does not have it (reorged away); delivering again");
            if applied(item.record.reorg("not delivered on chain any more (reorged away)".into())) {
                self.context.store.write(|tx| tx.put(&item.record))?;
            }
            again.push(item);
        }
        Ok(again)
    }

    /// Decodes a deliverable and checks it is for this chain, from a configured origin and
    /// Mailbox, and certified by the validator set; with the message's stored record.
    fn check(&self, payload: &[u8]) -> Result<Result<Checked, Refusal>, DeliverError> {
        let opened = Deliverable::decode(payload).and_then(|d| d.open().map(|o| (d, o)));
        let (deliverable, (message, attestation, qc)) = match opened {
            Ok(opened) => opened,
            Err(e) => return Ok(Err((e.reason(), e.to_string()))),
        };
        let id = message.id();
        if u64::from(message.destination) != self.destination.chain.chain_id {
            return Ok(Err(("wrong_destination", format!("message {id} is for chain {}", message.destination))));
        }
        let Some((_, origin)) = self.context.config.chain_by_id(u64::from(message.origin)) else {
            return Ok(Err(("unknown_chain", format!("origin {} is not configured", message.origin))));
        };
        if origin.mailbox != deliverable.origin_mailbox {
            let reason = format!("origin Mailbox {} is not {}", deliverable.origin_mailbox, origin.mailbox);
            return Ok(Err(("wrong_mailbox", reason)));
        }
        let stored = self.context.store.get(&id)?;
        // A certificate this process built or admitted before (the same bytes, for the
        // same block) was checked then, signature by signature: recovering its signers
        // again would double the signature work of every message.
        let known = stored.as_ref().is_some_and(|r| {
            r.metadata() == Some(&deliverable.metadata)
                && r.block == deliverable.block
                && r.origin_mailbox == deliverable.origin_mailbox
        });
        // The Mailbox would refuse a bad one too, but only after we paid for the attempt.
        // Signatures this process's collector recovered are recalled, not recovered: a
        // deliverable can arrive before the collector has recorded its publication.
        let recall = ferry_executors::recoveries::recall;
        if !known && let Err(e) = self.context.validators.verify_recalled(&attestation, &qc, recall) {
            return Ok(Err(("bad_certificate", format!("message {id}: {e}"))));
        }
        Ok(Ok(Checked { deliverable, message, stored }))
    }
}

/// Brings a record taken from JetStream up to published, when this process had not seen
/// it attested or published (another relayer process did, or this one's collector has
/// not recorded its publication yet); returns whether it changed.
fn receive(record: &mut MessageRecord, metadata: &Bytes) -> bool {
    if record.can(Transition::Attest) {
        applied(record.attest(metadata.clone(), "certificate taken from JetStream".into()));
    }
    record.can(Transition::Publish) && applied(record.publish(Some("taken from JetStream".into())))
}
