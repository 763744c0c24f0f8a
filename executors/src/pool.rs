//! The worker pool of one chain: threads that each own one reused EVM, fed batches.

use std::{
    sync::{Arc, Mutex, mpsc},
    thread::JoinHandle,
};

use revm::context::TxEnv;

use crate::{
    BatchOutcome, BlockContext, ExecutionMode, ExecutorError, StateSource, commit, evm,
    mv_memory::MvMemory,
    parallel::{self, Batch},
};

/// How a pool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutorConfig {
    /// Workers, each with its own EVM: the thread that calls the pool and
    /// `workers - 1` threads of the pool's own.
    pub workers: usize,
    /// Batches smaller than this run sequentially: too small to gain.
    pub min_parallel_batch: usize,
    /// Report what each transaction touched ([`BatchOutcome::access`]), for prefetching.
    pub record_access: bool,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            min_parallel_batch: 4,
            record_access: false,
        }
    }
}

enum Job {
    Parallel {
        batch: Arc<Batch>,
        done: mpsc::Sender<usize>,
    },
    /// Drops a finished batch off the caller's path, keeping its multi-version memory,
    /// cleared, for the next one.
    Discard(Arc<Batch>, Arc<Mutex<Option<MvMemory>>>),
}

struct Worker {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

/// A per-chain pool of revm workers executing ordered batches, in parallel where it
/// pays, always with exactly the results of sequential execution in batch order.
pub struct Executor {
    config: ExecutorConfig,
    /// Per (contract, selector): measured seconds per transaction in each mode, so that
    /// each kind of batch runs in the mode that has been faster for it (a dependent
    /// chain sequentially, independent heavy calls in parallel).
    costs: Mutex<rustc_hash::FxHashMap<(revm::primitives::Address, [u8; 4]), ModeCosts>>,
    workers: Vec<Worker>,
    /// One batch at a time: a batch uses every worker.
    running: Mutex<()>,
    /// The last batch's multi-version memory, cleared: its tables are reused.
    spare: Arc<Mutex<Option<MvMemory>>>,
}

thread_local! {
    /// The EVM (and code copies) of a thread that calls into a pool: the caller is one
    /// of a batch's workers, and runs sequential batches itself. It is awake already,
    /// where a parked worker can take a millisecond to wake on a virtual machine.
    static CALLER: std::cell::RefCell<Option<(evm::WorkerEvm, crate::view::CodeCache)>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` on this thread's EVM, built on first use.
fn on_caller<R>(
    spec: revm::primitives::hardfork::SpecId,
    f: impl FnOnce(&mut evm::WorkerEvm, &mut crate::view::CodeCache) -> R,
) -> R {
    CALLER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let (evm, codes) = slot.get_or_insert_with(|| (evm::build(spec), Default::default()));
        f(evm, codes)
    })
}

impl Executor {
    /// Starts `config.workers - 1` threads, each building its EVM on its own thread; the
    /// thread that calls the pool is the last worker.
    pub fn new(config: ExecutorConfig) -> Self {
        let workers = (1..config.workers.max(1))
            .map(|i| {
                let (jobs, inbox) = mpsc::channel::<Job>();
                let thread =
                    std::thread::Builder::new().name(format!("ferry-evm-{i}")).spawn(move || worker_loop(&inbox)).ok();
                Worker { jobs: Some(jobs), thread }
            })
            .collect();
        Self {
            config,
            workers,
            running: Mutex::new(()),
            costs: Mutex::new(Default::default()),
            spare: Arc::new(Mutex::new(None)),
        }
    }

    /// The pool's configuration.
    pub fn config(&self) -> ExecutorConfig {
        self.config
    }

    /// Executes `txs` in order in `ctx` over `state`: in parallel when the batch is big
    /// enough and there is more than one worker, else sequentially.
    pub fn execute(
        &self,
        state: Arc<dyn StateSource>,
        ctx: BlockContext,
        txs: Vec<TxEnv>,
    ) -> Result<BatchOutcome, ExecutorError> {
        let keys: Vec<_> = txs.iter().filter_map(selector_key).collect();
        let parallel =
            self.config.workers > 1 && txs.len() >= self.config.min_parallel_batch && self.parallel_pays(&keys);
        let start = std::time::Instant::now();
        let outcome =
            if parallel { self.execute_parallel(state, ctx, txs)? } else { self.execute_sequential(state, ctx, txs)? };
        self.learn_cost(&keys, outcome.mode, start.elapsed().as_secs_f64() / outcome.outcomes.len().max(1) as f64);
        Ok(outcome)
    }

    /// Whether the parallel engine has been at least as fast as sequential execution
    /// for these kinds of transaction (untried kinds are tried in parallel first).
    fn parallel_pays(&self, keys: &[(revm::primitives::Address, [u8; 4])]) -> bool {
        let Ok(costs) = self.costs.lock() else { return true };
        let (mut parallel, mut sequential) = (0.0, 0.0);
        for key in keys {
            let kind = costs.get(key).copied().unwrap_or_default();
            let (p, s) = (kind.parallel.runs, kind.sequential.runs);
            // Measure each mode a few times first, taking turns, parallel first: the
            // first runs of a kind are the noisiest.
            if p < MODE_SAMPLES || s < MODE_SAMPLES {
                return p <= s;
            }
            parallel += kind.parallel.best;
            sequential += kind.sequential.best;
        }
        parallel <= sequential
    }

    /// Folds one batch's seconds per transaction into its kinds' costs for `mode`.
    fn learn_cost(&self, keys: &[(revm::primitives::Address, [u8; 4])], mode: ExecutionMode, per_tx: f64) {
        let Ok(mut costs) = self.costs.lock() else { return };
        let distinct: rustc_hash::FxHashSet<_> = keys.iter().copied().collect();
        for key in &distinct {
            let entry = costs.entry(*key).or_default();
            let (ran, other) = match mode {
                ExecutionMode::Parallel => (&mut entry.parallel, &mut entry.sequential),
                ExecutionMode::Sequential => (&mut entry.sequential, &mut entry.parallel),
            };
            // The fastest seen: a busy machine only ever makes a run slower, so one
            // unlucky measurement must not decide the mode for long.
            ran.best = ran.best.min(per_tx);
            ran.runs += 1;
            entry.batches += 1;
            // Now and then measure the mode not chosen again (once), and now and then
            // both afresh (the batches of a kind change, and so do their costs).
            if entry.batches.is_multiple_of(64) {
                *entry = ModeCosts { batches: entry.batches, ..Default::default() };
            } else if entry.batches.is_multiple_of(16) {
                *other = ModeCost { best: f64::INFINITY, runs: MODE_SAMPLES - 1 };
            }
        }
    }

    /// Executes `txs` one by one on the calling thread's EVM (the reference the parallel
    /// engine must equal, and the re-check that samples it).
    pub fn execute_sequential(
        &self,
        state: Arc<dyn StateSource>,
        ctx: BlockContext,
        txs: Vec<TxEnv>,
    ) -> Result<BatchOutcome, ExecutorError> {
        let _guard = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let record = self.config.record_access;
        let committed = on_caller(ctx.spec, |evm, _| {
            commit::run_sequential(evm, commit::overlay(state, txs.len()), &ctx, txs, record)
        })?;
        Ok(BatchOutcome {
            outcomes: committed.outcomes,
            access: committed.access,
            mode: ExecutionMode::Sequential,
            reexecutions: 0,
            fallbacks: 0,
        })
    }

    /// Executes `txs` on the parallel engine regardless of size.
    pub fn execute_parallel(
        &self,
        state: Arc<dyn StateSource>,
        ctx: BlockContext,
        txs: Vec<TxEnv>,
    ) -> Result<BatchOutcome, ExecutorError> {
        let _guard = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = txs.len();
        let t0 = std::time::Instant::now();
        let mut mv = self.spare.lock().ok().and_then(|mut spare| spare.take()).unwrap_or_default();
        mv.prepare(n);
        let mut batch = Batch::new(state, ctx, txs, mv)?;
        batch.record_access = self.config.record_access;
        let batch = Arc::new(batch);
        let (done, finished) = mpsc::channel();
        for i in 0..self.workers.len() {
            self.send(i, Job::Parallel { batch: Arc::clone(&batch), done: done.clone() })?;
        }
        drop(done);
        let mut executions = on_caller(batch.ctx.spec, |evm, codes| {
            evm::prepare(evm, &batch.ctx);
            parallel::work(evm, &batch, codes, true)
        });
        for i in 0..self.workers.len() {
            executions += finished.recv().map_err(|_| ExecutorError::WorkerGone(i))?;
        }
        if let Some(error) = batch.fatal.lock().ok().and_then(|mut f| f.take()) {
            return Err(error.into());
        }
        let t1 = t0.elapsed();
        let batch = DiscardOnDrop { batch: Some(batch), pool: self };
        let settle = batch.settle.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default();
        let (mut committed, stopped) = settle.finish(&batch)?;
        let mut fallbacks = 0;
        if let Some(from) = stopped {
            {
                // A lazy assumption failed: re-run the rest one by one on committed state.
                fallbacks = n - from;
                let mut overlay = commit::overlay(Arc::clone(&batch.base), batch.txs.len());
                for outcome in &committed.outcomes {
                    overlay.apply(&outcome.state);
                }
                let txs = batch.txs[from..].to_vec();
                let record = self.config.record_access;
                let rest =
                    on_caller(batch.ctx.spec, |evm, _| commit::run_sequential(evm, overlay, &batch.ctx, txs, record))?;
                committed.outcomes.extend(rest.outcomes);
                committed.access.extend(rest.access);
            }
        }
        tracing::debug!(txs = n, execute = ?t1, settle = ?(t0.elapsed() - t1), "parallel batch phases");
        Ok(BatchOutcome {
            outcomes: committed.outcomes,
            access: committed.access,
            mode: ExecutionMode::Parallel,
            reexecutions: executions.saturating_sub(n),
            fallbacks,
        })
    }

    /// Executes `txs` and, when `check` picks this batch and it ran in parallel,
    /// re-runs it sequentially and compares (cross-layer validation, sequential kind).
    pub fn execute_checked(
        &self,
        state: Arc<dyn StateSource>,
        ctx: BlockContext,
        txs: Vec<TxEnv>,
        check: &crate::validation::SampledCheck,
    ) -> Result<(BatchOutcome, Option<crate::validation::SequentialMismatch>), ExecutorError> {
        let outcome = self.execute(Arc::clone(&state), ctx.clone(), txs.clone())?;
        if outcome.mode == ExecutionMode::Parallel && check.pick() {
            let sequential = self.execute_sequential(state, ctx, txs)?;
            let mismatch = crate::validation::compare_with_sequential(&outcome, &sequential).err();
            if let Some(m) = &mismatch {
                tracing::error!(mismatch = %m, "parallel execution differs from sequential");
            }
            return Ok((outcome, mismatch));
        }
        Ok((outcome, None))
    }

    fn send(&self, worker: usize, job: Job) -> Result<(), ExecutorError> {
        self.workers
            .get(worker)
            .and_then(|w| w.jobs.as_ref())
            .ok_or(ExecutorError::WorkerGone(worker))?
            .send(job)
            .map_err(|_| ExecutorError::WorkerGone(worker))
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            worker.jobs.take();
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn worker_loop(inbox: &mpsc::Receiver<Job>) {
    let mut evm = evm::build(revm::primitives::hardfork::SpecId::default());
    let mut codes = crate::view::CodeCache::default();
    while let Ok(job) = inbox.recv() {
        match job {
            Job::Parallel { batch, done } => {
                tracing::trace!(waited = ?batch.created.elapsed(), "worker starts");
                evm::prepare(&mut evm, &batch.ctx);
                let executions = parallel::work(&mut evm, &batch, &mut codes, false);
                // Let go of the batch first: the pool takes its memory back.
                drop(batch);
                let _ = done.send(executions);
            }
            Job::Discard(batch, spare) => recycle(batch, &spare),
        }
    }
}

/// Frees a finished batch, keeping its multi-version memory, cleared, for the next one.
fn recycle(batch: Arc<Batch>, spare: &Mutex<Option<MvMemory>>) {
    if let Ok(mut batch) = Arc::try_unwrap(batch) {
        let mut mv = std::mem::take(&mut batch.mv);
        drop(batch);
        mv.clear();
        if let Ok(mut spare) = spare.lock() {
            *spare = Some(mv);
        }
    }
}

/// Hands a finished batch to a worker to free, once the caller is done with it.
struct DiscardOnDrop<'a> {
    batch: Option<Arc<Batch>>,
    pool: &'a Executor,
}

impl std::ops::Deref for DiscardOnDrop<'_> {
    type Target = Batch;
    fn deref(&self) -> &Batch {
        // Present until drop.
        self.batch.as_deref().unwrap_or_else(|| unreachable!("taken only in drop"))
    }
}

impl Drop for DiscardOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            let spare = Arc::clone(&self.pool.spare);
            match self.pool.workers.len().checked_sub(1) {
                // If the worker is gone the batch is simply dropped here.
                Some(last) => {
                    let _ = self.pool.send(last, Job::Discard(batch, spare));
                }
                None => recycle(batch, &spare),
            }
        }
    }
}

/// Measured seconds per transaction of one kind of transaction, per mode.
#[derive(Debug, Default, Clone, Copy)]
struct ModeCosts {
    parallel: ModeCost,
    sequential: ModeCost,
    batches: u64,
}

/// Runs of a kind in each mode before the faster is chosen.
const MODE_SAMPLES: u32 = 2;

/// The fastest run of one mode so far, and how many there were.
#[derive(Debug, Clone, Copy)]
struct ModeCost {
    best: f64,
    runs: u32,
}

impl Default for ModeCost {
    fn default() -> Self {
        Self { best: f64::INFINITY, runs: 0 }
    }
}

/// A call's (contract, selector), the key costs are kept under (plain transfers share
/// the empty selector).
fn selector_key(tx: &TxEnv) -> Option<(revm::primitives::Address, [u8; 4])> {
    let revm::primitives::TxKind::Call(to) = tx.kind else { return None };
    let selector: [u8; 4] = tx.data.get(..4).unwrap_or(&[0; 4]).try_into().ok()?;
    Some((to, selector))
}
