//! Real blocks as benchmarks: each block of a data directory ([`crate::blocks`]) on the
//! pool as users run it, forced parallel, in sequential mode and on plain revm,
//! alternating in the same run, beside the bound (the machine's and the block's own
//! parallelism), and each speedup's mean, median, extremes and gas-weighted mean over
//! the blocks.

use crate::{
    ExecutionMode, Executor, ExecutorConfig, ExecutorError,
    bench::{PlainRun, available_parallelism, median, paired_speedup, plain_revm, plain_revm_at_once, timed, turned},
    blocks::{BlockData, BlockDataError},
};

/// Why the real-block benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BlockBenchError {
    /// The data directory could not be read.
    #[error(transparent)]
    Data(#[from] BlockDataError),
    /// A block could not be executed.
    #[error("block {number}: {source}")]
    Execute {
        /// The block.
        number: u64,
        /// What failed.
        source: ExecutorError,
    },
}

/// One block's figures (medians over the rounds).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BlockFigures {
    /// The block's number.
    pub number: u64,
    /// Its fork, as revm names it.
    pub spec: String,
    /// Transactions in it.
    pub txs: usize,
    /// Gas it used.
    pub gas: u64,
    /// Plain revm, one transaction after another (seconds).
    pub plain_s: f64,
    /// The pool as users run it (seconds).
    pub pool_s: f64,
    /// Plain revm's time over this one's, per round (both measured in the same round),
    /// the median over the rounds.
    pub pool_speedup: f64,
    /// How the pool ran it, the last time.
    pub pool_mode: &'static str,
    /// The parallel engine, forced (seconds).
    pub parallel_s: f64,
    /// Plain revm's time over this one's, per round (both measured in the same round),
    /// the median over the rounds.
    pub parallel_speedup: f64,
    /// Forced parallel: executions beyond one per transaction, per transaction.
    pub reexecutions_per_tx: f64,
    /// Split execution, forced (seconds).
    pub split_s: f64,
    /// Plain revm's time over this one's, per round (both measured in the same round),
    /// the median over the rounds.
    pub split_speedup: f64,
    /// Split execution: transactions the caller ran again, per transaction.
    pub reruns_per_tx: f64,
    /// The pool's sequential mode, forced (seconds): where a pool that runs the block
    /// sequentially lands, its cost over plain revm included.
    pub sequential_s: f64,
    /// Plain revm's time over this one's, per round (both measured in the same round),
    /// the median over the rounds.
    pub sequential_speedup: f64,
    /// The best of forced parallel, forced split and sequential mode: what a pool that always chose
    /// right would give.
    pub best_speedup: f64,
    /// The bound: the lesser of what `workers` copies of plain revm at once gain on this
    /// machine and the block's own parallelism (its work over its longest chain of
    /// read-after-write dependencies).
    pub ceiling: f64,
}

/// Mean, median, extremes and gas-weighted mean of a speedup over blocks.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Spread {
    /// Blocks counted.
    pub blocks: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub median: f64,
    /// The worst block.
    pub min: f64,
    /// The best block.
    pub max: f64,
    /// Each block's speedup weighted by its gas.
    pub gas_weighted: f64,
}

