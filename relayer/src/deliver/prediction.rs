//! Prediction: a round's `processBatch` transactions pre-executed on the destination's
//! revm pool, on the chain's latest state (a fork that follows the chain from round to
//! round) with the predicted changes of our transactions still in flight laid over it;
//! the messages that would fail are told apart and the rest predicted again without them.

use std::{sync::Arc, time::Instant};

use alloy::primitives::{TxKind, U256};
use ferry_executors::{
    BatchOutcome, BlockContext, ExecutionMode, Executor, ExecutorConfig, ForkedState, LayeredState, SpecId, StateDiff,
    StateSource, TxEnv, TxOutcome,
    validation::{SampledCheck, compare_with_sequential},
};
use tracing::{debug, error};

use super::{
    DeliverError, Item,
    chunks::{ChunkFate, Chunker, process_batch, read_chunk},
    destination::Destination,
    fees::FeePolicy,
    slots::DerivedSlots,
};
use crate::{Context, cpu};

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
    /// The number and timestamp of the block the round was predicted to be mined in.
    pub next: (u64, u64),
}

/// A transaction in flight as a round is predicted on top of it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layer<'a> {
    /// Its nonce.
    pub nonce: u64,
    /// The number and timestamp of the block it was predicted to be mined in.
    pub next: (u64, u64),
    /// Its predicted changes.
    pub state: &'a StateDiff,
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
    destination: Arc<Destination>,
    executor: Arc<Executor>,
    check: SampledCheck,
    reads: Reads,
    /// Splits rounds into `processBatch` transactions.
    chunker: Chunker,
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
            // Whatever its thread runs between waking and parking is the executor's reads.
            .on_thread_unpark(cpu::resume)
            .on_thread_park(|| cpu::pause(cpu::Stage::Execute))
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
        let chunker = Chunker::new(context.config.relayer.batch_size);
        Ok(Self {
            destination,
            executor,
            check,
            reads,
            chunker,
            last_fork: std::sync::Mutex::new(None),
            slots: DerivedSlots::default(),
        })
    }

    /// Predicts a round of `items` on top of `in_flight` (each transaction sent and not
    /// yet settled, in nonce order).
    ///
    /// Each delivery is executed once, inside the `processBatch` that will carry it: the
    /// Mailbox runs every item in its own call frame and logs `ProcessFailed(id, reason)`
    /// for one that fails, so the batch's own logs tell each item's fate. Items that fail
    /// are set apart and the chunks predicted again without them (they changed nothing,
    /// so once is enough); a chunk whose gas ran out is split.
    pub(super) async fn predict(&self, items: Vec<Item>, in_flight: &[Layer<'_>]) -> Result<Round, DeliverError> {
        let started = Instant::now();
        let (ctx, state, fork, basis) = self.fork(in_flight).await?;
        // What the round will read, fetched in one batched request with what the last
        // round read: our account, the Mailbox, and the slots that follow from the messages.
        // (The layered state's pending changes are laid over the fork's values: the fork
        // is what fetches.)
        let chain = &self.destination.chain;
        let accounts = vec![self.destination.relayer, chain.mailbox];
        let derived = self.slots.predict(items.iter().map(|i| &i.message));
        let (relayer, reader, forked_state) = (self.destination.relayer, state.clone(), fork.clone());
        let nonce = tokio::task::spawn_blocking(move || {
            cpu::scope(cpu::Stage::Execute, || {
                // The messages' slots are this round's: not re-read at the next block.
                if let Err(e) = forked_state.prefetch_round(&accounts, &[], &derived) {
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
        let mut chunks = self.chunker.split(items, chunk_gas);
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
            let missed = fork.take_missed_slots();
            if !missed.is_empty() {
                // Slots the prefetch did not foresee: learn what of them the messages tell.
                let learned = self.slots.learn(chunks.iter().flatten().map(|i| &i.message), &missed);
                debug!(chain = %self.destination.name, learned, missed = missed.len(), first = ?missed.iter().take(4).collect::<Vec<_>>(), reads = ?fork.reads(), "state reads missed the prefetch");
            }
            let predicted = executed.outcomes;
            let mut changed = false;
            let mut next = Vec::with_capacity(chunks.len());
            let mut ready = Vec::with_capacity(chunks.len());
            for ((items, data), outcome) in chunks.into_iter().zip(calls).zip(predicted) {
                match read_chunk(items, |i| i.record.id, &outcome, chunk_gas, self.destination.chain.mailbox) {
                    ChunkFate::Ready(items) => {
                        self.chunker.learn(outcome.gas_used, items.len());
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

    /// The context of the next block (no older than the ones the transactions in flight
    /// were predicted in), and the state at the latest one with the predicted changes of
    /// the transactions in flight that it does not include yet.
    async fn fork(
        &self,
        in_flight: &[Layer<'_>],
    ) -> Result<(BlockContext, Arc<dyn StateSource>, Arc<ForkedState>, Basis), DeliverError> {
        let header = self.destination.latest_header().await?;
        let chain = &self.destination.chain;
        let mut ctx = BlockContext::after(&header, chain.chain_id, SpecId::OSAKA);
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
        let (pending, layered) = lay_over(&mut ctx, in_flight, mined);
        let basis = Basis { block: number, layered, next: block_of(&ctx) };
        let state: Arc<dyn StateSource> = Arc::new(LayeredState::new(fork.clone(), pending));
        Ok((ctx, state, fork, basis))
    }

    fn tx_env(&self, ctx: &BlockContext, nonce: u64, gas_limit: u64, data: Vec<u8>) -> TxEnv {
        let chain = &self.destination.chain;
        let fees = FeePolicy::new(chain).predicted(u128::from(ctx.block.basefee));
        TxEnv {
            tx_type: 2,
            caller: self.destination.relayer,
            gas_limit,
            gas_price: fees.max_fee,
            gas_priority_fee: Some(fees.tip),
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
                let check = if sample && outcome.mode != ExecutionMode::Sequential {
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
}

/// The number and timestamp of the block `ctx` executes in.
fn block_of(ctx: &BlockContext) -> (u64, u64) {
    (ctx.block.number.saturating_to(), ctx.block.timestamp.saturating_to())
}

/// The predicted changes of the transactions in flight from nonce `mined` on (the ones
/// the latest block does not include), merged in nonce order, with their nonces; moves
/// `ctx` to no earlier a block than any of them was predicted in.
///
/// A later nonce is mined no earlier than an earlier one, so its block is not older than
/// the one that was predicted in. The latest header can be (an endpoint behind the one
/// asked before, a reorg to a shorter chain, a node that lies): a clock running
/// backwards over state written at a later time makes a contract's
/// `block.timestamp - updatedAt` underflow, and the delivery would look doomed.
fn lay_over(ctx: &mut BlockContext, in_flight: &[Layer<'_>], mined: u64) -> (StateDiff, Vec<u64>) {
    let mut pending = StateDiff::default();
    let mut layered = Vec::new();
    for layer in in_flight.iter().filter(|layer| layer.nonce >= mined) {
        pending.merge(layer.state);
        layered.push(layer.nonce);
        let (number, timestamp) = layer.next;
        ctx.block.number = ctx.block.number.max(U256::from(number));
        ctx.block.timestamp = ctx.block.timestamp.max(U256::from(timestamp));
    }
    (pending, layered)
}

#[cfg(test)]
mod tests {
    use alloy::consensus::Header;

    use super::*;

    fn at(number: u64, timestamp: u64) -> BlockContext {
        BlockContext::after(&Header { number, timestamp, ..Default::default() }, 31337, SpecId::OSAKA)
    }

    #[test]
    fn a_round_is_never_predicted_in_an_older_block_than_what_it_is_laid_over() {
        let diff = StateDiff::default();
        let layers = [
            Layer { nonce: 6, next: (120, 1_120), state: &diff },
            Layer { nonce: 7, next: (100, 1_100), state: &diff },
            Layer { nonce: 8, next: (101, 1_101), state: &diff },
        ];
        // A header behind the ones the transactions in flight were predicted on: the
        // round goes in the latest block any of them was predicted in.
        let mut ctx = at(90, 1_090);
        let (_, layered) = lay_over(&mut ctx, &layers, 7);
        assert_eq!(layered, [7, 8], "nonce 6 is mined: not laid over");
        assert_eq!(block_of(&ctx), (101, 1_101), "the mined transaction's block does not count");
        // A header ahead of them: the next block after it, as without anything in flight.
        let mut ctx = at(110, 1_110);
        lay_over(&mut ctx, &layers, 7);
        assert_eq!(block_of(&ctx), (111, 1_111));
        let mut ctx = at(110, 1_110);
        let (_, layered) = lay_over(&mut ctx, &layers, 9);
        assert!(layered.is_empty());
        assert_eq!(block_of(&ctx), (111, 1_111));
    }
}
