//! Runs one workload many times, for profilers: `cargo run --release -p ferry-executors
//! --example profile -- erc20 parallel`.

use ferry_executors::{Executor, ExecutorConfig, bench};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("erc20", String::as_str);
    let mode = args.get(2).map_or("parallel", String::as_str);
    let Ok(f) = bench::Fixture::new(2002) else { return };
    let executor = Executor::new(ExecutorConfig { workers: 2, min_parallel_batch: 1, record_access: false });
    let Some(w) = bench::workloads(&f, 1000).into_iter().find(|w| w.name == name) else { return };
    for _ in 0..200 {
        let _ = match mode {
            "sequential" => executor.execute_sequential(f.state.clone(), f.ctx.clone(), w.txs.clone()),
            _ => executor.execute_parallel(f.state.clone(), f.ctx.clone(), w.txs.clone()),
        };
    }
}
