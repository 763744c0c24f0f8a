//! Sequential revm and the parallel pool on every workload, measured in the same run;
//! prints the table of speedups (and `--json` prints the report as one object).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    let workers = std::env::var("FERRY_BENCH_WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(2);
    let size = std::env::var("FERRY_BENCH_TXS").ok().and_then(|w| w.parse().ok()).unwrap_or(1000);
    let report = match ferry_executors::bench::measure(workers, size, 15) {
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
    print!("{report}");
}
