//! Prediction: a round's messages pre-executed on the destination's revm pool, on the
//! chain's latest state with the predicted changes of our transactions still in flight
//! laid over it; the ones that would fail are told apart, the rest split into
//! `processBatch` transactions whose gas and effects are predicted in turn.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use alloy::{
    primitives::{Address, B256, Bytes, TxKind},
    sol_types::{SolCall, SolEvent},
};
use ferry_executors::{
    BatchOutcome, BlockContext, ExecutionMode, Executor, ExecutorConfig, ForkedState, LayeredState, SpecId, StateDiff,
    StateSource, TxEnv, TxOutcome, TxStatus,
    validation::{SampledCheck, compare_with_sequential},
};
use ferry_messages::contracts::Mailbox;
use tracing::{debug, error};

use super::{
    DeliverError, Item, TIP,
    destination::Destination,
    max_fee,
    revert::{decode_revert, revert_reason},
    slots::DerivedSlots,
};
use crate::{Context, cpu};

/// Gas a delivery is assumed to add to a `processBatch` until one has been predicted:
/// above what a token transfer's delivery needs, so that first chunks rarely run out.
const UNSEEN_ITEM_GAS: u64 = 250_000;
/// Most gas one transaction may ask for since Osaka (EIP-7825).
pub(super) const TX_GAS_CAP: u64 = 1 << 24;

/// The state a round was predicted on: the chain at `block`, with the predicted changes of
/// our transactions in flight with these nonces laid over it.
#[derive(Debug, Clone)]
pub(super) struct Basis {
    /// The latest block when the round was predicted.
    pub block: u64,
    /// Nonces of the transactions in flight whose predictions were laid over it.
    pub layered: Vec<u64>,
}

/// One `processBatch` transaction to send.
pub(super) struct Chunk {
    /// Its messages.
    pub items: Vec<Item>,
    /// Its calldata.
    pub data: Vec<u8>,
    /// What it is predicted to do.
    pub predicted: TxOutcome,
}

/// What a round's prediction found.
pub(super) struct Round {
    /// The transactions to send, in nonce order.
    pub chunks: Vec<Chunk>,
    /// Messages whose delivery transaction itself is invalid (our funds or nonce, not
    /// the message's fault), with why.
    pub invalid: Vec<(Item, String)>,
    /// Messages whose delivery would revert: a metric label and the reason.
    pub reverted: Vec<(Item, &'static str, String)>,
    /// What the prediction stood on.
    pub basis: Basis,
}

/// The prediction stage of one destination.
pub(super) struct Prediction {
    context: Arc<Context>,
    destination: Arc<Destination>,
    executor: Arc<Executor>,
    check: SampledCheck,
    reads: Reads,
    /// Gas one delivery adds to a `processBatch`, learned from predictions (0: not yet).
    item_gas: AtomicU64,
    /// The last round's fork, which the next one follows (codes kept, what was read re-read).
    last_fork: std::sync::Mutex<Option<Arc<ForkedState>>>,
    /// Slots deliveries read that follow from their messages.
    slots: DerivedSlots,
}

/// The runtime, one thread built once per destination, on which the executor's workers
/// read the forked state: apart from the service's runtime, so that a read waits on the
/// node and not behind whatever else the service's threads are busy with.
struct Reads {
    handle: tokio::runtime::Handle,
    /// Taken on drop.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Reads {
    fn new(chain: &str) -> Result<Self, DeliverError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("ferry-reads-{chain}"))
            .enable_all()
            .build()
            .map_err(DeliverError::Runtime)?;
        Ok(Self { handle: runtime.handle().clone(), runtime: Some(runtime) })
    }
}

