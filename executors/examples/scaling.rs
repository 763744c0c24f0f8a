//! What bounds the executor benchmark on this machine, measured in one run
//! (`cargo run --release -p ferry-executors --example scaling`):
//!
//! - the ceiling: plain revm on one thread, then on two threads at once, each running
//!   the batch back to back on its own copy of the state (no engine, nothing shared):
//!   how much more work two cores do than one;
//! - the engine's own cost: the parallel engine with one worker (every step of it,
//!   nothing in parallel) against plain revm on the same thread.
//!
//! Measured in the same minute, a speedup over plain revm stays below about ceiling /
//! own cost. Each figure is the median of five measurements, alternating.

use std::sync::{Arc, Barrier};

use ferry_executors::{Executor, ExecutorConfig, bench};
use revm::context::TxEnv;

/// Batches per measurement.
const REPEATS: usize = 20;

/// The allocator the `ferry` binary runs on, so that the bounds are those of what users run.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let (Ok(f), Ok(g)) = (bench::Fixture::new(2002), bench::Fixture::new(2002)) else { return };
    let (f, g) = (Arc::new(f), Arc::new(g));
    let one_worker = Executor::new(ExecutorConfig { workers: 1, min_parallel_batch: 1, record_access: false });
    for name in ["raw-transfer", "erc20", "heavy", "mailbox-delivery"] {
        let pick = |fx: &bench::Fixture| bench::workloads(fx, 1000).into_iter().find(|w| w.name == name);
        let (Some(w1), Some(w2)) = (pick(&f), pick(&g)) else { return };
        let repeats = if name == "heavy" { REPEATS / 4 } else { REPEATS };
        let (mut ceiling, mut cost) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let one = plain_back_to_back(&f, &w1.txs, repeats);
            let two = two_at_once([(&f, &w1.txs), (&g, &w2.txs)], repeats);
            ceiling.push(2.0 * one / two);
            let engine: f64 = (0..repeats)
                .map(|_| {
                    bench::timed(&w1.txs, |txs| one_worker.execute_parallel(f.state.clone(), f.ctx.clone(), txs)).0
                })
                .sum();
            cost.push(engine / plain_back_to_back(&f, &w1.txs, repeats));
        }
        let (ceiling, cost) = (bench::median(ceiling), bench::median(cost));
        eprintln!(
            "{name:<17} ceiling {ceiling:.2}x (two cores' work over one's)  engine's own cost {cost:.2}x plain revm  \
             => bound {:.2}x",
            ceiling / cost
        );
    }
}

/// Seconds for `repeats` runs of plain revm over `txs`, one after another.
fn plain_back_to_back(f: &bench::Fixture, txs: &[TxEnv], repeats: usize) -> f64 {
    (0..repeats).map(|_| bench::plain_revm(f.state.clone(), &f.ctx, txs).0).sum()
}

/// Seconds of plain revm on each of two threads started together, `repeats` runs each
/// (timed like [`plain_back_to_back`]: the runs themselves); the slower thread's.
fn two_at_once(runs: [(&Arc<bench::Fixture>, &Vec<TxEnv>); 2], repeats: usize) -> f64 {
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = runs
        .into_iter()
        .map(|(fixture, txs)| {
            let (fixture, txs, barrier) = (Arc::clone(fixture), txs.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                plain_back_to_back(&fixture, &txs, repeats)
            })
        })
        .collect();
    threads.into_iter().filter_map(|t| t.join().ok()).fold(0.0, f64::max)
}
