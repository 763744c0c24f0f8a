//! The worker pool of one chain: threads that each own one reused EVM, fed batches.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

use revm::context::TxEnv;

use crate::{
    BatchOutcome, BlockContext, ExecutionMode, ExecutorError, StateSource,
    clock::thread_cpu_ns,
    commit, evm,
    mv_memory::MvMemory,
    parallel::{self, Batch},
    policy::{Kind, Mode, Policy, kind_of},
    split::{self, Split},
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
    /// Join a batch, unless the caller finished it first.
    Parallel(Arc<Batch>),
    /// Drops a finished batch off the caller's path, keeping its multi-version memory,
    /// cleared, for the next one.
    Discard(Arc<Batch>, Arc<Mutex<Option<MvMemory>>>),
    /// Run one piece of a split batch (see [`split`]).
    Split(Arc<Split>, usize),
    /// Drop a finished split batch off the caller's path.
    Free(Arc<Split>),
    /// Answer once every job sent before is done (see [`Executor::wait_idle`]).
    Ping(mpsc::SyncSender<()>),
}

struct Worker {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

/// A per-chain pool of revm workers executing ordered batches, in parallel where it
/// pays, always with exactly the results of sequential execution in batch order.
pub struct Executor {
    config: ExecutorConfig,
    /// What the pool has learned of each kind of transaction, and the choice of mode
    /// made from it (a dependent chain sequentially, independent heavy calls in parallel).
    policy: Policy,
    workers: Vec<Worker>,
    /// One batch at a time: a batch uses every worker.
    running: Mutex<()>,
    /// The last batch's multi-version memory, cleared: its tables are reused.
    spare: Arc<Mutex<Option<MvMemory>>>,
    /// CPU nanoseconds the pool's own threads spent on batches.
    worker_cpu_ns: Arc<AtomicU64>,
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
        let worker_cpu_ns = Arc::new(AtomicU64::new(0));
        let workers = (1..config.workers.max(1))
            .map(|i| {
                let (jobs, inbox) = mpsc::channel::<Job>();
                let cpu = Arc::clone(&worker_cpu_ns);
                let thread = std::thread::Builder::new()
                    .name(format!("ferry-evm-{i}"))
                    .spawn(move || worker_loop(&inbox, &cpu))
                    .ok();
                Worker { jobs: Some(jobs), thread }
            })
            .collect();
        Self {
            config,
            workers,
            running: Mutex::new(()),
            policy: Policy::default(),
            spare: Arc::new(Mutex::new(None)),
            worker_cpu_ns,
        }
    }

