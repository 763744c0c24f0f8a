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
    for (name, state, ctx, txs) in batches {
        let (mut plain, mut par, mut seq) = (Vec::new(), Vec::new(), Vec::new());
        let worker_cpu = executor.worker_cpu_seconds();
        for _ in 0..rounds {
            if mode == "plain" || mode == "compare" {
                plain.push(bench::plain_revm(state.clone(), &ctx, &txs).0);
            }
            if mode == "pool" {
                par.push(bench::timed(&txs, |txs| pool.execute(state.clone(), ctx.clone(), txs)).0);
            }
            if mode == "parallel" || (mode == "compare" && std::env::var("SKIP_PAR").is_err()) {
                par.push(bench::timed(&txs, |txs| executor.execute_parallel(state.clone(), ctx.clone(), txs)).0);
            }
            if mode == "sequential" || (mode == "compare" && std::env::var("SKIP_SEQ").is_err()) {
                seq.push(bench::timed(&txs, |txs| executor.execute_sequential(state.clone(), ctx.clone(), txs)).0);
            }
        }
        let runs = par.len().max(1) as f64;
        let (p, q, s) = (bench::median(plain), bench::median(par), bench::median(seq));
        // The forced engine's other workers: CPU per parallel run, beside the run's time.
        eprintln!(
            "{name:<17} workers' CPU {:6.2} ms a parallel run",
            (executor.worker_cpu_seconds() - worker_cpu) / runs * 1e3
        );
        eprintln!(
            "{name:<17} plain {:6.2} ms  parallel {:6.2} ms ({:.2}x)  sequential {:6.2} ms ({:.2}x)",
            p * 1e3,
            q * 1e3,
            p / q,
            s * 1e3,
            p / s
        );
    }
}
