//! The delivery side of the relayer role (DESIGN.md steps 7 to 9), one per destination
//! chain: takes deliverables from the destination's durable JetStream consumer (shared
//! by every relayer process, so each message goes to one of them), pre-executes them on
//! the chain's revm pool against forked state, parks the ones that would revert, sends
//! the rest in `processBatch` transactions, validates every receipt against the
//! prediction, and acks a message only once `Mailbox.delivered(id)` reads true.
//!
//! Rounds are pipelined: up to `relayer.max_in_flight` transactions wait for a block at
//! once, and each new round is predicted on the chain's latest state with the predicted
//! changes of the ones still in flight laid over it ([`LayeredState`]), so that a
//! destination takes a round every block rather than one every round trip.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    future::IntoFuture,
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::{
    eips::BlockId,
    network::{EthereumWallet, TransactionBuilder},
    primitives::{Address, B256, Bytes, TxKind},
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::types::{TransactionReceipt, TransactionRequest},
    signers::local::PrivateKeySigner,
    sol_types::{SolCall, SolInterface},
};
use async_nats::jetstream::{AckKind, Message as JsMessage};
use ferry_executors::{
    AccessPredictor, BatchOutcome, BlockContext, ExecutionMode, Executor, ExecutorConfig, ForkedState, LayeredState,
    SpecId, StateDiff, StateSource, TxEnv, TxOutcome, TxStatus,
    validation::{SampledCheck, compare_with_receipt, compare_with_sequential},
};
use ferry_messages::{
    Message,
    contracts::{Mailbox, TestRecipient, TokenBridge},
    wire::{Deliverable, message_subject},
};
use tracing::{debug, error, info, warn};

use crate::{
    ChainConfig, Secret, bus,
    context::Context,
    lifecycle::{MessageRecord, Stage, Transition, applied},
    store::now_ms,
};

/// Gas each simulated `process` may use: far above what a delivery needs.
const SIMULATION_GAS: u64 = 3_000_000;
/// Priority fee of delivery transactions.
const TIP: u128 = 1_000_000_000;
/// Most gas one transaction may ask for since Osaka (EIP-7825).
const TX_GAS_CAP: u64 = 1 << 24;
/// How often the receipts of transactions in flight are looked for.
const RECEIPT_POLL: Duration = Duration::from_millis(100);
/// How long an idle deliverer waits on the bus for the first message of a round.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// When a message delivered in a block not yet final comes back to be acked.
const FINALITY_RETRY: Duration = Duration::from_secs(2);
/// Longest wait for one RPC answer.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// `delivered(id)` reads per JSON-RPC batch request.
const READS_PER_REQUEST: usize = 200;

/// One destination chain's deliverer.
pub(crate) struct Deliverer {
    context: Arc<Context>,
    name: String,
    chain: ChainConfig,
    relayer: Address,
    provider: DynProvider,
    executor: Arc<Executor>,
    predictor: Arc<AccessPredictor>,
    check: SampledCheck,
    next_nonce: Option<u64>,
    /// Sent and not yet mined, in nonce order.
    in_flight: VecDeque<InFlight>,
    /// Mined, its messages recorded delivered, and held (unacked) until its block is
    /// final on this chain: a reorg that drops it sends it again.
    confirming: VecDeque<Mined>,
    /// The newest block whose receipts were looked for.
    seen_block: u64,
}

/// A `processBatch` transaction sent and not yet settled.
struct InFlight {
    nonce: u64,
    items: Vec<Item>,
    data: Vec<u8>,
    gas_limit: u64,
    predicted: TxOutcome,
    /// What the prediction stood on, to tell when the receipt disagrees.
    basis: Basis,
    /// Every version sent (each replacement pays more), latest last.
    sent: Vec<B256>,
    max_fee: u128,
    /// Priority fee of the latest version (raised with `max_fee`: nodes take a
    /// replacement only if both rise).
    tip: u128,
    /// When the latest version went out.
    sent_at: Instant,
    /// When its messages are next told to JetStream to be still in progress.
    progress_at: Instant,
    /// Sent again after a reorg dropped the block that had delivered it.
    resent: bool,
}

/// A delivery transaction in a block not yet final: its delivered messages wait for
/// their acks.
struct Mined {
    sent: InFlight,
    block: u64,
    block_hash: B256,
}

/// The state a round was predicted on: the chain at `block`, with the predicted changes of
/// our transactions in flight with these nonces laid over it.
#[derive(Debug, Clone)]
struct Basis {
    block: u64,
    layered: Vec<u64>,
}

/// A deliverable that passed [`Deliverer::check`], with its stored record if it has one.
struct Checked {
    deliverable: Deliverable,
    message: Message,
    stored: Option<MessageRecord>,
}

