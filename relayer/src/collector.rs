//! The relayer's collector (docs/architecture.md, step 3): gathers validator signatures from
//! JetStream into quorum certificates and publishes each deliverable message once, with
//! `Nats-Msg-Id` = its id.

use std::{sync::Arc, time::Duration};

use alloy::primitives::{Address, B256, Signature};
use async_nats::jetstream::{AckKind, Message as JsMessage};
use ferry_messages::{
    Attestation, Message,
    wire::{Deliverable, SignedAttestation, WIRE_VERSION},
};
use tracing::{debug, info, warn};

use crate::{
    backoff::Backoff,
    bus::{self, ATTESTATION_STREAM},
    context::Context,
    lifecycle::{MessageRecord, Stage, Transition, applied},
};

/// Signatures taken from the bus per round.
const ROUND: usize = 500;

/// Runs until aborted: republishes what a crash left attested but unpublished, then
/// collects.
pub(crate) async fn run(context: Arc<Context>) {
    let mut backoff = Backoff::task();
    loop {
        match collect(&context).await {
            Ok(()) => return,
            Err(e) => {
                let retry_in = backoff.next_delay();
                warn!(error = %e, ?retry_in, "collector failed");
                tokio::time::sleep(retry_in).await;
            }
        }
    }
}

async fn collect(context: &Arc<Context>) -> Result<(), CollectError> {
    let stranded: Vec<B256> = context.store.list(Some(Stage::Attested), usize::MAX)?.iter().map(|r| r.id).collect();
    publish(context, &stranded).await?;
    let name = bus::collector_consumer(&context.config.relayer.name);
    let consumer = context.bus.consumer(ATTESTATION_STREAM, &name, "ferry.att.>".into()).await?;
    let mut certified = Certified::default();
    loop {
        let taken = bus::take(&consumer, ROUND, Duration::from_millis(500)).await?;
        if taken.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let quorate = absorb(context, &taken, &mut certified).await?;
        let (absorbed, quorate_count) = (started.elapsed(), quorate.len());
        publish_records(context, quorate).await?;
        let published = started.elapsed();
        for message in &taken {
            bus::ack(message, AckKind::Ack).await;
        }
        debug!(signatures = taken.len(), quorate = quorate_count, ?absorbed, ?published, acked = ?started.elapsed(), "round");
    }
}

/// A signature that checked out.
struct Valid {
    message: Message,
    attestation: Attestation,
    signed: SignedAttestation,
}

/// Ids of messages this collector saw reach quorum lately: a signature for one of them
/// adds nothing, so it is taken off the bus without the cost of recovering its signer.
#[derive(Debug, Default)]
struct Certified {
    ids: std::collections::HashSet<B256>,
    order: std::collections::VecDeque<B256>,
}

impl Certified {
    /// Ids remembered at most (a few minutes of a busy relay).
    const CAPACITY: usize = 1 << 17;