impl Spread {
    fn of(blocks: &[&BlockFigures], speedup: impl Fn(&BlockFigures) -> f64) -> Self {
        let xs: Vec<f64> = blocks.iter().map(|b| speedup(b)).collect();
        let gas: f64 = blocks.iter().map(|b| b.gas as f64).sum();
        let weighted: f64 = blocks.iter().map(|b| b.gas as f64 * speedup(b)).sum();
        Self {
            blocks: xs.len(),
            mean: xs.iter().sum::<f64>() / xs.len().max(1) as f64,
            median: median(xs.clone()),
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            gas_weighted: if gas > 0.0 { weighted / gas } else { f64::NAN },
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BlocksReport {
    /// Workers of the pool.
    pub workers: usize,
    /// Rounds per block (medians reported).
    pub rounds: usize,
    /// Every block that could run.
    pub blocks: Vec<BlockFigures>,
    /// Blocks that could not run, with why (codes missing from the data).
    pub not_run: Vec<String>,
    /// The pool over blocks of two transactions or more.
    pub pool: Spread,
    /// The forced parallel engine over the same blocks.
    pub parallel: Spread,
    /// Forced split execution over the same blocks.
    pub split: Spread,
    /// Sequential mode over the same blocks.
    pub sequential: Spread,
    /// A pool that always chose the best mode.
    pub best: Spread,
    /// The ceiling over the same blocks.
    pub ceiling: Spread,
}

/// Runs every block of `data` `rounds` times on plain revm, on the pool as users run it
/// (default configuration with `workers` workers, one pool for the whole run, so it
/// learns as it goes), forced parallel and in sequential mode, alternating in an order
/// that turns each round, each run on a quiet pool.
pub fn measure(data: &BlockData, workers: usize, rounds: usize) -> Result<BlocksReport, BlockBenchError> {
    let pool = Executor::new(ExecutorConfig { workers, ..ExecutorConfig::default() });
    let forced = Executor::new(ExecutorConfig { workers, min_parallel_batch: 1, record_access: false });
    let (mut blocks, mut not_run) = (Vec::new(), Vec::new());
    for number in data.numbers()? {
        let block = match data.load(number) {
            Ok(block) => block,
            Err(e @ BlockDataError::MissingCode { .. }) => {
                not_run.push(e.to_string());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let fail = |source| BlockBenchError::Execute { number, source };
        let (mut plain, mut pooled, mut parallel, mut sequential, mut together, mut split) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut reexecutions, mut reruns, mut mode) = (0, 0, ExecutionMode::Sequential);
        let copies: Vec<PlainRun<'_>> = vec![(&block.state, &block.ctx, &block.txs[..]); workers.max(1)];
        for round in 0..rounds.max(1) {
            // Each run starts on a quiet machine: no batch of either pool still being freed.
            for run in turned(round, 6) {
                pool.wait_idle();
                forced.wait_idle();
                match run {
                    0 => together.push(plain_revm_at_once(&copies)),
                    1 => plain.push(plain_revm(block.state.clone(), &block.ctx, &block.txs).0),
                    2 => {
                        let (seconds, out) = timed(&block.txs, |txs| {
                            forced.execute_sequential(block.state.clone(), block.ctx.clone(), txs)
                        });
                        out.map_err(fail)?;
                        sequential.push(seconds);
                    }
                    3 => {
                        let (seconds, out) =
                            timed(&block.txs, |txs| pool.execute(block.state.clone(), block.ctx.clone(), txs));
                        mode = out.map_err(fail)?.mode;
                        pooled.push(seconds);
                    }
                    4 => {
                        let (seconds, out) =
                            timed(&block.txs, |txs| forced.execute_split(block.state.clone(), block.ctx.clone(), txs));
                        reruns += out.map_err(fail)?.reexecutions;
                        split.push(seconds);
                    }
                    _ => {
                        let (seconds, out) = timed(&block.txs, |txs| {
                            forced.execute_parallel(block.state.clone(), block.ctx.clone(), txs)
                        });
                        reexecutions += out.map_err(fail)?.reexecutions;
                        parallel.push(seconds);
                    }
                }
            }
        }
        let paired = |runs: &[f64]| paired_speedup(&plain, runs);
        let (pool_speedup, parallel_speedup, sequential_speedup, split_speedup) =
            (paired(&pooled), paired(&parallel), paired(&sequential), paired(&split));
        let machine = workers as f64 * paired(&together);
        let (plain_s, pool_s, parallel_s, sequential_s, split_s) =
            (median(plain), median(pooled), median(parallel), median(sequential), median(split));
        let per_tx = |count: usize| count as f64 / (rounds.max(1) * block.txs.len().max(1)) as f64;
        let ceiling = machine.min(available_parallelism(&block.state, &block.ctx, &block.txs));
        blocks.push(BlockFigures {
            number,
            spec: format!("{:?}", block.ctx.spec),
            txs: block.txs.len(),
            gas: block.gas_used(),
            plain_s,
            pool_s,
            pool_speedup,
            pool_mode: mode.as_str(),
            parallel_s,
            parallel_speedup,
            reexecutions_per_tx: per_tx(reexecutions),
            split_s,
            split_speedup,
            reruns_per_tx: per_tx(reruns),
            sequential_s,
            sequential_speedup,
            best_speedup: parallel_speedup.max(sequential_speedup).max(split_speedup),
            ceiling,
        });
    }
    let counted: Vec<&BlockFigures> = blocks.iter().filter(|b| b.txs >= 2).collect();
    Ok(BlocksReport {
        workers,
        rounds,
        pool: Spread::of(&counted, |b| b.pool_speedup),
        parallel: Spread::of(&counted, |b| b.parallel_speedup),
        split: Spread::of(&counted, |b| b.split_speedup),
        sequential: Spread::of(&counted, |b| b.sequential_speedup),
        best: Spread::of(&counted, |b| b.best_speedup),
        ceiling: Spread::of(&counted, |b| b.ceiling),
        blocks,
        not_run,
    })
}

impl std::fmt::Display for BlocksReport {
    /// One line per block, then the spreads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:>9} {:<16} {:>5} {:>11} {:>9} {:>9} {:>7} {:<10} {:>9} {:>8} {:>9} {:>7} {:>9} {:>7} {:>7}",
            "block",
            "fork",
            "txs",
            "gas",
            "plain ms",
            "pool ms",
            "pool",
            "mode",
            "par ms",
            "par",
            "reexec/tx",
            "split",
            "reruns/tx",
            "seq",
            "ceiling"
        )?;
        for b in &self.blocks {
            writeln!(
                f,
                "{:>9} {:<16} {:>5} {:>11} {:>9.3} {:>9.3} {:>6.2}x {:<10} {:>9.3} {:>7.2}x {:>9.3} {:>6.2}x {:>9.3} {:>6.2}x {:>6.2}x",
                b.number,
                b.spec,
                b.txs,
                b.gas,
                b.plain_s * 1e3,
                b.pool_s * 1e3,
                b.pool_speedup,
                b.pool_mode,
                b.parallel_s * 1e3,
                b.parallel_speedup,
                b.reexecutions_per_tx,
                b.split_speedup,
                b.reruns_per_tx,
                b.sequential_speedup,
                b.ceiling
            )?;
        }
        let spreads = [
            ("pool", &self.pool),
            ("forced parallel", &self.parallel),
            ("forced split", &self.split),
            ("sequential mode", &self.sequential),
            ("always the best mode", &self.best),
            ("ceiling", &self.ceiling),
        ];
        for (name, s) in spreads {
            writeln!(
                f,
                "{name} over {} blocks of 2+ transactions: mean {:.2}x  median {:.2}x  min {:.2}x  max {:.2}x  gas-weighted {:.2}x",
                s.blocks, s.mean, s.median, s.min, s.max, s.gas_weighted
            )?;
        }
        for reason in &self.not_run {
            writeln!(f, "not run: {reason}")?;
        }
        Ok(())
    }
}
