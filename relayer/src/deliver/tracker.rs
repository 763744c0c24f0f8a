//! The transaction tracker: nonces, sends, replacements of stuck transactions, receipts
//! (validated against their prediction), finality and reorgs of one destination. A
//! message's item is held here, unacked and kept ours on JetStream, from its send until
//! the block that delivered it is final.

use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::{
    eips::BlockId,
    network::TransactionBuilder,
    primitives::B256,
    rpc::types::{TransactionReceipt, TransactionRequest},
};
use async_nats::jetstream::AckKind;
use ferry_executors::{TxOutcome, TxStatus, validation::compare_with_receipt};
use tracing::{error, info, warn};

use super::{
    DeliverError, Item,
    destination::{Destination, Sent, Signed},
    fees::{FeePolicy, Fees},
    outcome::{Outcomes, sent_by},
    prediction::{Basis, Chunk, Layer, TX_GAS_CAP},
};
use crate::{Context, Stage, bus, lifecycle::applied};

/// New blocks a delivery in flight waits without a receipt before the node is asked
/// whether it still has it.
const REVIVE_AFTER_BLOCKS: u64 = 2;

/// When the messages of a delivery whose nonce another transaction took come back.
const SUPERSEDED_RETRY: Duration = Duration::from_secs(1);

/// A `processBatch` transaction sent and not yet settled.
struct InFlight {
    nonce: u64,
    items: Vec<Item>,
    data: Vec<u8>,
    gas_limit: u64,
    predicted: TxOutcome,
    /// What the prediction stood on, to tell when the receipt disagrees.
    basis: Basis,
    /// Every version sent (each replacement pays more), latest last, kept signed: one
    /// whose send got no answer but landed is found by its hash, and the latest is
    /// sent again as it is if the node drops it.
    versions: Vec<Signed>,
    /// Fees of the latest version (a replacement raises both: nodes take it only then).
    fees: Fees,
    /// When the latest version went out.
    sent_at: Instant,
    /// When its messages are next told to JetStream to be still in progress.
    progress_at: Instant,
    /// Sent again after a reorg dropped the block that had delivered it.
    resent: bool,
    /// Messages its calldata carries that it does not hold (their NATS messages were
    /// acked): those it failed on chain when mined, and parked. Sent again after a reorg
    /// it may deliver them, and delivered so and reorged again it may fail them: their
    /// records follow what it does each time it is mined.
    carried: Vec<B256>,
    /// The first latest block at which its latest version's receipt was looked for and
    /// not found: the blocks it waits are counted from it, not per settle pass (a pass
    /// repeated on the same block, after one that could not settle, counts nothing).
    waiting_since: Option<u64>,
}

/// A delivery transaction in a block not yet final: its delivered messages wait for
/// their acks. Every mined one is followed to finality, holding messages or not: a
/// reorg that drops it leaves its nonce a gap that only it, sent again, fills.
struct Mined {
    sent: InFlight,
    block: u64,
    block_hash: B256,
}

/// Why a mined transaction was not settled now.
enum Unsettled {
    /// Nothing of it was settled (its block could not be read, or a reorg dropped it
    /// meanwhile): it stays in flight and is settled again on the next settle.
    Waiting(InFlight, DeliverError),
    /// Its messages were settled part way: none is held any more (those not acked
    /// come back from JetStream and are checked on chain again); the transaction is
    /// still followed to finality, for its nonce.
    Confirming(Mined, DeliverError),
}

/// The transactions of one destination from their send to their settlement.
pub(super) struct Tracker {
    context: Arc<Context>,
    destination: Arc<Destination>,
    outcomes: Outcomes,
    fees: FeePolicy,
    next_nonce: Option<u64>,
    /// Sent and not yet mined, in nonce order.
    in_flight: VecDeque<InFlight>,
    /// Mined, its messages recorded delivered, and held (unacked) until its block is
    /// final on this chain: a reorg that drops it sends it again.
    confirming: VecDeque<Mined>,
    /// The newest block whose receipts were looked for.
    seen_block: u64,
}

impl Tracker {
    pub(super) fn new(context: Arc<Context>, destination: Arc<Destination>, outcomes: Outcomes) -> Self {
        Self {
            fees: FeePolicy::new(&destination.chain),
            context,
            destination,
            outcomes,
            next_nonce: None,
            in_flight: VecDeque::new(),
            confirming: VecDeque::new(),
            seen_block: 0,
        }
    }

