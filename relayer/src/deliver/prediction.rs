//! Prediction: a round's messages pre-executed on the destination's revm pool, on the
//! chain's latest state with the predicted changes of our transactions still in flight
//! laid over it; the ones that would fail are told apart, the rest split into
//! `processBatch` transactions whose gas and effects are predicted in turn.

use std::{sync::Arc, time::Instant};

use alloy::{
    primitives::{Bytes, TxKind},
    sol_types::SolCall,
};
use ferry_executors::{
    AccessPredictor, BatchOutcome, BlockContext, ExecutionMode, Executor, ExecutorConfig, ForkedState, LayeredState,
    SpecId, StateDiff, StateSource, TxEnv, TxOutcome, TxStatus,
    validation::{SampledCheck, compare_with_sequential},
};
use ferry_messages::contracts::Mailbox;
use tracing::{debug, error};

use super::{DeliverError, Item, TIP, destination::Destination, max_fee, revert::revert_reason};
use crate::{Context, cpu};

/// Gas each simulated `process` may use: far above what a delivery needs.
const SIMULATION_GAS: u64 = 3_000_000;
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
    predictor: Arc<AccessPredictor>,
    check: SampledCheck,
    reads: Reads,
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
        Ok(Self { context, destination, executor, predictor: Arc::new(AccessPredictor::new()), check, reads })
    }

    /// Predicts a round of `items` on top of `in_flight` (nonce and predicted changes of
    /// each transaction sent and not yet settled, in nonce order).
    pub(super) async fn predict(
        &self,
        items: Vec<Item>,
        in_flight: &[(u64, &StateDiff)],
    ) -> Result<Round, DeliverError> {
        let started = Instant::now();
        let (ctx, state, basis) = self.fork(in_flight).await?;
        // The nonce the pending state expects next (what is in flight counted in).
        let (relayer, reader) = (self.destination.relayer, state.clone());
        let nonce = tokio::task::spawn_blocking(move || reader.basic(relayer)).await??.map_or(0, |a| a.nonce);
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

        let (mut sendable, mut invalid, mut reverted) = (Vec::new(), Vec::new(), Vec::new());
        for (item, predicted) in items.into_iter().zip(outcome.outcomes) {
            match &predicted.status {
                TxStatus::Success => sendable.push((item, predicted.gas_used)),
                TxStatus::Invalid { reason } => invalid.push((item, reason.clone())),
                TxStatus::Revert { .. } | TxStatus::Halt { .. } => {
                    let (label, reason) = revert_reason(&predicted);
                    reverted.push((item, label, reason));
                }
            }
        }
        // Half a block each, so that two fit a block, and within the per-transaction cap.
        let chunk_gas = (ctx.block.gas_limit / 2).min(TX_GAS_CAP);
        let chunks = self.chunks(sendable, chunk_gas);
        if chunks.is_empty() {
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
        let predicted = self.execute(state, ctx, txs).await?.outcomes;
        let chunks = chunks
            .into_iter()
            .zip(calls)
            .zip(predicted)
            .map(|((items, data), predicted)| Chunk { items, data, predicted })
            .collect();
        debug!(chain = %self.destination.name, ?forked, ?simulated, predicted = ?started.elapsed(), "round predicted");
        Ok(Round { chunks, invalid, reverted, basis })
    }

    /// The context of the next block, and the state at the latest one with the
    /// predicted changes of the transactions in flight that it does not include yet.
    async fn fork(
        &self,
        in_flight: &[(u64, &StateDiff)],
    ) -> Result<(BlockContext, Arc<dyn StateSource>, Basis), DeliverError> {
        let header = self.destination.latest_header().await?;
        let chain = &self.destination.chain;
        let ctx = BlockContext::after(&header, chain.chain_id, SpecId::OSAKA);
        let number = header.number;
        // Read through the destination's provider: its timeouts, retries and RPC metrics.
        let fork = ForkedState::new(self.destination.provider(), self.reads.handle.clone(), number);
        // Which of ours that block includes is told by our nonce in it, exactly.
        let mined = self.destination.nonce_at(number).await?;
        let mut pending = StateDiff::default();
        let mut layered = Vec::new();
        for (nonce, predicted) in in_flight.iter().filter(|(nonce, _)| *nonce >= mined) {
            pending.merge(predicted);
            layered.push(*nonce);
        }
        let basis = Basis { block: number, layered };
        Ok((ctx, Arc::new(LayeredState::new(Arc::new(fork), pending)), basis))
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
        let workers_before = executor.worker_cpu_seconds();
        let (outcome, seconds, check) = tokio::task::spawn_blocking(move || cpu::scope(cpu::Stage::Execute, || {
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
        }))
        .await??;
        cpu::add(cpu::Stage::Execute, self.executor.worker_cpu_seconds() - workers_before);

        let m = &self.destination.metrics;
        m.batches.get(outcome.mode).inc();
        m.batch_seconds.get(outcome.mode).observe(seconds);
        m.transactions.inc_by(outcome.outcomes.len() as u64);
        m.reexecutions.inc_by(outcome.reexecutions as u64);
        if let Some((result, check_seconds)) = check {
            m.sequential_check_seconds.observe(check_seconds);
            m.checked_parallel_seconds.observe(seconds);
            if let Err(mismatch) = result {
                m.sequential_mismatches.inc();
                error!(chain = %self.destination.name, %mismatch, "parallel execution differs from its sequential re-run");
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
}

/// The calldata of `processBatch` for `items`.
fn process_batch(items: &[Item]) -> Vec<u8> {
    Mailbox::processBatchCall {
        metadata: items.iter().map(|i| i.metadata.clone()).collect(),
        messages: items.iter().map(|i| Bytes::from(i.message.encode())).collect(),
    }
    .abi_encode()
}