impl Drop for Reads {
    fn drop(&mut self) {
        // Dropped inside the service's runtime when the deliverer's task ends: shutting
        // down without blocking is the only way allowed there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Prediction {
    pub(super) fn new(context: Arc<Context>, destination: Arc<Destination>) -> Result<Self, DeliverError> {
        let workers = destination.chain.executor_workers.unwrap_or_else(|| ExecutorConfig::default().workers);
        let executor = Arc::new(Executor::new(ExecutorConfig { workers, record_access: true, ..Default::default() }));
        let check = SampledCheck::new(context.config.relayer.sequential_check_every);
        let reads = Reads::new(&destination.name)?;
        Ok(Self {
            context,
            destination,
            executor,
            check,
            reads,
            item_gas: AtomicU64::new(0),
            last_fork: std::sync::Mutex::new(None),
            slots: DerivedSlots::default(),
        })
    }

    /// Predicts a round of `items` on top of `in_flight` (nonce and predicted changes of
    /// each transaction sent and not yet settled, in nonce order).
    ///
    /// Each delivery is executed once, inside the `processBatch` that will carry it: the
    /// Mailbox runs every item in its own call frame and logs `ProcessFailed(id, reason)`
    /// for one that fails, so the batch's own logs tell each item's fate. Items that fail
    /// are set apart and the chunks predicted again without them (they changed nothing,
    /// so once is enough); a chunk whose gas ran out is split.
    pub(super) async fn predict(
        &self,
        items: Vec<Item>,
        in_flight: &[(u64, &StateDiff)],
    ) -> Result<Round, DeliverError> {
        let started = Instant::now();
        let (ctx, state, fork, basis) = self.fork(in_flight).await?;
        // What the round will read, fetched in one batched request with what the last
        // round read: our account, the Mailbox, and the slots that follow from the messages.
        let chain = &self.destination.chain;
        let accounts = vec![self.destination.relayer, chain.mailbox];
        let derived = self.slots.predict(items.iter().map(|i| &i.message));
        let (relayer, reader) = (self.destination.relayer, state.clone());
        let nonce = tokio::task::spawn_blocking(move || {
            cpu::scope(cpu::Stage::Execute, || {
                if let Err(e) = reader.prefetch(&accounts, &derived) {
                    debug!(error = %e, "prefetch failed; reading on demand");
                }
                // The nonce the pending state expects next (what is in flight counted in).
                reader.basic(relayer)
            })
        })
        .await??
        .map_or(0, |a| a.nonce);
        let forked = started.elapsed();
        // Half a block each, so that two fit a block, and within the per-transaction cap.
        let chunk_gas = (ctx.block.gas_limit / 2).min(TX_GAS_CAP);
        let mut chunks = self.chunks(items, chunk_gas);
        let (mut invalid, mut reverted) = (Vec::new(), Vec::new());
        // Ends: a pass that changes anything removes an item or splits a chunk of several.
        for pass in 1.. {
            if chunks.is_empty() {
                self.count_reads(&fork);
                return Ok(Round { chunks: Vec::new(), invalid, reverted, basis });
            }
            // Every processBatch of the round predicted in order in one batch, so that each
            // sees what the ones before it change (first-time balances cost more gas).
            let calls: Vec<Vec<u8>> = chunks.iter().map(|items| process_batch(items)).collect();
            let txs = calls
                .iter()
                .enumerate()
                .map(|(i, data)| self.tx_env(&ctx, nonce + i as u64, chunk_gas, data.clone()))
                .collect();
            let executed = self.execute(state.clone(), ctx.clone(), txs, &fork).await?;
            let missed = fork.missed_slots();
            if !missed.is_empty() {
                // Slots the prefetch did not foresee: learn what of them the messages tell.
                let learned = self.slots.learn(chunks.iter().flatten().map(|i| &i.message), &missed);
                debug!(chain = %self.destination.name, learned, missed = missed.len(), reads = ?fork.reads(), "state reads missed the prefetch");
            }
            let predicted = executed.outcomes;
            let mut changed = false;
            let mut next = Vec::with_capacity(chunks.len());
            let mut ready = Vec::with_capacity(chunks.len());
            for ((items, data), outcome) in chunks.into_iter().zip(calls).zip(predicted) {
                match read_chunk(items, &outcome, chunk_gas, self.destination.chain.mailbox) {
                    ChunkFate::Ready(items) => {
                        self.learn_item_gas(outcome.gas_used, items.len());
                        ready.push((data, outcome));
                        next.push(items);
                    }
                    ChunkFate::Invalid(items, reason) => {
                        invalid.extend(items.into_iter().map(|item| (item, reason.clone())));
                        changed = true;
                    }
                    ChunkFate::Failed { kept, failed } => {
                        reverted.extend(failed);
                        next.extend((!kept.is_empty()).then_some(kept));
                        changed = true;
                    }
                    ChunkFate::TooBig(mut items) => {
                        let half = items.split_off(items.len() / 2);
                        next.extend([items, half]);
                        changed = true;
                    }
                }
            }
            chunks = next;
            if !changed {
                // The chunks predicted together are the ones sent, in this order.
                let chunks = chunks
                    .into_iter()
                    .zip(ready)
                    .map(|(items, (data, predicted))| Chunk { items, data, predicted })
                    .collect();
                debug!(chain = %self.destination.name, ?forked, pass, predicted = ?started.elapsed(), "round predicted");
                self.count_reads(&fork);
                return Ok(Round { chunks, invalid, reverted, basis });
            }
        }
        unreachable!("the passes end: each change removes an item or splits a chunk")
    }

    /// Counts how a round's state reads were answered.
    fn count_reads(&self, fork: &ForkedState) {
        let reads = fork.reads();
        let m = &self.destination.metrics;
        m.state_reads_cache.inc_by(reads.cache);
        m.state_reads_rpc.inc_by(reads.rpc);
    }

    /// Takes in a predicted chunk's gas per item, for the next rounds' chunking.
    fn learn_item_gas(&self, gas_used: u64, items: usize) {
        if items == 0 {
            return;
        }
        let per_item = gas_used / items as u64;
        let known = self.item_gas.load(Ordering::Relaxed);
        // A quick average: a kind of message that costs more shows within a few rounds.
        let updated = if known == 0 { per_item } else { (known * 3 + per_item) / 4 };
        self.item_gas.store(updated, Ordering::Relaxed);
    }

    /// The context of the next block, and the state at the latest one with the
    /// predicted changes of the transactions in flight that it does not include yet.
    async fn fork(
        &self,
        in_flight: &[(u64, &StateDiff)],
    ) -> Result<(BlockContext, Arc<dyn StateSource>, Arc<ForkedState>, Basis), DeliverError> {
        let header = self.destination.latest_header().await?;
        let chain = &self.destination.chain;
        let ctx = BlockContext::after(&header, chain.chain_id, SpecId::OSAKA);
        let number = header.number;
        // Read through the destination's provider: its timeouts, retries and RPC metrics;
        // following the last round's fork, whose codes stay and whose reads are re-read.
        let fork = {
            let mut last = self.last_fork.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let fork = Arc::new(match last.as_ref() {
                Some(previous) => previous.follow(number),
                None => ForkedState::new(self.destination.provider(), self.reads.handle.clone(), number),
            });
            *last = Some(fork.clone());
            fork
        };
        // Which of ours that block includes is told by our nonce in it, exactly.
        let mined = self.destination.nonce_at(number).await?;
        let mut pending = StateDiff::default();
        let mut layered = Vec::new();
        for (nonce, predicted) in in_flight.iter().filter(|(nonce, _)| *nonce >= mined) {
            pending.merge(predicted);
            layered.push(*nonce);
        }
        let basis = Basis { block: number, layered };
        let state: Arc<dyn StateSource> = Arc::new(LayeredState::new(fork.clone(), pending));
        Ok((ctx, state, fork, basis))
    }

    fn tx_env(&self, ctx: &BlockContext, nonce: u64, gas_limit: u64, data: Vec<u8>) -> TxEnv {
        let chain = &self.destination.chain;
        TxEnv {
            tx_type: 2,
            caller: self.destination.relayer,
            gas_limit,
            gas_price: max_fee(ctx.block.basefee),
            gas_priority_fee: Some(TIP),
            kind: TxKind::Call(chain.mailbox),
            data: data.into(),
            nonce,
            chain_id: Some(chain.chain_id),
            ..Default::default()
        }
    }

    /// Runs a batch on the pool, re-runs a sampled fraction sequentially, and counts it
    /// all. The re-run is timed against the run only when the run read nothing over RPC
    /// on its own: then both ran on the same snapshot equally warm, and the ratio measures
    /// the engine, not the network.
    async fn execute(
        &self,
        state: Arc<dyn StateSource>,
        ctx: BlockContext,
        txs: Vec<TxEnv>,
        fork: &Arc<ForkedState>,
    ) -> Result<BatchOutcome, DeliverError> {
        let executor = self.executor.clone();
        let sample = self.check.pick();
        let workers_before = executor.worker_cpu_seconds();
        let fork = fork.clone();
        let (outcome, seconds, check) = tokio::task::spawn_blocking(move || {
            cpu::scope(cpu::Stage::Execute, || {
                let misses = fork.reads().rpc;
                let start = Instant::now();
                let outcome = executor.execute(state.clone(), ctx.clone(), txs.clone())?;
                let seconds = start.elapsed().as_secs_f64();
                let warm = fork.reads().rpc == misses;
                let check = if sample && outcome.mode == ExecutionMode::Parallel {
                    let start = Instant::now();
                    let sequential = executor.execute_sequential(state, ctx, txs)?;
                    let timed = warm.then(|| start.elapsed().as_secs_f64());
                    Some((compare_with_sequential(&outcome, &sequential), timed))
                } else {
                    None
                };
                Ok::<_, ferry_executors::ExecutorError>((outcome, seconds, check))
            })
        })
        .await??;
        cpu::add(cpu::Stage::Execute, self.executor.worker_cpu_seconds() - workers_before);

        let m = &self.destination.metrics;
        m.batches.get(outcome.mode).inc();
        m.batch_seconds.get(outcome.mode).observe(seconds);
        m.transactions.inc_by(outcome.outcomes.len() as u64);
        m.reexecutions.inc_by(outcome.reexecutions as u64);
        if let Some((result, check_seconds)) = check {
            if let Some(check_seconds) = check_seconds {
                m.sequential_check_seconds.observe(check_seconds);
                m.checked_parallel_seconds.observe(seconds);
            }
            if let Err(mismatch) = result {
                m.sequential_mismatches.inc();
                error!(chain = %self.destination.name, %mismatch, "parallel execution differs from its sequential re-run");
            }
        }
        Ok(outcome)
    }

    /// Splits `items` into `processBatch` transactions of the configured batch size,
    /// each within `gas_cap` by the gas a delivery was last seen to need.
    fn chunks(&self, items: Vec<Item>, gas_cap: u64) -> Vec<Vec<Item>> {
        let learned = self.item_gas.load(Ordering::Relaxed);
        let item_gas = if learned == 0 { UNSEEN_ITEM_GAS } else { learned + learned / 10 };
        let per_chunk = ((gas_cap / item_gas.max(1)) as usize).clamp(1, self.context.config.relayer.batch_size.max(1));
        let mut chunks: Vec<Vec<Item>> = Vec::with_capacity(items.len().div_ceil(per_chunk));
        for item in items {
            match chunks.last_mut() {
                Some(chunk) if chunk.len() < per_chunk => chunk.push(item),
                _ => chunks.push(vec![item]),
            }
        }
        chunks
    }
}

/// What a chunk's prediction says of it.
enum ChunkFate {
    /// Every item delivered: send it as predicted.
    Ready(Vec<Item>),
    /// The transaction itself is invalid (our funds or nonce), with why.
    Invalid(Vec<Item>, String),
    /// Some items' deliveries failed (label and reason each); the rest are to be
    /// predicted again without them.
    Failed { kept: Vec<Item>, failed: Vec<(Item, &'static str, String)> },
    /// The chunk ran out of gas as a whole: to be split.
    TooBig(Vec<Item>),
}

/// Each item's fate in a predicted `processBatch` of `items` with `gas_limit`, from the
/// `ProcessFailed` logs of `mailbox` (a recipient could log the same event itself).
fn read_chunk(items: Vec<Item>, outcome: &TxOutcome, gas_limit: u64, mailbox: Address) -> ChunkFate {
    let ran_out = outcome.gas_used >= gas_limit - gas_limit / 32;
    match &outcome.status {
        TxStatus::Invalid { reason } => return ChunkFate::Invalid(items, reason.clone()),
        TxStatus::Revert { .. } | TxStatus::Halt { .. } if items.len() > 1 => return ChunkFate::TooBig(items),
        TxStatus::Revert { .. } | TxStatus::Halt { .. } => {
            let (label, reason) = revert_reason(outcome);
            return ChunkFate::Failed {
                kept: Vec::new(),
                failed: items.into_iter().map(|i| (i, label, reason.clone())).collect(),
            };
        }
        TxStatus::Success => {}
    }
    let failures: std::collections::HashMap<B256, Bytes> = outcome
        .logs
        .iter()
        .filter(|log| log.address == mailbox)
        .filter_map(|log| Mailbox::ProcessFailed::decode_log_data(&log.data).ok())
        .map(|e| (e.id, e.reason))
        .collect();
    if failures.is_empty() {
        return ChunkFate::Ready(items);
    }
    // An item that failed without a reason while the chunk used up its gas may have
    // failed for want of the chunk's gas, not its own fault: split first.
    if ran_out && items.len() > 1 {
        return ChunkFate::TooBig(items);
    }
    let (mut kept, mut failed) = (Vec::new(), Vec::new());
    for item in items {
        match failures.get(&item.record.id) {
            Some(reason) => {
                let (label, reason) = decode_revert(reason, "revert");
                failed.push((item, label, reason));
            }
            None => kept.push(item),
        }
    }
    ChunkFate::Failed { kept, failed }
}

/// The calldata of `processBatch` for `items`.
fn process_batch(items: &[Item]) -> Vec<u8> {
    Mailbox::processBatchCall {
        metadata: items.iter().map(|i| i.metadata.clone()).collect(),
        messages: items.iter().map(|i| Bytes::from(i.message.encode())).collect(),
    }
    .abi_encode()
}
