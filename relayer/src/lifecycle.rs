//! A message's lifecycle (docs/architecture.md, "A message's way"): its record, the
//! stages it goes through, and the transitions between them. This module is the only
//! code that changes a record's stage: each transition names the stages it may start
//! from and refuses any other with an [`IllegalTransition`], leaving the record as it
//! was. The store only persists records.
//!
//! ```text
//! observe -> Observed -prove-> Proven -attest-> Attested -publish-> Published
//!   -execute-> Executed -submit-> Submitted -deliver-> Delivered
//! park: Published | Executed | Submitted -> Parked;  retry: Parked -> Published
//! reorg: Delivered -> Submitted (the block that delivered it was reorged away)
//! await payment: Published | Executed | Waiting -> AwaitingPayment (not paid for enough)
//! hold: Proven -> Held (a validator's governor or accountant holds its signatures);
//!   release: Held -> Proven (signed after all);  park: Held -> Parked (cancelled)
//! ```

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256, Bytes, keccak256};
use ferry_light_client::DispatchedMessage;
use ferry_messages::{Message, MessageId, wire::OriginBlock};
use serde::{Deserialize, Serialize};

use crate::store::now_ms;

/// Where a message is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Its `Dispatch` log was seen in a final block.
    Observed,
    /// Its receipt, with the rest of its block's, checked out against the verified header.
    Proven,
    /// A quorum of validator signatures is collected.
    Attested,
    /// Published to JetStream for its destination.
    Published,
    /// Pre-executed on the destination's executor: it will succeed.
    Executed,
    /// Sent in a `processBatch` transaction.
    Submitted,
    /// `Mailbox.delivered(id)` reads true on the destination.
    Delivered,
    /// Not sent because delivery would revert (or did); waits for an operator.
    Parked,
    /// Held back by the relayer's own limits (the destination's fees over its cap):
    /// tried again by itself when they allow it.
    Waiting,
    /// Not signed by this process's validators yet: a large transfer in the governor's
    /// delay, or one the accountant refuses (released would exceed locked on its route).
    Held,
    /// Not paid for at its origin's GasPaymaster (or not enough), while the relayer's
    /// policy requires payment: nothing is sent for it until a top-up covers it.
    AwaitingPayment,
}

impl Stage {
    /// Every stage, in lifecycle order.
    pub const ALL: [Stage; 11] = [
        Stage::Observed,
        Stage::Proven,
        Stage::Attested,
        Stage::Published,
        Stage::Executed,
        Stage::Submitted,
        Stage::Delivered,
        Stage::Parked,
        Stage::Waiting,
        Stage::Held,
        Stage::AwaitingPayment,
    ];

    /// The label used in metrics, the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Observed => "observed",
            Stage::Proven => "proven",
            Stage::Attested => "attested",
            Stage::Published => "published",
            Stage::Executed => "executed",
            Stage::Submitted => "submitted",
            Stage::Delivered => "delivered",
            Stage::Parked => "parked",
            Stage::Waiting => "waiting",
            Stage::Held => "held",
            Stage::AwaitingPayment => "awaiting_payment",
        }
    }

    /// Whether it waits on someone other than the relayer: a payment, the validators'
    /// governor or accountant (not counted as late in the oldest-pending age).
    pub fn waits_on_others(self) -> bool {
        matches!(self, Stage::AwaitingPayment | Stage::Held)
    }

    /// Whether nothing more happens to a message in this stage without an operator.
    pub fn is_final(self) -> bool {
        matches!(self, Stage::Delivered | Stage::Parked)
    }
}

impl std::str::FromStr for Stage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL.into_iter().find(|stage| stage.as_str() == s).ok_or_else(|| {
            let names: Vec<_> = Stage::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown stage {s:?} (one of {})", names.join(", "))
        })
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A move from one stage to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// A receipt proof checked out.
    Prove,
    /// A quorum certificate was built (or came with the message).
    Attest,
    /// Published to JetStream (or taken from it).
    Publish,
    /// Pre-executed: it will succeed.
    Execute,
    /// Sent (or sent again) in a delivery transaction.
    Submit,
    /// `delivered(id)` reads true on the destination.
    Deliver,
    /// Set aside: its delivery reverts.
    Park,
    /// An operator put a parked message back.
    Retry,
    /// The block that delivered it was reorged away: it must be delivered again.
    Reorg,
    /// Held back until the relayer's limits allow sending it.
    Wait,
    /// Held by the validators of this process before signing.
    Hold,
    /// A held message signed after all (its delay over, released by an operator, or its
    /// route's books back in balance).
    Release,
    /// Left undelivered until its delivery is paid for.
    AwaitPayment,
}