/// Why a deliverable is refused: a metric label and the reason.
type Refusal = (&'static str, String);

/// A deliverable taken from the bus, checked.
struct Item {
    js: JsMessage,
    message: Message,
    metadata: Bytes,
    record: MessageRecord,
}

impl Deliverer {
    pub(crate) fn new(
        context: Arc<Context>,
        name: String,
        chain: ChainConfig,
        key: &Secret,
    ) -> Result<Self, DeliverError> {
        let signer = PrivateKeySigner::from_bytes(key.expose()).map_err(|e| DeliverError::Config(e.to_string()))?;
        let relayer = signer.address();
        let url = chain.rpc_url.parse().map_err(|e| DeliverError::Config(format!("{}: {e}", chain.rpc_url)))?;
        let provider = ProviderBuilder::new().wallet(EthereumWallet::from(signer)).connect_http(url).erased();
        let workers = chain.executor_workers.unwrap_or_else(|| ExecutorConfig::default().workers);
        let executor = Arc::new(Executor::new(ExecutorConfig { workers, record_access: true, ..Default::default() }));
        let check = SampledCheck::new(context.config.relayer.sequential_check_every);
        Ok(Self {
            context,
            name,
            chain,
            relayer,
            provider,
            executor,
            predictor: Arc::new(AccessPredictor::new()),
            check,
            next_nonce: None,
            in_flight: VecDeque::new(),
            confirming: VecDeque::new(),
            seen_block: 0,
        })
    }

    /// Runs until aborted, retrying with backoff after errors (unacked messages come
    /// back from JetStream, so nothing is lost).
    pub(crate) async fn run(mut self) {
        let mut backoff = Duration::from_millis(250);
        loop {
            match self.consume().await {
                Ok(()) => return,
                Err(e) => {
                    warn!(chain = %self.name, error = %e, retry_in = ?backoff, "deliverer failed");
                    self.next_nonce = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn consume(&mut self) -> Result<(), DeliverError> {
        let chain_id = self.chain.chain_id as u32;
        let name = bus::deliverer_consumer(self.chain.chain_id);
        let consumer = self.context.bus.consumer(self.context.bus.stream(), &name, message_subject(chain_id)).await?;
        loop {
            self.settle_in_flight().await?;
            let relayer = &self.context.config.relayer;
            let room = relayer.max_in_flight.saturating_sub(self.in_flight.len());
            if room > 0 {
                // Wait on the bus only when no receipt needs watching meanwhile.
                let wait = if self.in_flight.is_empty() { IDLE_WAIT } else { Duration::ZERO };
                let taken = bus::take(&consumer, relayer.batch_size * room, wait).await?;
                if !taken.is_empty() {
                    self.deliver(taken).await?;
                    continue;
                }
            }
            if !self.in_flight.is_empty() {
                tokio::time::sleep(RECEIPT_POLL).await;
            }
        }
    }

    /// One round: check, execute on top of what is in flight, park or send.
    async fn deliver(&mut self, taken: Vec<JsMessage>) -> Result<(), DeliverError> {
        let started = Instant::now();
        let items = self.admit(taken).await?;
        if items.is_empty() {
            return Ok(());
        }
        let admitted = started.elapsed();
        let (ctx, state, basis) = self.fork().await?;
        // The nonce the pending state expects next (what is in flight counted in).
        let relayer = self.relayer;
        let reader = state.clone();
        let nonce = tokio::task::spawn_blocking(move || reader.basic(relayer))
            .await
            .map_err(|e| DeliverError::Execute(e.to_string()))?
            .map_err(|e| DeliverError::Execute(e.to_string()))?
            .map_or(0, |a| a.nonce);
        let forked = started.elapsed();
        let txs: Vec<TxEnv> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let data =
                    Mailbox::processCall { metadata: item.metadata.clone(), message: item.message.encode().into() };
                self.tx_env(&ctx, nonce + i as u64, SIMULATION_GAS, data.abi_encode())
            })
            .collect();
        let outcome = self.execute(state.clone(), ctx.clone(), txs).await?;
        let simulated = started.elapsed();

        let mut sendable = Vec::new();
        for (item, predicted) in items.into_iter().zip(outcome.outcomes) {
            match &predicted.status {
                TxStatus::Success => sendable.push((item, predicted.gas_used)),
                TxStatus::Invalid { reason } => {
                    // Our own transaction is invalid (funds, nonce): not the message's fault.
                    error!(chain = %self.name, id = %item.record.id, origin = item.record.origin, destination = item.record.destination, %reason, "delivery transaction invalid; will retry");
                    bus::ack(&item.js, AckKind::Nak(Some(Duration::from_secs(5)))).await;
                }
                TxStatus::Revert { .. } | TxStatus::Halt { .. } => {
                    let (label, reason) = revert_reason(&predicted);
                    self.settle_failed(item, label, reason).await?;
                }
            }
        }
        // Half a block each, so that two fit a block, and within the per-transaction cap.
        let chunk_gas = (ctx.block.gas_limit / 2).min(TX_GAS_CAP);
        let messages = sendable.len();
        let chunks = self.chunks(sendable, chunk_gas);
        if chunks.is_empty() {
            return Ok(());
        }
        // Every processBatch of the round predicted in order in one batch, so that each
        // sees what the ones before it change (first-time balances cost more gas).
        let calls: Vec<Vec<u8>> = chunks.iter().map(|items| process_batch(items)).collect();
        let txs = calls
            .iter()
            .enumerate()
            .map(|(i, data)| self.tx_env(&ctx, nonce + i as u64, chunk_gas, data.clone()))
            .collect();
        let predicted = self.execute(state, ctx, txs).await?.outcomes;
        let batched = started.elapsed();
        for ((items, data), predicted) in chunks.into_iter().zip(calls).zip(predicted) {
            self.send_batch(items, data, predicted, basis.clone()).await?;
        }
        debug!(chain = %self.name, messages, ?admitted, ?forked, ?simulated, ?batched, sent = ?started.elapsed(), "round");
        Ok(())
    }

    /// Decodes and checks what came off the bus; refuses bad input, acks replays.
    async fn admit(&self, taken: Vec<JsMessage>) -> Result<Vec<Item>, DeliverError> {
        let mut items: Vec<Item> = Vec::new();
        let mut unconfirmed: Vec<Item> = Vec::new();
        // Records first seen here, or that this process had not seen published yet.
        let mut received: Vec<MessageRecord> = Vec::new();
        let mut seen = HashSet::new();
        for js in taken {
            if js.info().is_ok_and(|info| info.delivered > 1) {
                self.context.metrics.nats_redeliveries_total.with_label_values(&[self.name.as_str()]).inc();
            }
            let Checked { deliverable, message, stored } = match self.check(&js.payload)? {
                Ok(checked) => checked,
                Err((label, reason)) => {
                    warn!(chain = %self.name, subject = %js.subject, %reason, "refused a deliverable");
                    self.context.metrics.bad_input("nats_message", label);
                    bus::ack(&js, AckKind::Term).await;
                    continue;
                }
            };
            let id = message.id();
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
                unconfirmed.push(Item { js, message, metadata: deliverable.metadata, record });
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
            items.push(Item { js, message, metadata: deliverable.metadata, record });
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
        let latest = self.rpc("eth_blockNumber", self.provider.get_block_number()).await?;
        let ids: Vec<B256> = unconfirmed.iter().map(|i| i.record.id).collect();
        let now = self.delivered(&ids, latest).await?;
        let final_ = self.delivered(&ids, latest.saturating_sub(self.chain.confirmations)).await?;
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
        if u64::from(message.destination) != self.chain.chain_id {
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
        if !known && let Err(e) = self.context.validators.verify(&attestation, &qc) {
            return Ok(Err(("bad_certificate", format!("message {id}: {e}"))));
        }
        Ok(Ok(Checked { deliverable, message, stored }))
    }

    /// The context of the next block, and the state at the latest one with the
    /// predicted changes of the transactions in flight that it does not include yet.
    async fn fork(&self) -> Result<(BlockContext, Arc<dyn StateSource>, Basis), DeliverError> {
        let latest = self
            .rpc("eth_getBlockByNumber", self.provider.get_block_by_number(Default::default()).into_future())
            .await?;
        let header = latest.ok_or_else(|| DeliverError::Rpc("no latest block".into()))?.header.inner;
        let ctx = BlockContext::after(&header, self.chain.chain_id, SpecId::OSAKA);
        let (url, number) = (self.chain.rpc_url.clone(), header.number);
        let fork = tokio::task::spawn_blocking(move || ForkedState::connect(&url, number))
            .await
            .map_err(|e| DeliverError::Execute(e.to_string()))?
            .map_err(|e| DeliverError::Execute(e.to_string()))?;
        // Which of ours that block includes is told by our nonce in it, exactly.
        let mined = self.chain_nonce(number).await?;
        let mut pending = StateDiff::default();
        let mut layered = Vec::new();
        for sent in self.in_flight.iter().filter(|f| f.nonce >= mined) {
            pending.merge(&sent.predicted.state);
            layered.push(sent.nonce);
        }
        let basis = Basis { block: number, layered };
        Ok((ctx, Arc::new(LayeredState::new(Arc::new(fork), pending)), basis))
    }

    async fn chain_nonce(&self, block: u64) -> Result<u64, DeliverError> {
        self.rpc(
            "eth_getTransactionCount",
            self.provider.get_transaction_count(self.relayer).number(block).into_future(),
        )
        .await
    }

    fn tx_env(&self, ctx: &BlockContext, nonce: u64, gas_limit: u64, data: Vec<u8>) -> TxEnv {
        TxEnv {
            tx_type: 2,
            caller: self.relayer,
            gas_limit,
            gas_price: max_fee(ctx.block.basefee),
            gas_priority_fee: Some(TIP),
            kind: TxKind::Call(self.chain.mailbox),
            data: data.into(),
            nonce,
            chain_id: Some(self.chain.chain_id),
            ..Default::default()
        }
    }

    /// Runs a batch on the pool (prefetching what these kinds of call touched before),
    /// re-runs a sampled fraction sequentially, and counts it all.
    async fn execute(
        &self,
        state: Arc<dyn StateSource>,
        ctx: BlockContext,
        txs: Vec<TxEnv>,
    ) -> Result<BatchOutcome, DeliverError> {
        let (executor, predictor) = (self.executor.clone(), self.predictor.clone());
        let sample = self.check.pick();
        let (outcome, seconds, check) = tokio::task::spawn_blocking(move || {
            let predicted = predictor.predict(&txs);
            if let Err(e) = state.prefetch(&predicted.accounts, &predicted.slots) {
                tracing::debug!(error = %e, "prefetch failed; reading on demand");
            }
            let start = Instant::now();
            let outcome = executor.execute(state.clone(), ctx.clone(), txs.clone())?;
            let seconds = start.elapsed().as_secs_f64();
            predictor.learn(&txs, &outcome.access);
            let check = if sample && outcome.mode == ExecutionMode::Parallel {
                let start = Instant::now();
                let sequential = executor.execute_sequential(state, ctx, txs)?;
                Some((compare_with_sequential(&outcome, &sequential), start.elapsed().as_secs_f64()))
            } else {
                None
            };
            Ok::<_, ferry_executors::ExecutorError>((outcome, seconds, check))
        })
        .await
        .map_err(|e| DeliverError::Execute(e.to_string()))?
        .map_err(|e| DeliverError::Execute(e.to_string()))?;

        let (m, chain) = (&self.context.metrics, self.name.as_str());
        let mode = outcome.mode.as_str();
        m.executor_batches_total.with_label_values(&[chain, mode]).inc();
        m.executor_batch_seconds.with_label_values(&[chain, mode]).observe(seconds);
        m.executor_transactions_total.with_label_values(&[chain]).inc_by(outcome.outcomes.len() as u64);
        m.executor_reexecutions_total.with_label_values(&[chain]).inc_by(outcome.reexecutions as u64);
        if let Some((result, check_seconds)) = check {
            m.executor_sequential_check_seconds.with_label_values(&[chain]).observe(check_seconds);
            m.executor_checked_parallel_seconds.with_label_values(&[chain]).observe(seconds);
            if let Err(mismatch) = result {
                m.validation_mismatches_total.with_label_values(&[chain, "sequential"]).inc();
                error!(chain, %mismatch, "parallel execution differs from its sequential re-run");
            }
        }
        Ok(outcome)
    }

    /// Splits what can be sent into `processBatch` transactions within `gas_cap` and the
    /// configured batch size.
    fn chunks(&self, sendable: Vec<(Item, u64)>, gas_cap: u64) -> Vec<Vec<Item>> {
        let mut chunks: Vec<Vec<Item>> = Vec::new();
        let mut gas = 0;
        for (item, item_gas) in sendable {
            let full = chunks.last().is_none_or(|c| c.len() >= self.context.config.relayer.batch_size);
            if full || gas + item_gas > gas_cap {
                chunks.push(Vec::new());
                gas = 0;
            }
            gas += item_gas;
            if let Some(chunk) = chunks.last_mut() {
                chunk.push(item);
            }
        }
        chunks
    }

    /// Sends one `processBatch` transaction with its prediction and puts it in flight.
    async fn send_batch(
        &mut self,
        items: Vec<Item>,
        data: Vec<u8>,
        predicted: TxOutcome,
        basis: Basis,
    ) -> Result<(), DeliverError> {
        if predicted.status != TxStatus::Success {
            // The items succeeded one by one; the batch failing means the state moved.
            warn!(chain = %self.name, status = ?predicted.status, "batch prediction failed; retrying the messages");
            for item in &items {
                bus::ack(&item.js, AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
            return Ok(());
        }
        let margin = self.context.config.relayer.gas_margin_percent;
        let gas_limit = (predicted.gas_used * (100 + margin) / 100 + 50_000).min(TX_GAS_CAP);
        let ids: Vec<B256> = items.iter().map(|i| i.record.id).collect();
        let detail = format!("predicted gas {}", predicted.gas_used);
        self.context.store.update(&ids, |r| applied(r.execute(detail.clone())))?;
        let nonce = self.reserve_nonce().await?;
        let base = self.rpc("eth_gasPrice", self.provider.get_gas_price()).await?;
        let now = Instant::now();
        let mut sent = InFlight {
            nonce,
            items,
            data,
            gas_limit,
            predicted,
            basis,
            sent: Vec::new(),
            max_fee: base * 2 + TIP,
            tip: TIP,
            sent_at: now,
            progress_at: now + self.context.bus.ack_wait() / 3,
            resent: false,
        };
        self.send_version(&mut sent).await?;
        self.in_flight.push_back(sent);
        Ok(())
    }

    /// Sends `sent` (again, at its current fee, when replacing) and records the hash.
    async fn send_version(&self, sent: &mut InFlight) -> Result<(), DeliverError> {
        let request = TransactionRequest::default()
            .with_from(self.relayer)
            .with_to(self.chain.mailbox)
            .with_input(sent.data.clone())
            .with_nonce(sent.nonce)
            .with_gas_limit(sent.gas_limit)
            .with_max_fee_per_gas(sent.max_fee)
            .with_max_priority_fee_per_gas(sent.tip.min(sent.max_fee))
            .with_chain_id(self.chain.chain_id);
        let hash = match self.rpc("eth_sendRawTransaction", self.provider.send_transaction(request)).await {
            Ok(pending) => *pending.tx_hash(),
            Err(e) if !sent.sent.is_empty() => {
                warn!(chain = %self.name, nonce = sent.nonce, error = %e, "replacement refused; waiting on the sent one");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let (nonce, max_fee) = (sent.nonce, sent.max_fee);
        let detail = if sent.sent.is_empty() {
            format!("tx {hash} nonce {nonce}")
        } else {
            format!("replaced by tx {hash}, max fee {max_fee}")
        };
        info!(chain = %self.name, tx = %hash, nonce, messages = sent.items.len(), "delivery sent");
        let ids: Vec<B256> = sent.items.iter().map(|i| i.record.id).collect();
        self.context.store.update(&ids, |r| applied(r.submit(hash, detail.clone())))?;
        sent.sent.push(hash);
        Ok(())
    }

    /// On every new block: settles, in nonce order, the transactions in flight it mined;
    /// acks the messages of mined ones whose block is now final, or sends again the ones
    /// a reorg dropped; replaces the ones stuck for too long and keeps the messages of
    /// the others ours.
    async fn settle_in_flight(&mut self) -> Result<(), DeliverError> {
        if self.in_flight.is_empty() && self.confirming.is_empty() {
            return Ok(());
        }
        // Before anything that can fail or wait: the messages held stay ours.
        self.keep_held().await;
        let latest = self.rpc("eth_blockNumber", self.provider.get_block_number()).await?;
        if latest != self.seen_block {
            let mut waiting = VecDeque::with_capacity(self.in_flight.len());
            while let Some(sent) = self.in_flight.pop_front() {
                let settled = match self.receipt(&sent).await {
                    // A mined one that fails to settle is not lost: its messages are
                    // unacked and come back from JetStream.
                    Ok(Some(receipt)) => self.settle(sent, receipt).await,
                    Ok(None) => {
                        waiting.push_back(sent);
                        continue;
                    }
                    Err(e) => {
                        waiting.push_back(sent);
                        Err(e)
                    }
                };
                match settled {
                    Ok(Some(mined)) => self.confirming.push_back(mined),
                    Ok(None) => {}
                    Err(e) => {
                        // The ones not yet mined stay tracked, in nonce order.
                        waiting.extend(self.in_flight.drain(..));
                        self.in_flight = waiting;
                        return Err(e);
                    }
                }
            }
            self.in_flight = waiting;
            self.finalize(latest).await?;
            self.seen_block = latest;
        }
        let stuck_after = Duration::from_secs(self.context.config.relayer.stuck_after_secs.max(1));
        let now = Instant::now();
        let mut in_flight = std::mem::take(&mut self.in_flight);
        let mut result = Ok(());
        for sent in in_flight.iter_mut() {
            if result.is_ok() && now >= sent.sent_at + stuck_after {
                let chain = self.name.as_str();
                self.context.metrics.submitter_transactions_total.with_label_values(&[chain, "replaced"]).inc();
                sent.max_fee = sent.max_fee * 5 / 4 + 1;
                sent.tip = sent.tip * 5 / 4 + 1;
                sent.sent_at = now;
                warn!(chain, nonce = sent.nonce, max_fee = sent.max_fee, "delivery stuck; replacing with a higher fee");
                result = self.send_version(sent).await;
            }
        }
        self.in_flight = in_flight;
        result
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
    /// a transaction whose block was reorged away (and is not mined elsewhere) goes back
    /// in flight, its messages undelivered, and is sent again with its nonce.
    async fn finalize(&mut self, latest: u64) -> Result<(), DeliverError> {
        let depth = self.chain.confirmations;
        while let Some(mined) = self.confirming.front() {
            if latest < mined.block + depth {
                break;
            }
            let canonical = self.block_hash(mined.block).await?;
            let Some(mut mined) = self.confirming.pop_front() else { break };
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
            if let Some((block, hash)) = moved {
                (mined.block, mined.block_hash) = (block, hash);
                self.confirming.push_front(mined);
                continue;
            }
            self.reorged(mined).await?;
        }
        Ok(())
    }

    /// The canonical block and hash holding whichever version of `sent` is mined now.
    async fn remined(&self, sent: &InFlight) -> Result<Option<(u64, B256)>, DeliverError> {
        let Some(receipt) = self.receipt(sent).await? else { return Ok(None) };
        let (Some(block), Some(hash)) = (receipt.block_number, receipt.block_hash) else { return Ok(None) };
        Ok((self.block_hash(block).await? == Some(hash)).then_some((block, hash)))
    }

    /// A delivery dropped by a reorg of this chain: back in flight first (so that nothing
    /// below can lose it), its messages undelivered in the store, and the same transaction
    /// (same nonce, so later ones are not left behind a gap) sent again; if that send
    /// fails, the stuck-transaction replacement sends it later.
    async fn reorged(&mut self, mined: Mined) -> Result<(), DeliverError> {
        let Mined { mut sent, block, block_hash } = mined;
        let chain = self.name.as_str();
        warn!(chain, nonce = sent.nonce, block, %block_hash, messages = sent.items.len(), "delivery reorged away; sending it again");
        self.context.metrics.submitter_transactions_total.with_label_values(&[chain, "reorged"]).inc();
        // The same transaction: it runs on the state the reorg went back to, so it does
        // what it was predicted to do (items that failed in it fail again, already parked).
        sent.resent = true;
        sent.sent_at = Instant::now();
        let ids: Vec<B256> = sent.items.iter().map(|i| i.record.id).collect();
        let at = self.in_flight.iter().position(|f| f.nonce > sent.nonce).unwrap_or(self.in_flight.len());
        self.in_flight.insert(at, sent);
        let detail = format!("block {block} ({block_hash}) that delivered it was reorged away");
        self.context.store.update(&ids, |r| applied(r.reorg(detail.clone())))?;
        let mut in_flight = std::mem::take(&mut self.in_flight);
        let result = self.send_version(&mut in_flight[at]).await;
        self.in_flight = in_flight;
        result
    }

    /// The canonical hash of block `number` of this chain.
    async fn block_hash(&self, number: u64) -> Result<Option<B256>, DeliverError> {
        let block =
            self.rpc("eth_getBlockByNumber", self.provider.get_block_by_number(number.into()).into_future()).await?;
        Ok(block.map(|b| b.header.hash))
    }

    /// The receipt of whichever version of `sent` was mined, if one was.
    async fn receipt(&self, sent: &InFlight) -> Result<Option<TransactionReceipt>, DeliverError> {
        for hash in sent.sent.iter().rev() {
            let receipt = self.rpc("eth_getTransactionReceipt", self.provider.get_transaction_receipt(*hash)).await?;
            if receipt.is_some() {
                return Ok(receipt);
            }
        }
        Ok(None)
    }

    /// Validates a mined transaction's receipt against its prediction and records its
    /// messages; returns it holding the delivered ones, to be acked once final.
    async fn settle(&self, mut sent: InFlight, receipt: TransactionReceipt) -> Result<Option<Mined>, DeliverError> {
        let m = &self.context.metrics;
        let chain = self.name.as_str();
        m.submitter_batch_size.with_label_values(&[chain]).observe(sent.items.len() as f64);
        let outcome = if receipt.status() { "success" } else { "reverted" };
        m.submitter_transactions_total.with_label_values(&[chain, outcome]).inc();
        let predicted = &sent.predicted;
        let mismatch = compare_with_receipt(predicted, &receipt).err().map(|e| {
            m.validation_mismatches_total.with_label_values(&[chain, "receipt"]).inc();
            error!(chain, tx = %receipt.transaction_hash, nonce = sent.nonce, block = ?receipt.block_number, predicted_on = sent.basis.block, layered = ?sent.basis.layered, mismatch = %e, predicted_gas = predicted.gas_used, receipt_gas = receipt.gas_used, predicted_logs = predicted.logs.len(), receipt_logs = receipt.inner.logs().len(), "receipt differs from the prediction");
            e.to_string()
        });
        let items = std::mem::take(&mut sent.items);
        sent.items = self.confirm(items, &receipt, mismatch, !sent.resent).await?;
        self.update_balance().await;
        let (Some(block), Some(block_hash)) = (receipt.block_number, receipt.block_hash) else {
            return Err(DeliverError::Rpc(format!("receipt {} without a block", receipt.transaction_hash)));
        };
        Ok((!sent.items.is_empty()).then_some(Mined { sent, block, block_hash }))
    }

    /// The next nonce: the larger of the stored one and the chain's pending count, moved
    /// on in the store before the transaction goes out.
    async fn reserve_nonce(&mut self) -> Result<u64, DeliverError> {
        let chain_id = self.chain.chain_id;
        let pending = self
            .rpc("eth_getTransactionCount", self.provider.get_transaction_count(self.relayer).pending().into_future())
            .await?;
        // The node's pending count is the authority (a stored nonce above it would leave a
        // gap that never fills); the stored one says what we sent before a restart.
        let stored = self.context.store.nonce(chain_id, self.relayer)?.unwrap_or(0);
        if stored > pending {
            warn!(chain = %self.name, stored, pending, "transactions sent before were dropped by the node; reusing their nonces");
        }
        // Never a nonce still held in flight (after a restart of this loop, say).
        let held = self.in_flight.iter().map(|f| f.nonce + 1).max().unwrap_or(0);
        let nonce = pending.max(self.next_nonce.unwrap_or(0)).max(held);
        self.context.store.write(|tx| tx.set_nonce(chain_id, self.relayer, nonce + 1))?;
        self.next_nonce = Some(nonce + 1);
        Ok(nonce)
    }

    /// Marks each message delivered (once `delivered(id)` reads true; returned, to be
    /// acked when the block is final) or parked (its item failed on chain, acked); anything
    /// else goes back for another try. `count` is false for a delivery sent again after a
    /// reorg, which the metrics already counted.
    async fn confirm(
        &self,
        items: Vec<Item>,
        receipt: &TransactionReceipt,
        mismatch: Option<String>,
        count: bool,
    ) -> Result<Vec<Item>, DeliverError> {
        let failed: HashMap<B256, Bytes> = receipt
            .inner
            .logs()
            .iter()
            .filter_map(|l| l.log_decode::<Mailbox::ProcessFailed>().ok())
            .map(|l| (l.inner.data.id, l.inner.data.reason.clone()))
            .collect();
        let block = receipt.block_number.unwrap_or_default();
        let ids: Vec<B256> = items.iter().map(|i| i.record.id).collect();
        let delivered = self.delivered(&ids, block).await?;
        let tx = receipt.transaction_hash;
        let detail = format!("tx {tx}");
        let done: Vec<B256> = ids.iter().zip(&delivered).filter(|(_, d)| **d).map(|(id, _)| *id).collect();
        // One write for the whole transaction's messages: they were delivered together.
        self.context.store.update(&done, |r| applied(r.deliver(mismatch.clone(), detail.clone())))?;
        let mut kept = Vec::with_capacity(done.len());
        for (item, delivered) in items.into_iter().zip(delivered) {
            let id = item.record.id;
            if delivered {
                if count {
                    self.count_delivered(&item.record);
                }
                info!(%id, origin = item.message.origin, destination = item.message.destination, %tx, "delivered");
                kept.push(item);
            } else if let Some(reason) = failed.get(&id) {
                let (label, text) = decode_revert(reason, "process_failed");
                self.settle_failed(item, label, format!("failed on chain in {tx}: {text}")).await?;
            } else {
                warn!(%id, origin = item.message.origin, destination = item.message.destination, %tx, status = receipt.status(), "not delivered by its transaction; will retry");
                bus::ack(&item.js, AckKind::Nak(Some(Duration::from_secs(2)))).await;
            }
        }
        Ok(kept)
    }

    /// `Mailbox.delivered(id)` at `block` for each of `ids`, read in JSON-RPC batches.
    async fn delivered(&self, ids: &[B256], block: u64) -> Result<Vec<bool>, DeliverError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(READS_PER_REQUEST) {
            let mut batch = alloy::rpc::client::BatchRequest::new(self.provider.client());
            let mut waiters = Vec::with_capacity(chunk.len());
            for id in chunk {
                let call = TransactionRequest::default()
                    .with_to(self.chain.mailbox)
                    .with_input(Mailbox::deliveredCall { id: *id }.abi_encode());
                let waiter = batch
                    .add_call::<_, Bytes>("eth_call", &(call, BlockId::number(block)))
                    .map_err(|e| DeliverError::Rpc(format!("eth_call: {e}")))?;
                waiters.push(waiter);
            }
            self.rpc("eth_call", batch.send()).await?;
            for waiter in waiters {
                let bytes = waiter.await.map_err(|e| DeliverError::Rpc(format!("eth_call: {e}")))?;
                let delivered = Mailbox::deliveredCall::abi_decode_returns(&bytes)
                    .map_err(|e| DeliverError::Rpc(format!("delivered(): {e}")))?;
                out.push(delivered);
            }
        }
        Ok(out)
    }

    /// Parks a message whose delivery reverts, or settles it as delivered when the
    /// revert is the Mailbox saying it already was (and `delivered(id)` agrees).
    async fn settle_failed(&self, item: Item, label: &'static str, reason: String) -> Result<(), DeliverError> {
        let id = item.record.id;
        if label == "AlreadyDelivered" {
            let latest = self.rpc("eth_blockNumber", self.provider.get_block_number()).await?;
            let final_block = latest.saturating_sub(self.chain.confirmations);
            if self.delivered(&[id], final_block).await?.first() == Some(&true) {
                // Not delivered by us: what validation found before stays.
                self.context.store.update(&[id], |r| {
                    let mismatch = r.mismatch().map(str::to_owned);
                    applied(r.deliver(mismatch, "already delivered".into()))
                })?;
                info!(%id, origin = item.message.origin, destination = item.message.destination, "already delivered; acked");
                bus::ack(&item.js, AckKind::Ack).await;
                return Ok(());
            }
            if self.delivered(&[id], latest).await?.first() == Some(&true) {
                // Somebody's delivery, in a block not yet final: acked once it is.
                bus::ack(&item.js, AckKind::Nak(Some(FINALITY_RETRY))).await;
                return Ok(());
            }
        }
        self.context.store.update(&[id], |r| applied(r.park(reason.clone())))?;
        let origin = self.context.chain_label(item.message.origin.into());
        let destination = self.context.chain_label(item.message.destination.into());
        self.context
            .metrics
            .messages_parked_total
            .with_label_values(&[origin.as_str(), destination.as_str(), label])
            .inc();
        warn!(%id, origin = item.message.origin, destination = item.message.destination, %reason, "parked: delivery would revert");
        bus::ack(&item.js, AckKind::Ack).await;
        Ok(())
    }

    fn count_delivered(&self, record: &MessageRecord) {
        let origin = self.context.chain_label(record.origin.into());
        let destination = self.context.chain_label(record.destination.into());
        let labels = [origin.as_str(), destination.as_str()];
        self.context.metrics.messages_delivered_total.with_label_values(&labels).inc();
        let latency = (now_ms() as f64 / 1000.0 - record.block.timestamp as f64).max(0.0);
        self.context.metrics.message_delivery_seconds.with_label_values(&labels).observe(latency);
    }

    async fn update_balance(&self) {
        if let Ok(balance) = self.rpc("eth_getBalance", self.provider.get_balance(self.relayer).into_future()).await {
            let wei: f64 = balance.to_string().parse().unwrap_or(f64::MAX);
            self.context.metrics.submitter_wallet_balance_wei.with_label_values(&[self.name.as_str()]).set(wei);
        }
    }

    async fn rpc<T, E: std::fmt::Display>(
        &self,
        method: &str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, DeliverError> {
        // A node that never answers must not hold the deliverer forever: the round fails
        // and is retried (what it had taken comes back from JetStream).
        let call = self.context.metrics.rpc(&self.name, method, call);
        match tokio::time::timeout(RPC_TIMEOUT, call).await {
            Ok(result) => result.map_err(|e| DeliverError::Rpc(format!("{method}: {e}"))),
            Err(_) => Err(DeliverError::Rpc(format!("{method}: no answer in {RPC_TIMEOUT:?}"))),
        }
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

fn max_fee(basefee: u64) -> u128 {
    u128::from(basefee) * 2 + TIP
}

/// The calldata of `processBatch` for `items`.
fn process_batch(items: &[Item]) -> Vec<u8> {
    Mailbox::processBatchCall {
        metadata: items.iter().map(|i| i.metadata.clone()).collect(),
        messages: items.iter().map(|i| Bytes::from(i.message.encode())).collect(),
    }
    .abi_encode()
}

/// A metric label and a readable reason for a failed delivery.
fn revert_reason(outcome: &TxOutcome) -> (&'static str, String) {
    match &outcome.status {
        TxStatus::Halt { reason } => ("halt", reason.clone()),
        TxStatus::Revert { reason } => {
            let (label, decoded) = decode_revert(&outcome.output, "revert");
            if label == "revert" { (label, reason.clone()) } else { (label, decoded) }
        }
        _ => ("revert", format!("{:?}", outcome.status)),
    }
}

/// Names a revert by the Mailbox's or the bridge's error it carries.
fn decode_revert(data: &[u8], fallback: &'static str) -> (&'static str, String) {
    if let Ok(e) = Mailbox::MailboxErrors::abi_decode(data) {
        let label = match &e {
            Mailbox::MailboxErrors::AlreadyDelivered(_) => "AlreadyDelivered",
            Mailbox::MailboxErrors::InvalidRecipient(_) => "InvalidRecipient",
            Mailbox::MailboxErrors::UnknownOrigin(_) => "UnknownOrigin",
            Mailbox::MailboxErrors::InsufficientSignatures(_)
            | Mailbox::MailboxErrors::InvalidSignature(_)
            | Mailbox::MailboxErrors::SignersNotAscending(_)
            | Mailbox::MailboxErrors::NotValidator(_) => "bad_signatures",
            _ => "mailbox",
        };
        return (label, format!("{e:?}"));
    }
    if let Ok(e) = TokenBridge::TokenBridgeErrors::abi_decode(data) {
        return ("bridge", format!("{e:?}"));
    }
    if let Ok(e) = TestRecipient::TestRecipientErrors::abi_decode(data) {
        return ("recipient", format!("{e:?}"));
    }
    if let Ok(text) = <alloy::sol_types::Revert as alloy::sol_types::SolError>::abi_decode(data) {
        return ("recipient", text.reason);
    }
    (
        fallback,
        if data.is_empty() {
            "reverted without data".into()
        } else {
            format!("revert data {}", Bytes::copy_from_slice(data))
        },
    )
}

/// Why a delivery round stopped (retried; unacked messages come back).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliverError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] crate::StoreError),
    #[error("bus: {0}")]
    Bus(String),
    #[error("rpc: {0}")]
    Rpc(String),
    #[error("execution: {0}")]
    Execute(String),
}

impl From<crate::BusError> for DeliverError {
    fn from(e: crate::BusError) -> Self {
        Self::Bus(e.to_string())
    }
}
