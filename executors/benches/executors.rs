//! Sequential revm and the parallel pool on every workload, measured in the same run;
//! prints the table of speedups (and `--json` prints the report as one object).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    let workers = std::env::var("FERRY_BENCH_WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(2);
    let size = std::env::var("FERRY_BENCH_TXS").ok().and_then(|w| w.parse().ok()).unwrap_or(1000);
    let report = match ferry_executors::bench::measure(workers, size, 7) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    };
    if json {
        match serde_json::to_string(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("{e}"),
        }
        return;
    }
    println!("{} workers, {} transactions per batch", report.workers, size);
    println!(
        "{:<18} {:>9} {:>10} {:>10} {:>8} {:>10} {:>8} {:>8} {:>8}",
        "workload", "gas", "seq ms", "par ms", "speedup", "seqmode ms", "reexec", "avail", "Mgas/s"
    );
    for w in &report.workloads {
        println!(
            "{:<18} {:>9} {:>10.2} {:>10.2} {:>7.2}x {:>10.2} {:>8.3} {:>8.2} {:>8.0}",
            w.name,
            w.gas,
            w.sequential_s * 1e3,
            w.parallel_s * 1e3,
            w.speedup,
            w.sequential_mode_s * 1e3,
            w.reexecutions_per_tx,
            w.available_parallelism,
            w.mgas_per_s
        );
    }
}