impl Transition {
    /// Every transition.
    pub const ALL: [Transition; 13] = [
        Transition::Prove,
        Transition::Attest,
        Transition::Publish,
        Transition::Execute,
        Transition::Submit,
        Transition::Deliver,
        Transition::Park,
        Transition::Retry,
        Transition::Reorg,
        Transition::Wait,
        Transition::Hold,
        Transition::Release,
        Transition::AwaitPayment,
    ];

    /// The stage it leads to.
    pub fn target(self) -> Stage {
        match self {
            Transition::Prove | Transition::Release => Stage::Proven,
            Transition::Attest => Stage::Attested,
            Transition::Publish | Transition::Retry => Stage::Published,
            Transition::Execute => Stage::Executed,
            Transition::Submit | Transition::Reorg => Stage::Submitted,
            Transition::Deliver => Stage::Delivered,
            Transition::Park => Stage::Parked,
            Transition::Wait => Stage::Waiting,
            Transition::Hold => Stage::Held,
            Transition::AwaitPayment => Stage::AwaitingPayment,
        }
    }

    /// The stages it may start from. A message is executed again after a transaction
    /// that did not deliver it and submitted again when its transaction is replaced; a
    /// relayer process that did not see it attested (another one did) attests it from
    /// whatever it knew.
    pub fn sources(self) -> &'static [Stage] {
        use Stage::*;
        match self {
            Transition::Prove => &[Observed],
            // From Held too: another process's validators may have signed it.
            Transition::Attest => &[Observed, Proven, Held],
            Transition::Publish => &[Attested],
            Transition::Execute => &[Published, Executed, Submitted, Waiting, AwaitingPayment],
            Transition::Submit => &[Executed, Submitted],
            // From Parked: a transaction that failed it, dropped by a reorg and sent again,
            // delivered it.
            Transition::Deliver => &[Published, Executed, Submitted, Waiting, AwaitingPayment, Parked],
            // From Held: an operator cancelled a held transfer.
            Transition::Park => &[Published, Executed, Submitted, Waiting, Held, AwaitingPayment],
            Transition::Retry => &[Parked],
            Transition::Reorg => &[Delivered],
            // Not from Waiting: a message held back again keeps its one history entry.
            Transition::Wait => &[Published, Executed, AwaitingPayment],
            Transition::Hold => &[Proven],
            Transition::Release => &[Held],
            // Not from AwaitingPayment: a message checked again keeps its one entry.
            Transition::AwaitPayment => &[Published, Executed, Waiting],
        }
    }

    /// Its name in logs and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Prove => "prove",
            Transition::Attest => "attest",
            Transition::Publish => "publish",
            Transition::Execute => "execute",
            Transition::Submit => "submit",
            Transition::Deliver => "deliver",
            Transition::Park => "park",
            Transition::Retry => "retry",
            Transition::Reorg => "reorg",
            Transition::Wait => "wait",
            Transition::Hold => "hold",
            Transition::Release => "release",
            Transition::AwaitPayment => "await_payment",
        }
    }
}

impl std::fmt::Display for Transition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition refused: the record is not in a stage it may start from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message {id}: cannot {transition} from {from} (only from {})", names(transition.sources()))]
pub struct IllegalTransition {
    /// The message.
    pub id: B256,
    /// Its stage.
    pub from: Stage,
    /// What was refused.
    pub transition: Transition,
}