    /// Transactions sent and not yet mined.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Each transaction in flight with its prediction, in nonce order: what the next
    /// round is predicted on top of.
    pub(super) fn predictions(&self) -> Vec<Layer<'_>> {
        self.in_flight.iter().map(|f| Layer { nonce: f.nonce, next: f.basis.next, state: &f.predicted.state }).collect()
    }

    /// Forgets the next nonce after a failed round: the next send asks the chain again.
    pub(super) fn forget_nonce(&mut self) {
        self.next_nonce = None;
    }

    /// Sends one `processBatch` transaction with its prediction, offering `fees`, and
    /// puts it in flight.
    pub(super) async fn send(&mut self, chunk: Chunk, basis: Basis, fees: Fees) -> Result<(), DeliverError> {
        let Chunk { items, data, predicted } = chunk;
        if predicted.status != TxStatus::Success {
            // The items succeeded one by one; the batch failing means the state moved.
            warn!(chain = %self.destination.name, status = ?predicted.status, "batch prediction failed; retrying the messages");
            for item in &items {
                self.outcomes.later(item, Duration::from_secs(1)).await;
            }
            return Ok(());
        }
        let margin = self.context.config.relayer.gas_margin_percent;
        let gas_limit = (predicted.gas_used * (100 + margin) / 100 + 50_000).min(TX_GAS_CAP);
        let nonce = self.reserve_nonce().await?;
        let now = Instant::now();
        let mut sent = InFlight {
            nonce,
            items,
            data,
            gas_limit,
            predicted,
            basis,
            versions: Vec::new(),
            fees,
            sent_at: now,
            progress_at: now + self.context.bus.ack_wait() / 3,
            resent: false,
            carried: Vec::new(),
            waiting_since: None,
        };
        if self.send_version(&mut sent).await? {
            self.in_flight.push_back(sent);
        }
        Ok(())
    }

    /// Signs `sent` (again, at its current fees, when replacing), lists its hash, and
    /// sends it. A send whose fate is unknown (no answer) or whose version the node knows
    /// already stays tracked: the chain tells by the hash. A first version whose nonce is
    /// taken goes back to the bus at once; one refused outright fails the round.
    /// Returns whether the transaction is tracked (false: its messages went back).
    async fn send_version(&mut self, sent: &mut InFlight) -> Result<bool, DeliverError> {
        let request = TransactionRequest::default()
            .with_from(self.destination.relayer)
            .with_to(self.destination.chain.mailbox)
            .with_input(sent.data.clone())
            .with_nonce(sent.nonce)
            .with_gas_limit(sent.gas_limit)
            .with_max_fee_per_gas(sent.fees.max_fee)
            .with_max_priority_fee_per_gas(sent.fees.tip.min(sent.fees.max_fee))
            .with_chain_id(self.destination.chain.chain_id);
        let signed = self.destination.sign(request).await?;
        let hash = signed.hash;
        let (chain, nonce, replacing) = (self.destination.name.as_str(), sent.nonce, !sent.versions.is_empty());
        match self.destination.send(&signed).await {
            Sent::Accepted => {}
            Sent::Known => info!(chain, tx = %hash, nonce, "the node knows the delivery already"),
            Sent::Unknown(error) => {
                warn!(chain, tx = %hash, nonce, %error, "no answer to a delivery send; tracking it by its hash")
            }
            refusal if replacing => {
                // A version already out stands: the replacement is not needed to deliver.
                warn!(chain, nonce, %refusal, "replacement refused; waiting on the sent one");
                return Ok(true);
            }
            Sent::NonceTaken(error) => {
                warn!(chain, nonce, %error, "the delivery's nonce is taken; its messages go back to the bus");
                self.next_nonce = None;
                for item in &sent.items {
                    self.outcomes.later(item, SUPERSEDED_RETRY).await;
                }
                return Ok(false);
            }
            Sent::Refused(e) => return Err(e),
            refusal @ Sent::Underpriced(_) => return Err(DeliverError::Config(format!("delivery refused: {refusal}"))),
        }
        let max_fee = sent.fees.max_fee;
        let detail = if sent.versions.is_empty() {
            format!("tx {hash} nonce {nonce}")
        } else {
            format!("replaced by tx {hash}, max fee {max_fee}")
        };
        info!(chain, tx = %hash, nonce, messages = sent.items.len(), "delivery sent");
        let ids: Vec<B256> = sent.items.iter().map(|i| i.record.id).collect();
        // The first version's records move through `executed` (its prediction) to
        // `submitted` in one write. A crash before it leaves them published and unacked:
        // they come back and are predicted again (delivered already, if it was mined).
        let executed = sent.versions.is_empty().then(|| format!("predicted gas {}", sent.predicted.gas_used));
        self.context.store.update(&ids, |r| {
            let predicted = executed.as_ref().is_none_or(|detail| applied(r.execute(detail.clone())));
            predicted && applied(r.submit(hash, detail.clone()))
        })?;
        sent.versions.push(signed);
        Ok(true)
    }

    /// On every new block: settles, in nonce order, the transactions in flight it mined;
    /// acks the messages of mined ones whose block is now final, or sends again the ones
    /// a reorg dropped; replaces the ones stuck for too long and keeps the messages of
    /// the others ours.
    pub(super) async fn settle(&mut self) -> Result<(), DeliverError> {
        if self.in_flight.is_empty() && self.confirming.is_empty() {
            return Ok(());
        }
        // Before anything that can fail or wait: the messages held stay ours.
        self.keep_held().await;
        let latest = self.destination.latest_number().await?;
        if latest != self.seen_block {
            let mut waiting = VecDeque::with_capacity(self.in_flight.len());
            let (mut failed, mut unsettled) = (None, false);
            while let Some(sent) = self.in_flight.pop_front() {
                let receipt = match self.receipt(&sent).await {
                    Ok(Some(receipt)) => receipt,
                    Ok(None) => {
                        let mut sent = sent;
                        sent.waiting_since.get_or_insert(latest);
                        waiting.push_back(sent);
                        continue;
                    }
                    Err(e) => {
                        waiting.push_back(sent);
                        failed = Some(e);
                        break;
                    }
                };
                match self.mined(sent, receipt).await {
                    Ok(mined) => self.confirming.push_back(mined),
                    Err(Unsettled::Waiting(sent, e)) => {
                        // Routine after a reorg: the rest is done, and this block is
                        // looked at again on the next settle.
                        warn!(chain = %self.destination.name, nonce = sent.nonce, error = %e, "a mined delivery could not be settled yet; trying again");
                        waiting.push_back(sent);
                        unsettled = true;
                        break;
                    }
                    Err(Unsettled::Confirming(mined, e)) => {
                        self.confirming.push_back(mined);
                        failed = Some(e);
                        break;
                    }
                }
            }
            // The ones not settled stay tracked, in nonce order.
            waiting.extend(self.in_flight.drain(..));
            self.in_flight = waiting;
            if let Some(e) = failed {
                return Err(e);
            }
            self.finalize(latest).await?;
            self.revive(latest).await?;
            if !unsettled {
                self.seen_block = latest;
            }
        }
        self.unstick().await
    }

    /// Replaces, at a higher fee, each transaction in flight for longer than
    /// `stuck_after_secs`, or gives it up if its nonce went to another transaction.
    async fn unstick(&mut self) -> Result<(), DeliverError> {
        let stuck_after = Duration::from_secs(self.context.config.relayer.stuck_after_secs.max(1));
        let now = Instant::now();
        let in_flight = std::mem::take(&mut self.in_flight);
        let mut result = Ok(());
        for mut sent in in_flight {
            if result.is_err() || now < sent.sent_at + stuck_after {
                self.in_flight.push_back(sent);
                continue;
            }
            match self.superseded(&sent).await {
                Ok(true) => {
                    self.give_up(sent).await;
                    continue;
                }
                Ok(false) => {}
                Err(e) => result = Err(e),
            }
            if result.is_ok() {
                let chain = self.destination.name.as_str();
                (sent.sent_at, sent.waiting_since) = (now, None);
                match self.fees.raise(sent.fees) {
                    Some(fees) => {
                        self.destination.metrics.replaced.inc();
                        sent.fees = fees;
                        warn!(
                            chain,
                            nonce = sent.nonce,
                            max_fee = fees.max_fee,
                            "delivery stuck; replacing with a higher fee"
                        );
                        result = self.send_version(&mut sent).await.map(|_| ());
                    }
                    None => {
                        warn!(
                            chain,
                            nonce = sent.nonce,
                            max_fee = sent.fees.max_fee,
                            "delivery stuck at the fee cap; waiting for fees to come down"
                        )
                    }
                }
            }
            self.in_flight.push_back(sent);
        }
        result
    }

    /// Whether `sent`'s nonce went to a transaction that is none of its versions: the
    /// chain's nonce for the relayer has passed it and none of them has a receipt. (A
    /// replacement of it could never be mined, and its messages would wait forever.)
    async fn superseded(&self, sent: &InFlight) -> Result<bool, DeliverError> {
        let latest = self.destination.latest_number().await?;
        if self.destination.nonce_at(latest).await? <= sent.nonce {
            return Ok(false);
        }
        // Looked for after the nonce was read: a version mined by then is found.
        Ok(self.receipt(sent).await?.is_none())
    }

    /// Lets go of a transaction whose nonce another one took: its messages go back to the
    /// bus, to be admitted again (acked there if that other transaction delivered them).
    async fn give_up(&self, sent: InFlight) {
        let chain = self.destination.name.as_str();
        warn!(chain, nonce = sent.nonce, tx = ?sent.versions.last().map(|v| v.hash), messages = sent.items.len(), "delivery superseded: its nonce went to another transaction; its messages go back to the bus");
        self.destination.metrics.superseded.inc();
        for item in &sent.items {
            self.outcomes.later(item, SUPERSEDED_RETRY).await;
        }
    }

    /// The ids of the messages this tracker holds (in flight or awaiting finality): a
    /// copy of one that JetStream hands out again is not delivered a second time.
    pub(super) fn held(&self) -> HashSet<B256> {
        let in_flight = self.in_flight.iter().flat_map(|s| &s.items);
        let confirming = self.confirming.iter().flat_map(|m| &m.sent.items);
        in_flight.chain(confirming).map(|i| i.record.id).collect()
    }

    /// Tells JetStream, every third of its ack wait, that the messages of transactions in
    /// flight and awaiting finality are still being worked on, so that it hands them to
    /// nobody else meanwhile.
    async fn keep_held(&mut self) {
        let progress_every = self.context.bus.ack_wait() / 3;
        let now = Instant::now();
        let held = self
            .in_flight
            .iter_mut()
            .map(|s| (&s.items, &mut s.progress_at))
            .chain(self.confirming.iter_mut().map(|m| (&m.sent.items, &mut m.sent.progress_at)));
        for (items, progress_at) in held {
            if now >= *progress_at {
                for item in items {
                    bus::ack(&item.js, AckKind::Progress).await;
                }
                *progress_at = now + progress_every;
            }
        }
    }

    /// Acks the messages of mined transactions whose block is final and still canonical;
    /// a transaction whose block was reorged away goes back in flight, its messages
    /// undelivered, and is sent again with its nonce, or, when the node mined it again
    /// in another block, is settled again there.
    async fn finalize(&mut self, latest: u64) -> Result<(), DeliverError> {
        let depth = self.destination.chain.confirmations;
        while let Some(mined) = self.confirming.front() {
            if latest < mined.block + depth {
                break;
            }
            let canonical = self.destination.block_hash(mined.block).await?;
            let Some(mined) = self.confirming.pop_front() else { break };
            if canonical == Some(mined.block_hash) {
                for item in &mined.sent.items {
                    bus::ack(&item.js, AckKind::Ack).await;
                }
                continue;
            }
            // Mined again elsewhere (a node re-including it after the reorg)?
            let moved = match self.remined(&mined.sent).await {
                Ok(moved) => moved,
                Err(e) => {
                    self.confirming.push_front(mined);
                    return Err(e);
                }
            };
            if let Some(receipt) = moved {
                if receipt.block_hash == Some(mined.block_hash) {
                    // Where it was after all (the node did not know the block a moment
                    // ago): looked at again on the next pass.
                    self.confirming.push_front(mined);
                    break;
                }
                self.mined_elsewhere(mined, receipt).await?;
                continue;
            }
            self.reorged(mined).await?;
        }
        Ok(())
    }

    /// The receipt of whichever version of `sent` is mined now, in a canonical block.
    async fn remined(&self, sent: &InFlight) -> Result<Option<TransactionReceipt>, DeliverError> {
        let Some(receipt) = self.receipt(sent).await? else { return Ok(None) };
        let (Some(block), Some(hash)) = (receipt.block_number, receipt.block_hash) else { return Ok(None) };
        Ok((self.destination.block_hash(block).await? == Some(hash)).then_some(receipt))
    }

    /// A delivery a reorg moved into another block (the node mined it again there). What
    /// ran before it there may differ, and so may what it did: its messages are
    /// undelivered in the store, and it is settled afresh on its new receipt, as a
    /// transaction sent again (counted once).
    async fn mined_elsewhere(&mut self, mined: Mined, receipt: TransactionReceipt) -> Result<(), DeliverError> {
        let chain = self.destination.name.as_str();
        let (block, block_hash) = (mined.block, mined.block_hash);
        warn!(chain, nonce = mined.sent.nonce, block, %block_hash, now_in = ?receipt.block_number, "delivery reorged into another block; settled again there");
        let detail = format!("block {block} ({block_hash}) that delivered it was reorged away; mined again elsewhere");
        if let Err(e) = self.undeliver(&mined.sent, &detail) {
            // Still followed: the next pass finds it moved again.
            self.confirming.push_front(mined);
            return Err(e);
        }
        self.destination.metrics.reorged.inc();
        let Mined { mut sent, .. } = mined;
        sent.resent = true;
        match self.mined(sent, receipt).await {
            Ok(mined) => self.confirming.push_front(mined),
            // Its new block could not be read: followed as it was, and found moved again
            // on the next pass (its records already say undelivered).
            Err(Unsettled::Waiting(sent, e)) => {
                self.confirming.push_front(Mined { sent, block, block_hash });
                return Err(e);
            }
            Err(Unsettled::Confirming(mined, e)) => {
                self.confirming.push_front(mined);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Undoes in the store what a delivery a reorg dropped had delivered. Its items go
    /// back to submitted (their NATS messages are held: they are settled again). The
    /// carried messages it delivered are parked: their NATS messages were acked, so
    /// parked is where nothing is lost (an operator sees them), until the transaction,
    /// mined again, delivers them.
    fn undeliver(&self, sent: &InFlight, detail: &str) -> Result<(), DeliverError> {
        let ids: Vec<B256> = sent.items.iter().map(|i| i.record.id).collect();
        self.context.store.update(&ids, |r| r.stage() == Stage::Delivered && applied(r.reorg(detail.to_string())))?;
        if !sent.carried.is_empty() {
            let versions = versions(sent);
            let parked = format!("{detail}; parked until its transaction, mined again, delivers it");
            self.context.store.update(&sent.carried, |r| {
                r.stage() == Stage::Delivered
                    && sent_by(r, &versions)
                    && applied(r.reorg(detail.to_string()))
                    && applied(r.park(parked.clone()))
            })?;
        }
        Ok(())
    }

    /// A delivery dropped by a reorg of this chain: back in flight first (so that nothing
    /// below can lose it), its messages undelivered in the store, and the same transaction
    /// (same nonce, so later ones are not left behind a gap) sent again; if that send
    /// fails, the stuck-transaction replacement sends it later.
    async fn reorged(&mut self, mined: Mined) -> Result<(), DeliverError> {
        let Mined { mut sent, block, block_hash } = mined;
        let chain = self.destination.name.as_str();
        warn!(chain, nonce = sent.nonce, block, %block_hash, messages = sent.items.len(), "delivery reorged away; sending it again");
        self.destination.metrics.reorged.inc();
        // The same transaction, on the state the reorg went back to: what it failed may
        // now succeed and what it delivered fail, which is read when it is mined again.
        sent.resent = true;
        (sent.sent_at, sent.waiting_since) = (Instant::now(), None);
        let detail = format!("block {block} ({block_hash}) that delivered it was reorged away");
        let undone = self.undeliver(&sent, &detail);
        let at = self.in_flight.iter().position(|f| f.nonce > sent.nonce).unwrap_or(self.in_flight.len());
        self.in_flight.insert(at, sent);
        undone?;
        let mut in_flight = std::mem::take(&mut self.in_flight);
        // Sent as a replacement (it has versions): a nonce another transaction took is
        // found by `unstick` as superseded.
        let result = self.send_version(&mut in_flight[at]).await;
        self.in_flight = in_flight;
        result.map(|_| ())
    }

    /// Sends again, as they were, the transactions in flight the node no longer has,
    /// looked for from the first one: a node drops a sender's run from its start (anvil
    /// drops every one of them once a reorg leaves the first behind a nonce gap), and
    /// waiting `stuck_after_secs` to replace them would hold every delivery behind.
    async fn revive(&mut self, latest: u64) -> Result<(), DeliverError> {
        // One a block has not taken yet is most likely in the pool: asked about only
        // after the next block passes it too (a lookup on every block would delay
        // every round's send by a request). Only the first is looked up: a later one
        // the node dropped while keeping the first cannot be mined before it anyway, and
        // is the first (and looked up) once the first is mined.
        let first = self.in_flight.front().filter(|s| due_for_revive(s.waiting_since, latest));
        let Some(first) = first.and_then(|s| s.versions.last()) else { return Ok(()) };
        if self.destination.knows(first.hash).await? {
            return Ok(());
        }
        let chain = self.destination.name.as_str();
        for sent in &self.in_flight {
            let Some(version) = sent.versions.last() else { continue };
            match self.destination.send(version).await {
                Sent::Accepted => {
                    self.destination.metrics.dropped.inc();
                    warn!(chain, tx = %version.hash, nonce = sent.nonce, "delivery dropped by the node; sent again as it was");
                }
                Sent::Known => {}
                // Another transaction has its nonce: `unstick` gives it up; the later
                // ones wait for that.
                Sent::NonceTaken(_) => break,
                other => {
                    warn!(chain, tx = %version.hash, nonce = sent.nonce, %other, "delivery dropped by the node and not taken again; its replacement will be")
                }
            }
        }
        Ok(())
    }

    /// The receipt of whichever version of `sent` was mined, if one was.
    async fn receipt(&self, sent: &InFlight) -> Result<Option<TransactionReceipt>, DeliverError> {
        for version in sent.versions.iter().rev() {
            let receipt = self.destination.receipt(version.hash).await?;
            if receipt.is_some() {
                return Ok(receipt);
            }
        }
        Ok(None)
    }

    /// Validates a mined transaction's receipt against its prediction and records its
    /// messages; returns it holding the delivered ones, to be acked once final.
    async fn mined(&self, mut sent: InFlight, receipt: TransactionReceipt) -> Result<Mined, Unsettled> {
        let (Some(block), Some(block_hash)) = (receipt.block_number, receipt.block_hash) else {
            return Err(Unsettled::Waiting(sent, DeliverError::ReceiptWithoutBlock(receipt.transaction_hash)));
        };
        // Its items, then the messages it carries without holding them: one read.
        let ids: Vec<B256> = sent.items.iter().map(|i| i.record.id).chain(sent.carried.iter().copied()).collect();
        let mut delivered = match self.delivered_in(&ids, block, block_hash).await {
            Ok(delivered) => delivered,
            Err(e) => return Err(Unsettled::Waiting(sent, e)),
        };
        let carried_delivered = delivered.split_off(sent.items.len());
        let carried = sent.carried.len();
        let (m, chain) = (&self.destination.metrics, self.destination.name.as_str());
        if !sent.resent {
            // A transaction sent again after a reorg was counted when first mined.
            m.batch_size.observe(sent.items.len() as f64);
            if receipt.status() { &m.succeeded } else { &m.reverted }.inc();
        }
        let predicted = &sent.predicted;
        let mismatch = compare_with_receipt(predicted, &receipt).err().map(|e| {
            m.receipt_mismatches.inc();
            error!(chain, tx = %receipt.transaction_hash, nonce = sent.nonce, block = ?receipt.block_number, predicted_on = sent.basis.block, layered = ?sent.basis.layered, mismatch = %e, predicted_gas = predicted.gas_used, receipt_gas = receipt.gas_used, predicted_logs = predicted.logs.len(), receipt_logs = receipt.inner.logs().len(), "receipt differs from the prediction");
            e.to_string()
        });
        // Those it carried before this receipt (`confirm` adds what it parks now).
        let settled =
            self.outcomes.settle_carried(&sent.carried[..carried], &carried_delivered, &versions(&sent), &receipt);
        let items = std::mem::take(&mut sent.items);
        let confirmed =
            self.outcomes.confirm(items, delivered, &receipt, mismatch, !sent.resent, &mut sent.carried).await;
        self.outcomes.update_balance().await;
        let mut mined = Mined { sent, block, block_hash };
        match confirmed {
            Ok(kept) => {
                mined.sent.items = kept;
                // Carried ones not settled stay parked: safe, and tried on a later mining.
                match settled {
                    Ok(()) => Ok(mined),
                    Err(e) => Err(Unsettled::Confirming(mined, e)),
                }
            }
            Err(e) => Err(Unsettled::Confirming(mined, e)),
        }
    }

    /// `Mailbox.delivered(id)` for each of `ids` in block `number`, whose hash was
    /// `hash` in a receipt: read in the block named by its hash (canonical, where the
    /// node checks it), so that a block a reorg dropped since is an error here, never
    /// the answer of the block that replaced it (where none of these messages is
    /// delivered, and the transaction would be taken as delivering none). A node that
    /// cannot read by hash is read by number once the hash is checked canonical.
    async fn delivered_in(&self, ids: &[B256], number: u64, hash: B256) -> Result<Vec<bool>, DeliverError> {
        match self.destination.delivered(ids, BlockId::hash_canonical(hash)).await {
            Ok(delivered) => Ok(delivered),
            Err(e) if self.destination.block_hash(number).await? != Some(hash) => Err(e),
            Err(_) => self.destination.delivered(ids, number).await,
        }
    }

    /// The next nonce: the larger of the stored one and the chain's pending count, moved
    /// on in the store before the transaction goes out.
    async fn reserve_nonce(&mut self) -> Result<u64, DeliverError> {
        let (chain_id, relayer) = (self.destination.chain.chain_id, self.destination.relayer);
        let pending = self.destination.pending_nonce().await?;
        // The node's pending count is the authority (a stored nonce above it would leave a
        // gap that never fills); the stored one says what we sent before a restart.
        let stored = self.context.store.nonce(chain_id, relayer)?.unwrap_or(0);
        if stored > pending {
            warn!(chain = %self.destination.name, stored, pending, "transactions sent before were dropped by the node; reusing their nonces");
        }
        // Never a nonce still tracked, in flight or awaiting finality (after a restart of
        // this loop, say, or a reorg that dropped a delivery the tracker will send again).
        let in_flight = self.in_flight.iter().map(|f| f.nonce);
        let held = in_flight.chain(self.confirming.iter().map(|m| m.sent.nonce)).map(|n| n + 1).max().unwrap_or(0);
        let nonce = pending.max(self.next_nonce.unwrap_or(0)).max(held);
        self.context.store.write(|tx| tx.set_nonce(chain_id, relayer, nonce + 1))?;
        self.next_nonce = Some(nonce + 1);
        Ok(nonce)
    }
}

/// Whether a delivery whose receipt was first missed at block `waiting_since` has waited
/// [`REVIVE_AFTER_BLOCKS`] new blocks by `latest` (that first block counts as one).
fn due_for_revive(waiting_since: Option<u64>, latest: u64) -> bool {
    waiting_since.is_some_and(|first| latest.saturating_sub(first) + 1 >= REVIVE_AFTER_BLOCKS)
}

/// The hashes of every version of `sent`.
fn versions(sent: &InFlight) -> Vec<B256> {
    sent.versions.iter().map(|v| v.hash).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_is_looked_for_once_a_second_block_passes_it_however_often_it_is_settled() {
        // Not yet missed in any block.
        assert!(!due_for_revive(None, 10));
        // Missed at block 10: settling again on block 10 (a pass that could not finish
        // is repeated on the same block) adds no wait.
        assert!(!due_for_revive(Some(10), 10));
        assert!(!due_for_revive(Some(10), 10));
        // The next block passes it too.
        assert!(due_for_revive(Some(10), 11));
        // Blocks come faster than settles: one settle may see several at once.
        assert!(due_for_revive(Some(10), 14));
    }
}
