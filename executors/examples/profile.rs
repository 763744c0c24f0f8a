//! Runs one workload many times, for profilers: `cargo run --release -p ferry-executors
//! --example profile -- erc20 parallel [rounds]` (modes: parallel, sequential, plain,
//! pool (the default configuration choosing), and compare, which alternates parallel,
//! sequential and plain and prints medians and ratios). A real block
//! instead of a workload: `block:DATA_DIR:NUMBER` (a directory `ops/mainnet-data.py` made).

use std::sync::Arc;

use ferry_executors::{BlockContext, Executor, ExecutorConfig, InMemoryState, bench, blocks::BlockData};
use revm::context::TxEnv;

/// The allocator the `ferry` binary runs on, so that profiles match what users run.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    if let Ok(filter) = std::env::var("FERRY_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("erc20", String::as_str);
    let mode = args.get(2).map_or("parallel", String::as_str);
    let rounds: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(200);
    let Ok(f) = bench::Fixture::new(2002) else { return };
    // FERRY_WORKERS=1 runs the parallel engine on the calling thread alone: what it
    // costs beyond plain revm, for an instruction count without idle spinning.
    let workers = std::env::var("FERRY_WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(2);
    let executor = Executor::new(ExecutorConfig { workers, min_parallel_batch: 1, record_access: false });
    let pool = Executor::new(ExecutorConfig { workers, ..ExecutorConfig::default() });
    let names: Vec<&str> = if name == "all" {
        vec!["raw-transfer", "erc20", "heavy", "hot-10", "hot-30", "hot-50", "dependent-chain", "mailbox-delivery"]
    } else {
        vec![name]
    };
    let mut batches: Vec<(String, Arc<InMemoryState>, BlockContext, Vec<TxEnv>)> = Vec::new();
    if let Some((dir, number)) = name.strip_prefix("block:").and_then(|spec| spec.rsplit_once(':')) {
        let Some(block) = BlockData::open(dir).ok().zip(number.parse().ok()).and_then(|(d, n)| d.load(n).ok()) else {
            eprintln!("no block {number} in {dir}");
            return;
        };
        batches.push((format!("block {number}"), block.state, block.ctx, block.txs));
    }
    for w in bench::workloads(&f, 1000).into_iter().filter(|w| names.contains(&w.name)) {
        batches.push((w.name.to_string(), f.state.clone(), f.ctx.clone(), w.txs));
    }
    let modes: Vec<&str> =
        if mode == "compare" { vec!["plain", "split", "parallel", "sequential"] } else { vec![mode] };
    for (name, state, ctx, txs) in batches {
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        let worker_cpu = executor.worker_cpu_seconds();
        for _ in 0..rounds {
            for (m, times) in modes.iter().zip(times.iter_mut()) {
                let run = |txs| match *m {
                    "split" => executor.execute_split(state.clone(), ctx.clone(), txs),
                    "parallel" => executor.execute_parallel(state.clone(), ctx.clone(), txs),
                    "pool" => pool.execute(state.clone(), ctx.clone(), txs),
                    _ => executor.execute_sequential(state.clone(), ctx.clone(), txs),
                };
                times.push(if *m == "plain" {
                    bench::plain_revm(state.clone(), &ctx, &txs).0
                } else {
                    bench::timed(&txs, run).0
                });
            }
        }
        // The forced engines' other workers: CPU per run, beside the runs' times.
        let runs =
            (rounds * modes.iter().filter(|m| matches!(**m, "split" | "parallel" | "pool")).count()).max(1) as f64;
        eprintln!("{name:<17} workers' CPU {:6.2} ms a run", (executor.worker_cpu_seconds() - worker_cpu) / runs * 1e3);
        let medians: Vec<f64> = times.into_iter().map(bench::median).collect();
        let line: Vec<String> = modes
            .iter()
            .zip(&medians)
            .map(|(m, t)| format!("{m} {:6.2} ms ({:.2}x)", t * 1e3, medians[0] / t))
            .collect();
        eprintln!("{name:<17} {}", line.join("  "));
    }
}