fn names(stages: &[Stage]) -> String {
    stages.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// One step of a message's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageEntry {
    /// The stage entered.
    pub stage: Stage,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What else is worth knowing (transaction hash, revert reason...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Everything the store knows about one message. What it is (id, chains, the packed
/// message, its origin block) is open; where it is and what its moves left behind
/// (stage, history, certificate, transaction, reasons) only the transitions write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The message id.
    pub id: B256,
    /// Origin chain id.
    pub origin: u32,
    /// Destination chain id.
    pub destination: u32,
    /// The origin Mailbox's nonce for it.
    pub nonce: u32,
    /// The packed message.
    pub message: Bytes,
    /// The origin Mailbox.
    pub origin_mailbox: Address,
    /// The origin block holding its `Dispatch` log.
    pub block: OriginBlock,
    /// Validator signatures collected so far (validator -> 65-byte signature).
    #[serde(default)]
    pub signatures: BTreeMap<Address, Bytes>,
    stage: Stage,
    history: Vec<StageEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<Bytes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tx_hash: Option<B256>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parked_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mismatch: Option<String>,
    #[serde(default)]
    retries: u32,
}

impl MessageRecord {
    /// A message whose `Dispatch` log was seen in a final block of its origin.
    pub fn observe(message: &Message, origin_mailbox: Address, block: OriginBlock) -> Self {
        let bytes = Bytes::from(message.encode());
        Self::first_seen(message, keccak256(&bytes), bytes, origin_mailbox, block, Stage::Observed)
    }

    /// [`observe`](Self::observe) of a message read off its `Dispatch` log, whose id and
    /// bytes the light client has already checked: nothing is encoded or hashed again.
    pub fn dispatched(message: &DispatchedMessage, origin_mailbox: Address, block: OriginBlock) -> Self {
        let DispatchedMessage { message, id, bytes } = message;
        Self::first_seen(message, *id, bytes.clone(), origin_mailbox, block, Stage::Observed)
    }

    /// A message first seen with its quorum certificate (taken from JetStream by a
    /// process that had no record of it): attested.
    pub fn certified(message: &Message, origin_mailbox: Address, block: OriginBlock, metadata: Bytes) -> Self {
        let bytes = Bytes::from(message.encode());
        let mut record = Self::first_seen(message, keccak256(&bytes), bytes, origin_mailbox, block, Stage::Attested);
        record.metadata = Some(metadata);
        record
    }

    /// A record of `message`, whose id is `id` and encoding `bytes`.
    fn first_seen(
        message: &Message,
        id: MessageId,
        bytes: Bytes,
        origin_mailbox: Address,
        block: OriginBlock,
        stage: Stage,
    ) -> Self {
        Self {
            id,
            origin: message.origin,
            destination: message.destination,
            nonce: message.nonce,
            message: bytes,
            origin_mailbox,
            block,
            signatures: BTreeMap::new(),
            stage,
            history: vec![StageEntry { stage, at_ms: now_ms(), detail: None }],
            metadata: None,
            tx_hash: None,
            parked_reason: None,
            mismatch: None,
            retries: 0,
        }
    }

    /// The current stage.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Every stage it went through, oldest first.
    pub fn history(&self) -> &[StageEntry] {
        &self.history
    }

    /// When it entered `stage` last, if it did.
    pub fn entered(&self, stage: Stage) -> Option<u64> {
        self.history.iter().rev().find(|e| e.stage == stage).map(|e| e.at_ms)
    }

    /// The quorum certificate (the `metadata` argument of `Mailbox.process`), once there is one.
    pub fn metadata(&self) -> Option<&Bytes> {
        self.metadata.as_ref()
    }

    /// The last delivery transaction sent for it.
    pub fn tx_hash(&self) -> Option<B256> {
        self.tx_hash
    }

    /// Why it is parked.
    pub fn parked_reason(&self) -> Option<&str> {
        self.parked_reason.as_deref()
    }

    /// Why this process's validators hold it, while they do.
    pub fn held_reason(&self) -> Option<&str> {
        if self.stage != Stage::Held {
            return None;
        }
        self.history.last().and_then(|entry| entry.detail.as_deref())
    }

    /// Why it waits (for the relayer's limits or for payment), while it does.
    pub fn waiting_reason(&self) -> Option<&str> {
        if !matches!(self.stage, Stage::Waiting | Stage::AwaitingPayment) {
            return None;
        }
        self.history.last().and_then(|entry| entry.detail.as_deref())
    }

    /// A cross-layer validation mismatch seen while delivering it.
    pub fn mismatch(&self) -> Option<&str> {
        self.mismatch.as_deref()
    }

    /// How many times an operator retried it.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Whether `transition` may start from the current stage.
    pub fn can(&self, transition: Transition) -> bool {
        transition.sources().contains(&self.stage)
    }

    /// A receipt proof checked out.
    pub fn prove(&mut self, detail: String) -> Result<(), IllegalTransition> {
        self.apply(Transition::Prove, Some(detail))
    }

    /// A quorum certificate, `metadata`, was built (or came with the message).
    pub fn attest(&mut self, metadata: Bytes, detail: String) -> Result<(), IllegalTransition> {
        self.apply(Transition::Attest, Some(detail))?;
        self.metadata = Some(metadata);
        Ok(())
    }

    /// Published to JetStream, or taken from it.
    pub fn publish(&mut self, detail: Option<String>) -> Result<(), IllegalTransition> {
        self.apply(Transition::Publish, detail)
    }

    /// Pre-executed: its delivery will succeed.
    pub fn execute(&mut self, detail: String) -> Result<(), IllegalTransition> {
        self.apply(Transition::Execute, Some(detail))
    }

    /// Sent in transaction `tx` (first or as a replacement).
    pub fn submit(&mut self, tx: B256, detail: String) -> Result<(), IllegalTransition> {
        self.apply(Transition::Submit, Some(detail))?;
        self.tx_hash = Some(tx);
        Ok(())
    }

    /// Delivered on its destination; `mismatch` is what cross-layer validation found (a
    /// mismatch flagged before is kept when this delivery found none). A parked message
    /// can be delivered too (the chain is the truth): its item failed in a transaction
    /// that a reorg dropped, and that transaction, sent again, delivered it.
    pub fn deliver(&mut self, mismatch: Option<String>, detail: String) -> Result<(), IllegalTransition> {
        self.apply(Transition::Deliver, Some(detail))?;
        self.mismatch = mismatch.or(self.mismatch.take());
        self.parked_reason = None;
        Ok(())
    }

    /// Flags what cross-layer validation found on a transaction that carried it, whatever
    /// became of it there (delivered, failed, or delivered by someone else first); the
    /// stage does not change. Returns whether the flag is new.
    pub fn flag_mismatch(&mut self, mismatch: &str) -> bool {
        let new = self.mismatch.as_deref() != Some(mismatch);
        self.mismatch = Some(mismatch.to_string());
        new
    }

    /// Set aside undelivered, for `reason`.
    pub fn park(&mut self, reason: String) -> Result<(), IllegalTransition> {
        self.apply(Transition::Park, Some(reason.clone()))?;
        self.parked_reason = Some(reason);
        Ok(())
    }

    /// A parked message's reason replaced by a truer one learnt since, the stage
    /// unchanged: a reorg parked it, then its transaction, mined again, failed it on
    /// chain. Returns whether anything changed (only a parked record changes).
    pub fn reason_parked(&mut self, reason: String) -> bool {
        let changed = self.stage() == Stage::Parked && self.parked_reason.as_deref() != Some(reason.as_str());
        if changed {
            self.parked_reason = Some(reason);
        }
        changed
    }

    /// Put back by an operator, to be published again (the certificate is needed).
    pub fn retry(&mut self) -> Result<(), IllegalTransition> {
        if self.metadata.is_none() {
            return Err(self.refused(Transition::Retry));
        }
        let detail = format!("retry {} by an operator", self.retries + 1);
        self.apply(Transition::Retry, Some(detail))?;
        self.retries += 1;
        self.parked_reason = None;
        Ok(())
    }

    /// Held back by the relayer's limits, for `reason`.
    pub fn wait(&mut self, reason: String) -> Result<(), IllegalTransition> {
        self.apply(Transition::Wait, Some(reason))
    }

    /// Held by this process's validators before signing, for `reason`.
    pub fn hold(&mut self, reason: String) -> Result<(), IllegalTransition> {
        self.apply(Transition::Hold, Some(reason))
    }

    /// A held message signed after all, for `reason`.
    pub fn release(&mut self, reason: String) -> Result<(), IllegalTransition> {
        self.apply(Transition::Release, Some(reason))
    }

    /// Left undelivered until paid for, for `reason` (what was paid, what is needed).
    pub fn await_payment(&mut self, reason: String) -> Result<(), IllegalTransition> {
        self.apply(Transition::AwaitPayment, Some(reason))
    }

    /// Says why a message awaiting payment still waits when that changed (a top-up
    /// short of the cost, a cost learned anew), in its one history entry; whether it did.
    pub fn still_awaits_payment(&mut self, reason: String) -> bool {
        let Some(entry) = self.history.last_mut().filter(|_| self.stage == Stage::AwaitingPayment) else {
            return false;
        };
        let changed = entry.detail.as_deref() != Some(reason.as_str());
        entry.detail = Some(reason);
        changed
    }

    /// The block that delivered it was reorged away: back to submitted, to be sent again.
    pub fn reorg(&mut self, detail: String) -> Result<(), IllegalTransition> {
        self.apply(Transition::Reorg, Some(detail))
    }

    fn apply(&mut self, transition: Transition, detail: Option<String>) -> Result<(), IllegalTransition> {
        if !self.can(transition) {
            return Err(self.refused(transition));
        }
        self.stage = transition.target();
        self.history.push(StageEntry { stage: self.stage, at_ms: now_ms(), detail });
        Ok(())
    }

    fn refused(&self, transition: Transition) -> IllegalTransition {
        IllegalTransition { id: self.id, from: self.stage, transition }
    }
}

/// Whether a transition inside a store update was made; a refused one is logged (a
/// message another path settled meanwhile, say) and the record is not written.
pub fn applied(result: Result<(), IllegalTransition>) -> bool {
    match result {
        Ok(()) => true,
        Err(refused) => {
            tracing::warn!(id = %refused.id, from = %refused.from, transition = %refused.transition, "{refused}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            version: ferry_messages::VERSION,
            nonce: 7,
            origin: 31337,
            sender: B256::repeat_byte(1),
            destination: 31338,
            recipient: B256::repeat_byte(2),
            body: vec![7].into(),
        }
    }

    fn observed() -> MessageRecord {
        let block = OriginBlock { number: 3, hash: B256::repeat_byte(3), timestamp: 10 };
        MessageRecord::observe(&message(), Address::repeat_byte(9), block)
    }

    #[test]
    fn a_record_of_a_dispatch_log_takes_its_id_and_bytes_as_checked() {
        let block = OriginBlock { number: 3, hash: B256::repeat_byte(3), timestamp: 10 };
        let bytes = Bytes::from(message().encode());
        let log = DispatchedMessage { message: message(), id: keccak256(&bytes), bytes };
        let record = MessageRecord::dispatched(&log, Address::repeat_byte(9), block);
        let observed = observed();
        assert_eq!((record.id, &record.message, record.stage()), (observed.id, &observed.message, Stage::Observed));
        assert_eq!(record.id, message().id());
        assert_eq!(Message::decode(&record.message).ok(), Some(message()));
    }

    fn make(record: &mut MessageRecord, transition: Transition) -> Result<(), IllegalTransition> {
        match transition {
            Transition::Prove => record.prove("proof".into()),
            Transition::Attest => record.attest(Bytes::from_static(b"qc"), "2 signatures".into()),
            Transition::Publish => record.publish(None),
            Transition::Execute => record.execute("predicted gas 1".into()),
            Transition::Submit => record.submit(B256::repeat_byte(5), "tx".into()),
            Transition::Deliver => record.deliver(None, "tx".into()),
            Transition::Park => record.park("reverts".into()),
            Transition::Retry => record.retry(),
            Transition::Reorg => record.reorg("reorged".into()),
            Transition::Wait => record.wait("fees over the cap".into()),
            Transition::Hold => record.hold("governor: 5000 over 1000".into()),
            Transition::Release => record.release("delay over".into()),
            Transition::AwaitPayment => record.await_payment("paid 0 gas of 62000".into()),
        }
    }

    /// A record in `stage`, reached by legal moves only.
    fn in_stage(stage: Stage) -> MessageRecord {
        use Transition::*;
        let path: &[Transition] = match stage {
            Stage::Observed => &[],
            Stage::Proven => &[Prove],
            Stage::Attested => &[Prove, Attest],
            Stage::Published => &[Prove, Attest, Publish],
            Stage::Executed => &[Prove, Attest, Publish, Execute],
            Stage::Submitted => &[Prove, Attest, Publish, Execute, Submit],
            Stage::Delivered => &[Prove, Attest, Publish, Execute, Submit, Deliver],
            Stage::Parked => &[Prove, Attest, Publish, Park],
            Stage::Waiting => &[Prove, Attest, Publish, Wait],
            Stage::Held => &[Prove, Hold],
            Stage::AwaitingPayment => &[Prove, Attest, Publish, AwaitPayment],
        };
        let mut record = observed();
        for t in path {
            make(&mut record, *t).unwrap();
        }
        assert_eq!(record.stage(), stage);
        record
    }

    /// The lifecycle as the design states it: every legal (from, transition) pair.
    const LEGAL: &[(Stage, Transition)] = &[
        (Stage::Observed, Transition::Prove),
        (Stage::Observed, Transition::Attest),
        (Stage::Proven, Transition::Attest),
        (Stage::Attested, Transition::Publish),
        (Stage::Published, Transition::Execute),
        (Stage::Executed, Transition::Execute),
        (Stage::Submitted, Transition::Execute),
        (Stage::Executed, Transition::Submit),
        (Stage::Submitted, Transition::Submit),
        (Stage::Published, Transition::Deliver),
        (Stage::Executed, Transition::Deliver),
        (Stage::Submitted, Transition::Deliver),
        (Stage::Published, Transition::Park),
        (Stage::Executed, Transition::Park),
        (Stage::Submitted, Transition::Park),
        (Stage::Parked, Transition::Retry),
        (Stage::Parked, Transition::Deliver),
        (Stage::Delivered, Transition::Reorg),
        (Stage::Published, Transition::Wait),
        (Stage::Executed, Transition::Wait),
        (Stage::Waiting, Transition::Execute),
        (Stage::Waiting, Transition::Deliver),
        (Stage::Waiting, Transition::Park),
        (Stage::Proven, Transition::Hold),
        (Stage::Held, Transition::Release),
        (Stage::Held, Transition::Attest),
        (Stage::Held, Transition::Park),
        (Stage::Published, Transition::AwaitPayment),
        (Stage::Executed, Transition::AwaitPayment),
        (Stage::Waiting, Transition::AwaitPayment),
        (Stage::AwaitingPayment, Transition::Execute),
        (Stage::AwaitingPayment, Transition::Deliver),
        (Stage::AwaitingPayment, Transition::Park),
        (Stage::AwaitingPayment, Transition::Wait),
    ];

    #[test]
    fn every_legal_move_is_made_and_every_other_refused_leaving_the_record_as_it_was() {
        let (mut made, mut refused) = (0, 0);
        for from in Stage::ALL {
            for transition in Transition::ALL {
                let mut record = in_stage(from);
                let before = record.clone();
                let result = make(&mut record, transition);
                if LEGAL.contains(&(from, transition)) {
                    assert_eq!(result, Ok(()), "{transition} from {from}");
                    assert_eq!(record.stage(), transition.target());
                    let last = record.history().last().unwrap();
                    assert_eq!(last.stage, transition.target());
                    assert_eq!(record.history().len(), before.history().len() + 1);
                    made += 1;
                } else {
                    assert_eq!(
                        result,
                        Err(IllegalTransition { id: record.id, from, transition }),
                        "{transition} from {from}"
                    );
                    assert_eq!(record, before, "a refused {transition} from {from} changed the record");
                    refused += 1;
                }
            }
        }
        assert_eq!((made, refused), (LEGAL.len(), Stage::ALL.len() * Transition::ALL.len() - LEGAL.len()));
    }

    #[test]
    fn a_waiting_message_says_why_until_it_moves_on() {
        let mut record = in_stage(Stage::Waiting);
        assert_eq!(record.waiting_reason(), Some("fees over the cap"));
        assert!(!record.still_awaits_payment("paid 1 gas of 2".into()), "it waits for fees, not payment");
        assert_eq!(record.waiting_reason(), Some("fees over the cap"));
        record.execute("predicted gas 1".into()).unwrap();
        assert_eq!(record.waiting_reason(), None);

        let mut record = in_stage(Stage::AwaitingPayment);
        let entries = record.history().len();
        assert!(!record.still_awaits_payment("paid 0 gas of 62000".into()), "nothing changed");
        assert!(record.still_awaits_payment("paid 81000 gas of 100000".into()));
        assert_eq!(record.waiting_reason(), Some("paid 81000 gas of 100000"));
        assert_eq!(record.history().len(), entries, "one entry, reworded");
    }

    #[test]
    fn transitions_keep_what_they_carry() {
        let mut record = in_stage(Stage::Proven);
        record.attest(Bytes::from_static(b"qc"), "2 signatures".into()).unwrap();
        assert_eq!(record.metadata(), Some(&Bytes::from_static(b"qc")));
        record.publish(None).unwrap();
        record.execute("predicted gas 1".into()).unwrap();
        record.submit(B256::repeat_byte(5), "tx".into()).unwrap();
        assert_eq!(record.tx_hash(), Some(B256::repeat_byte(5)));
        record.park("reverts: InvalidRecipient".into()).unwrap();
        assert_eq!(record.parked_reason(), Some("reverts: InvalidRecipient"));
        record.retry().unwrap();
        assert_eq!((record.retries(), record.parked_reason()), (1, None));
        assert_eq!(record.history().last().and_then(|e| e.detail.as_deref()), Some("retry 1 by an operator"));
        record.deliver(Some("gas differs".into()), "tx".into()).unwrap();
        assert_eq!(record.mismatch(), Some("gas differs"));
        let stages: Vec<Stage> = record.history().iter().map(|e| e.stage).collect();
        use Stage::*;
        assert_eq!(stages, [Observed, Proven, Attested, Published, Executed, Submitted, Parked, Published, Delivered]);
    }

    #[test]
    fn a_parked_message_a_resent_transaction_delivered_is_delivered_and_no_longer_parked() {
        let mut record = in_stage(Stage::Submitted);
        record.park("failed on chain in 0x01: UnenrolledSender".into()).unwrap();
        assert!(record.parked_reason().is_some());
        record.deliver(None, "tx 0x02, sent again after a reorg".into()).unwrap();
        assert_eq!((record.stage(), record.parked_reason()), (Stage::Delivered, None));
        let stages: Vec<Stage> = record.history().iter().rev().take(2).map(|e| e.stage).collect();
        assert_eq!(stages, [Stage::Delivered, Stage::Parked], "the park stays in its history");
    }

    #[test]
    fn only_a_parked_message_takes_a_truer_reason_and_its_stage_stays() {
        let mut record = in_stage(Stage::Submitted);
        assert!(!record.reason_parked("failed on chain".into()), "not parked");
        assert_eq!(record.parked_reason(), None);
        record.park("reorged away".into()).unwrap();
        let entries = record.history().len();
        assert!(record.reason_parked("failed on chain in 0x03: UnenrolledSender".into()));
        assert!(!record.reason_parked("failed on chain in 0x03: UnenrolledSender".into()), "the same reason again");
        assert_eq!(record.parked_reason(), Some("failed on chain in 0x03: UnenrolledSender"));
        assert_eq!((record.stage(), record.history().len()), (Stage::Parked, entries));
    }

    #[test]
    fn a_flagged_mismatch_survives_a_delivery_that_found_none() {
        let mut record = in_stage(Stage::Submitted);
        assert!(record.flag_mismatch("gas differs"));
        assert!(!record.flag_mismatch("gas differs"), "flagged once");
        assert_eq!(record.stage(), Stage::Submitted);
        record.deliver(None, "already delivered".into()).unwrap();
        assert_eq!(record.mismatch(), Some("gas differs"));
    }

    #[test]
    fn a_parked_message_without_a_certificate_cannot_be_retried() {
        let mut record = in_stage(Stage::Proven);
        // Parked before any certificate: not possible by the moves above, but a record
        // from an older store could say so.
        record.stage = Stage::Parked;
        assert_eq!(
            record.retry(),
            Err(IllegalTransition { id: record.id, from: Stage::Parked, transition: Transition::Retry })
        );
    }

    #[test]
    fn records_round_trip_through_json_with_their_private_fields() {
        let record = in_stage(Stage::Delivered);
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("\"stage\":\"delivered\""), "{json}");
        assert_eq!(serde_json::from_str::<MessageRecord>(&json).unwrap(), record);
    }
}