    /// CPU seconds the pool's own threads have spent on batches so far (the calling
    /// thread's share is the caller's to measure).
    pub fn worker_cpu_seconds(&self) -> f64 {
        self.worker_cpu_ns.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// Waits until the pool's threads have finished every job handed to them so far,
    /// the freeing of the last batch included. Benchmarks call it so that a finished
    /// batch's clean-up does not run inside the next measurement.
    pub fn wait_idle(&self) {
        let replies: Vec<mpsc::Receiver<()>> = (0..self.workers.len())
            .filter_map(|i| {
                let (tx, rx) = mpsc::sync_channel(1);
                self.send(i, Job::Ping(tx)).ok().map(|()| rx)
            })
            .collect();
        for reply in replies {
            // A worker that is gone has nothing left to finish.
            let _ = reply.recv();
        }
    }

    /// The pool's configuration.
    pub fn config(&self) -> ExecutorConfig {
        self.config
    }

    /// Executes `txs` in order in `ctx` over `state`: in parallel when the pool predicts
    /// it pays (see [`Policy`]), else sequentially.
    pub fn execute(
        &self,
        state: Arc<dyn StateSource>,
        ctx: BlockContext,
        txs: Vec<TxEnv>,
    ) -> Result<BatchOutcome, ExecutorError> {
        let kinds: Vec<Kind> = txs.iter().map(kind_of).collect();
        let choice = self.policy.choose(&txs, &kinds, self.config.workers, self.config.min_parallel_batch);
        match choice.mode {
            Mode::Parallel => self.run_parallel(state, ctx, txs, &kinds, choice.heads),
            Mode::Split => self.run_split(state, ctx, txs, &choice.costs, &choice.cuts, Some(&kinds)),
            Mode::Sequential => self.run_sequential(state, ctx, txs, choice.learn.then_some(&kinds[..])),
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
        let kinds: Option<Vec<Kind>> = self.policy.sample().then(|| txs.iter().map(kind_of).collect());
        self.run_sequential(state, ctx, txs, kinds.as_deref())
    }

    /// `execute_sequential` of `txs`, timed and learned from when their `kinds` are given.
    fn run_sequential(
        &self,
        state: Arc<dyn StateSource>,
        ctx: BlockContext,
        txs: Vec<TxEnv>,
        kinds: Option<&[Kind]>,
    ) -> Result<BatchOutcome, ExecutorError> {
        let _guard = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let run = commit::Run { record: self.config.record_access, timed: kinds.is_some() };
        let committed = on_caller(ctx.spec, |evm, _| {
            commit::run_sequential(evm, commit::overlay(state, txs.len()), &ctx, txs, run)
        })?;
        if let Some(kinds) = kinds {
            self.policy.learn(kinds, &committed.seconds, None);
        }
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
        let kinds: Vec<Kind> = txs.iter().map(kind_of).collect();
        self.run_parallel(state, ctx, txs, &kinds, Vec::new())
    }

    /// Executes `txs` by split execution regardless of size: the batch cut into one
    /// piece per worker, each run sequentially, the results checked and committed in
    /// order by the calling thread (see `split`).
    pub fn execute_split(
        &self,
        state: Arc<dyn StateSource>,
        ctx: BlockContext,
        txs: Vec<TxEnv>,
    ) -> Result<BatchOutcome, ExecutorError> {
        // Nothing learned to go by: the gas each may use is the best guess of its cost.
        let costs: Vec<f64> = txs.iter().map(|tx| tx.gas_limit as f64).collect();
        let cuts = split::cuts(&costs, self.workers.len() + 1);
        self.run_split(state, ctx, txs, &costs, &cuts, None)
    }

    /// `execute_split` of `txs`, expected to cost `costs` each, cut at `cuts`, learned
    /// from when their `kinds` are given.
    fn run_split(
        &self,
        state: Arc<dyn StateSource>,
        ctx: BlockContext,
        txs: Vec<TxEnv>,
        costs: &[f64],
        cuts: &[usize],
        kinds: Option<&[Kind]>,
    ) -> Result<BatchOutcome, ExecutorError> {
        let _guard = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let t0 = std::time::Instant::now();
        let mut batch = Split::new(state, ctx, txs, costs, cuts);
        batch.record = self.config.record_access;
        // Costs are learned from one split batch in four, as from sequential ones.
        let timed = kinds.is_some() && self.policy.sample();
        batch.timed = timed;
        let batch = Arc::new(batch);
        for piece in 0..batch.pieces() {
            // A worker gone leaves its piece to the caller, who takes over what no worker
            // started: the batch still completes.
            if let Err(e) = self.send(piece, Job::Split(Arc::clone(&batch), piece)) {
                tracing::warn!(error = %e, piece, "split batch: a piece's worker is gone; the caller runs it");
            }
        }
        let (committed, ran_again) = on_caller(batch.ctx.spec, |evm, _| split::run(evm, &batch))?;
        let reruns = ran_again.iter().filter(|again| **again == Some(true)).count();
        if let Some(kinds) = kinds {
            self.policy.learn_split(&batch.txs, kinds, &ran_again, timed.then_some(&committed.seconds[..]));
        }
        tracing::debug!(txs = ran_again.len(), ?cuts, reruns, took = ?t0.elapsed(), "split batch");
        // Freed by a worker, off the caller's path.
        if let Some(last) = self.workers.len().checked_sub(1) {
            let _ = self.send(last, Job::Free(batch));
        }
        Ok(BatchOutcome {
            outcomes: committed.outcomes,
            access: committed.access,
            mode: ExecutionMode::Split,
            reexecutions: reruns,
            fallbacks: 0,
        })
    }

    /// `execute_parallel` of `txs`, whose kinds are `kinds`, starting with `heads`.
    fn run_parallel(
        &self,
        state: Arc<dyn StateSource>,
        ctx: BlockContext,
        txs: Vec<TxEnv>,
        kinds: &[Kind],
        heads: Vec<usize>,
    ) -> Result<BatchOutcome, ExecutorError> {
        let _guard = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = txs.len();
        let t0 = std::time::Instant::now();
        let mut mv = self.spare.lock().ok().and_then(|mut spare| spare.take()).unwrap_or_default();
        mv.prepare(n);
        let mut batch = Batch::new(state, ctx, txs, mv)?;
        batch.record_access = self.config.record_access;
        batch.scheduler.set_heads(heads);
        let batch = Arc::new(batch);
        for i in 0..self.workers.len() {
            self.send(i, Job::Parallel(Arc::clone(&batch)))?;
        }
        let mut executions = on_caller(batch.ctx.spec, |evm, codes| {
            evm::prepare(evm, &batch.ctx);
            parallel::work(evm, &batch, codes, true)
        });
        // The scheduler is done: the workers in the batch are leaving, and one still
        // waking up will find it closed.
        executions += batch.crew.close();
        if let Some(error) = batch.fatal.lock().ok().and_then(|mut f| f.take()) {
            return Err(error.into());
        }
        self.learn_parallel(&batch, kinds);
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
                let run = commit::Run { record: self.config.record_access, timed: false };
                let rest =
                    on_caller(batch.ctx.spec, |evm, _| commit::run_sequential(evm, overlay, &batch.ctx, txs, run))?;
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

    /// Executes `txs` and, when `check` picks this batch and it ran on several workers
    /// (Block-STM or split), re-runs it sequentially and compares (cross-layer
    /// validation, sequential kind).
    pub fn execute_checked(
        &self,
        state: Arc<dyn StateSource>,
        ctx: BlockContext,
        txs: Vec<TxEnv>,
        check: &crate::validation::SampledCheck,
    ) -> Result<(BatchOutcome, Option<crate::validation::SequentialMismatch>), ExecutorError> {
        let outcome = self.execute(Arc::clone(&state), ctx.clone(), txs.clone())?;
        if outcome.mode != ExecutionMode::Sequential && check.pick() {
            let sequential = self.execute_sequential(state, ctx, txs)?;
            let mismatch = crate::validation::compare_with_sequential(&outcome, &sequential).err();
            if let Some(m) = &mismatch {
                tracing::error!(mismatch = %m, "parallel execution differs from sequential");
            }
            return Ok((outcome, mismatch));
        }
        Ok((outcome, None))
    }

    /// Takes in what a parallel run measured: each transaction's execution time and
    /// whether it was executed again.
    fn learn_parallel(&self, batch: &Batch, kinds: &[Kind]) {
        let seconds: Vec<f64> =
            batch.nanos.iter().map(|n| n.load(std::sync::atomic::Ordering::Relaxed) as f64 * 1e-9).collect();
        let again: Vec<usize> = (0..batch.txs.len()).map(|i| batch.scheduler.incarnation(i)).collect();
        self.policy.learn(kinds, &seconds, Some(&again));
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

fn worker_loop(inbox: &mpsc::Receiver<Job>, cpu_ns: &AtomicU64) {
    let mut evm = evm::build(revm::primitives::hardfork::SpecId::default());
    let mut codes = crate::view::CodeCache::default();
    // After a batch the worker stays awake for the caller's next job, the finished
    // batch to free: waking a parked thread costs the caller a futex call, about ten
    // microseconds on this kind of virtual machine.
    let mut awake_until: Option<std::time::Instant> = None;
    loop {
        let job = match awake_until {
            Some(until) => match inbox.try_recv() {
                Ok(job) => job,
                Err(mpsc::TryRecvError::Disconnected) => return,
                Err(mpsc::TryRecvError::Empty) => {
                    if std::time::Instant::now() >= until {
                        awake_until = None;
                    }
                    std::thread::yield_now();
                    continue;
                }
            },
            None => match inbox.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let started = thread_cpu_ns();
        match job {
            Job::Parallel(batch) => {
                tracing::trace!(waited = ?batch.created.elapsed(), "worker starts");
                if let Some(mut member) = batch.crew.join() {
                    evm::prepare(&mut evm, &batch.ctx);
                    member.executions = parallel::work(&mut evm, &batch, &mut codes, false);
                    // Counted before the caller hears the batch is done.
                    cpu_ns.fetch_add(thread_cpu_ns().saturating_sub(started), Ordering::Relaxed);
                }
                awake_until = Some(std::time::Instant::now() + STAY_AWAKE);
            }
            Job::Split(batch, piece) => {
                split::work(&mut evm, &batch, piece);
                cpu_ns.fetch_add(thread_cpu_ns().saturating_sub(started), Ordering::Relaxed);
                awake_until = Some(std::time::Instant::now() + STAY_AWAKE);
            }
            Job::Free(batch) => drop(batch),
            Job::Discard(batch, spare) => {
                recycle(batch, &spare);
                cpu_ns.fetch_add(thread_cpu_ns().saturating_sub(started), Ordering::Relaxed);
                awake_until = None;
            }
            Job::Ping(reply) => {
                let _ = reply.send(());
            }
        }
    }
}

/// How long a worker waits awake after a batch for the caller's next job.
const STAY_AWAKE: std::time::Duration = std::time::Duration::from_micros(100);

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench;

    #[test]
    fn transactions_started_first_change_when_they_run_never_what_they_give() {
        crate::set_chaos(true);
        let f = bench::Fixture::new(202).unwrap_or_else(|e| panic!("fixture: {e}"));
        let executor = Executor::new(ExecutorConfig { workers: 3, min_parallel_batch: 1, record_access: false });
        for workload in bench::workloads(&f, 100) {
            let n = workload.txs.len();
            let sequential = executor
                .execute_sequential(f.state.clone(), f.ctx.clone(), workload.txs.clone())
                .unwrap_or_else(|e| panic!("{e}"));
            let kinds: Vec<Kind> = workload.txs.iter().map(kind_of).collect();
            // The last, two late ones, the first, and many at once (hot spots and the
            // dependent chain make heads that read what lower ones write: run again).
            let plans = [vec![n - 1], vec![n - 1, n / 2], vec![0], (0..n).rev().step_by(3).collect()];
            for heads in plans {
                let parallel = executor
                    .run_parallel(f.state.clone(), f.ctx.clone(), workload.txs.clone(), &kinds, heads.clone())
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(parallel.outcomes, sequential.outcomes, "{} with heads {heads:?}", workload.name);
            }
        }
    }

    #[test]
    fn waiting_idle_returns_once_the_last_batch_is_freed() {
        let f = bench::Fixture::new(202).unwrap_or_else(|e| panic!("fixture: {e}"));
        let executor = Executor::new(ExecutorConfig { workers: 2, min_parallel_batch: 1, record_access: false });
        let erc20 = bench::workloads(&f, 100).into_iter().find(|w| w.name == "erc20").unwrap();
        for _ in 0..20 {
            let out = executor.execute_parallel(f.state.clone(), f.ctx.clone(), erc20.txs.clone());
            assert_eq!(out.unwrap_or_else(|e| panic!("{e}")).mode, ExecutionMode::Parallel);
            executor.wait_idle();
            // The worker frees the batch and hands its memory back as its last step.
            let spare = executor.spare.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            assert!(spare.is_some(), "wait_idle returned before the batch was freed");
        }
        // With no worker, nothing to wait for.
        Executor::new(ExecutorConfig { workers: 1, min_parallel_batch: 1, record_access: false }).wait_idle();
    }
}
