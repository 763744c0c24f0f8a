//! Runs one workload many times, for profilers: `cargo run --release -p ferry-executors
//! --example profile -- erc20 parallel [rounds]` (modes: parallel, sequential, plain,
//! and compare, which alternates the three and prints medians and ratios).

use ferry_executors::{Executor, ExecutorConfig, bench};

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
    let names: Vec<&str> = if name == "all" {
        vec!["raw-transfer", "erc20", "heavy", "hot-10", "hot-30", "hot-50", "dependent-chain", "mailbox-delivery"]
    } else {
        vec![name]
    };
    for name in names {
        let Some(w) = bench::workloads(&f, 1000).into_iter().find(|w| w.name == name) else { return };
        let (mut plain, mut par, mut seq) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            if mode == "plain" || mode == "compare" {
                plain.push(bench::plain_revm(f.state.clone(), &f.ctx, &w.txs).0);
            }
            if mode == "parallel" || (mode == "compare" && std::env::var("SKIP_PAR").is_err()) {
                par.push(bench::timed(&w.txs, |txs| executor.execute_parallel(f.state.clone(), f.ctx.clone(), txs)).0);
            }
            if mode == "sequential" || (mode == "compare" && std::env::var("SKIP_SEQ").is_err()) {
                seq.push(
                    bench::timed(&w.txs, |txs| executor.execute_sequential(f.state.clone(), f.ctx.clone(), txs)).0,
                );
            }
        }
        let (p, q, s) = (bench::median(plain), bench::median(par), bench::median(seq));
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