    fn contains(&self, id: &B256) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: B256) {
        if self.ids.insert(id) {
            self.order.push_back(id);
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

/// Checks each signature, refusing bad input (termed, so it is not redelivered), and
/// stores the good ones of messages still short of a quorum in one transaction;
/// returns the records that reached quorum (written once published, by
/// `publish_records`). Signatures of messages already certified are not checked: they
/// add nothing.
async fn absorb(
    context: &Context,
    taken: &[JsMessage],
    certified: &mut Certified,
) -> Result<Vec<MessageRecord>, CollectError> {
    let threshold = context.validators.threshold();
    // A message's good signatures of this round, together: its record is read and written
    // once, and once a quorum over one block is in hand the rest are not recovered.
    let mut groups: Vec<(B256, Vec<Valid>)> = Vec::new();
    let mut group_of: std::collections::HashMap<B256, usize> = Default::default();
    for message in taken {
        let enough = |id: &B256, block: &B256| {
            certified.contains(id)
                || group_of.get(id).is_some_and(|&g| distinct_signers(&groups[g].1, block) >= threshold)
        };
        match check(context, &message.payload, enough) {
            Ok(Some(v)) => {
                let index = *group_of.entry(v.attestation.id).or_insert_with(|| {
                    groups.push((v.attestation.id, Vec::new()));
                    groups.len() - 1
                });
                groups[index].1.push(v);
            }
            Ok(None) => {}
            Err(reason) => {
                warn!(subject = %message.subject, reason = %reason.1, "refused a signature");
                context.metrics.bad_input("nats_attestation", reason.0);
                bus::ack(message, AckKind::Term).await;
            }
        }
    }
    let quorate = context.store.write(|tx| {
        let mut quorate = Vec::new();
        for (id, signed) in &groups {
            let first = &signed[0];
            let mut record = match tx.get(id)? {
                Some(record) => record,
                None => MessageRecord::observe(&first.message, first.signed.origin_mailbox, first.signed.block),
            };
            if !record.can(Transition::Attest) {
                // Certified already (by an earlier round, or before a restart).
                certified.insert(*id);
                continue;
            }
            let mut added = false;
            for v in signed {
                if record.block.hash != v.signed.block.hash {
                    // Signatures over another block (a reorged one) never mix with these.
                    warn!(%id, origin = record.origin, destination = record.destination, signed = %v.signed.block.hash, recorded = %record.block.hash, "signature over another block; ignored");
                    continue;
                }
                record.signatures.insert(v.signed.validator, v.signed.signature.clone());
                added = true;
            }
            if !added {
                continue;
            }
            if record.signatures.len() >= threshold && certify(context, &mut record, &first.attestation) {
                certified.insert(*id);
                // Written once, when published (`publish_records`): a crash before then
                // leaves this round's signatures unacked, so they come back and certify
                // it again (JetStream drops a second publish).
                quorate.push(record);
            } else {
                tx.put(&record)?;
            }
        }
        Ok(quorate)
    })?;
    Ok(quorate)
}

/// How many distinct validators signed over `block` among `signed`.
fn distinct_signers(signed: &[Valid], block: &B256) -> usize {
    let over_block = signed.iter().filter(|v| v.signed.block.hash == *block);
    over_block.map(|v| v.signed.validator).collect::<std::collections::HashSet<Address>>().len()
}

/// Attests `record` with a certificate from its signatures; whether it did.
fn certify(context: &Context, record: &mut MessageRecord, attestation: &Attestation) -> bool {
    // Every stored signature was recovered to its validator on the way in.
    let recovered =
        record.signatures.iter().filter_map(|(signer, s)| Signature::from_raw(s).ok().map(|s| (*signer, s)));
    let certificate =
        crate::cpu::scope(crate::cpu::Stage::Collect, || context.validators.certify_recovered(attestation, recovered));
    match certificate {
        Ok(qc) => {
            let detail = format!("{} signatures", record.signatures.len());
            applied(record.attest(qc.metadata().into(), detail))
        }
        Err(e) => {
            debug!(id = %record.id, origin = record.origin, destination = record.destination, error = %e, "no quorum yet");
            false
        }
    }
}

/// Why a signature is refused: a metric label and the reason.
type Refusal = (&'static str, String);

/// A signature checked (`None`: `enough` signatures over its message and block are in
/// hand already, so it is not).
fn check(context: &Context, payload: &[u8], enough: impl Fn(&B256, &B256) -> bool) -> Result<Option<Valid>, Refusal> {
    let signed = SignedAttestation::decode(payload).map_err(|e| (e.reason(), e.to_string()))?;
    let (message, attestation, signature) = signed.open().map_err(|e| (e.reason(), e.to_string()))?;
    if enough(&attestation.id, &signed.block.hash) {
        return Ok(None);
    }
    let Some((_, origin)) = context.config.chain_by_id(u64::from(message.origin)) else {
        return Err(("unknown_chain", format!("origin {} is not configured", message.origin)));
    };
    if context.config.chain_by_id(u64::from(message.destination)).is_none() {
        return Err(("unknown_chain", format!("destination {} is not configured", message.destination)));
    }
    if signed.origin_mailbox != origin.mailbox {
        return Err(("wrong_mailbox", format!("origin Mailbox {} is not {}", signed.origin_mailbox, origin.mailbox)));
    }
    let signing_hash = attestation.signing_hash();
    // A signature this process made (its own validators) or recovered before is recalled:
    // recovery is deterministic, so the memo's answer is the curve's.
    let (signer, recalled) = context
        .validators
        .signer_recalled(&signing_hash, 0, &signature, ferry_executors::recoveries::recall)
        .map_err(|e| ("bad_signature", format!("message {}: {e}", attestation.id)))?;
    let source = if recalled { "memo" } else { "curve" };
    context.metrics.collector_signatures_checked_total.with_label_values(&[source]).inc();
    if signer != signed.validator || !context.validators.contains(&signer) {
        return Err((
            "bad_signature",
            format!(
                "message {}: signed by {signer}, claimed {}, not a validator or not the claimant",
                attestation.id, signed.validator
            ),
        ));
    }
    // The deliverer checks this signature again when it admits the certificate, and the
    // Mailbox recovers it when the delivery is predicted: let both find the answer instead
    // of repeating the curve arithmetic.
    if !recalled {
        ferry_executors::recoveries::remember_signature(signing_hash, &signature, signer);
    }
    Ok(Some(Valid { message, attestation, signed }))
}

/// Publishes the deliverables of `ids` (records with a certificate) and marks them
/// published.
pub(crate) async fn publish(context: &Context, ids: &[B256]) -> Result<(), CollectError> {
    let mut records = Vec::with_capacity(ids.len());
    for id in ids {
        records.extend(context.store.get(id)?);
    }
    publish_records(context, records).await
}

/// [`publish`] of records in hand.
async fn publish_records(context: &Context, certified: Vec<MessageRecord>) -> Result<(), CollectError> {
    let mut records = Vec::with_capacity(certified.len());
    let mut outgoing = Vec::with_capacity(certified.len());
    for record in certified {
        let id = record.id;
        let Some(metadata) = record.metadata().cloned() else { continue };
        let deliverable = Deliverable {
            version: WIRE_VERSION,
            message: record.message.clone(),
            origin_mailbox: record.origin_mailbox,
            block: record.block,
            metadata,
        };
        let dedup = match record.retries() {
            0 => id.to_string(),
            retries => format!("{id}-retry-{retries}"),
        };
        outgoing.push((deliverable, record.destination, dedup));
        records.push(record);
    }
    let fresh = context.bus.publish_deliverables(&outgoing).await?;
    context.metrics.nats_published_total.with_label_values(&[context.bus.stream()]).inc_by(records.len() as u64);
    for (record, fresh) in records.iter().zip(fresh) {
        info!(id = %record.id, origin = record.origin, destination = record.destination, duplicate = !fresh, "published");
    }
    context.store.write(|tx| {
        for in_hand in records {
            // The stored record when it is attested already (a crash left it so) or past
            // this (a deliverer took the message from JetStream meanwhile: it keeps its
            // progress and gains the signatures); otherwise the one certified in hand,
            // not written yet.
            let (mut record, mut changed) = match tx.get(&in_hand.id)? {
                Some(mut stored) if !stored.can(Transition::Attest) => {
                    let before = stored.signatures.len();
                    stored.signatures.extend(in_hand.signatures);
                    let gained = stored.signatures.len() > before;
                    (stored, gained)
                }
                _ => (in_hand, true),
            };
            changed |= record.can(Transition::Publish) && applied(record.publish(None));
            if changed {
                tx.put(&record)?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// Why collecting stopped (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CollectError {
    #[error(transparent)]
    Store(#[from] crate::StoreError),
    #[error(transparent)]
    Bus(#[from] crate::BusError),
}
