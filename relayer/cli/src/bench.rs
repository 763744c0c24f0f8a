//! `ferry bench`: throughput figures, each beside a baseline measured in the same run.

use std::time::Duration;

use ferry_light_client::bench as lc;

/// Arguments of `ferry bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    target: BenchTarget,
}

#[derive(Debug, clap::Subcommand)]
enum BenchTarget {
    /// Header and receipt-proof verifications per second on one core, beside bare
    /// keccak256 over the same bytes.
    LightClient {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Seconds to measure each figure for.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Sequential revm against the parallel worker pool on every workload (raw
    /// transfers, ERC-20, heavy calls, hot spots, a dependent chain, Mailbox deliveries),
    /// or with --blocks on every real block of a data directory.
    Executors {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// A directory of real blocks with their pre-state (executors/tests/data/mainnet, or
        /// the whole set ops/mainnet-data.py makes):
        /// run each on the pool and on plain revm instead of the synthetic workloads.
        #[arg(long)]
        blocks: Option<std::path::PathBuf>,
        /// Worker threads of the pool.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Transactions per batch.
        #[arg(long, default_value_t = 1000)]
        txs: usize,
        /// Measurements per workload (the median is reported).
        #[arg(long, default_value_t = 15)]
        rounds: usize,
    },
    /// The whole pipeline on a fresh devnet: messages sent alpha -> beta as fast as alpha
    /// accepts them, delivered through the relayer and three validators in this process.
    Relay {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Messages to send.
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        /// Block time of both chains, in seconds.
        #[arg(long, default_value_t = 1.0)]
        block_time: f64,
        /// Send at this many messages per second instead of as fast as alpha accepts them.
        #[arg(long)]
        rate: Option<f64>,
        /// Block gas limit of both chains (anvil's default of 30M caps a 1 s block at about
        /// 300 transfers, below the relay's target rate).
        #[arg(long, default_value_t = 100_000_000)]
        gas_limit: u64,
    },
}

/// Runs the chosen benchmark and prints its figures.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.target {
        BenchTarget::Relay { json, messages, block_time, rate, gas_limit } => {
            anyhow::ensure!(messages >= 1 && block_time > 0.0, "--messages and --block-time must be positive");
            anyhow::ensure!(rate.is_none_or(|r| r > 0.0), "--rate must be positive");
            let r = crate::bench_relay::run(crate::bench_relay::RelayBench { messages, block_time, rate, gas_limit })
                .await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} messages alpha -> beta, offered at {:.1}/s: delivered at {:.1} messages/s \
                     ({:.1}s from the first final message to the last delivery; {:.1}s end to end)",
                    r.messages, r.offered_per_s, r.messages_per_s, r.seconds, r.end_to_end_seconds
                );
                println!(
                    "latency from finality to delivery: p50 {:.2}s  p99 {:.2}s  ({:.2} and {:.2} block times)",
                    r.latency_p50_s,
                    r.latency_p99_s,
                    r.latency_p50_s / r.block_time_s,
                    r.latency_p99_s / r.block_time_s
                );
                println!("{:.3} delivery transactions per message", r.tx_per_message);
                match r.executor_speedup {
                    Some(s) => println!("executor speedup (sequential re-run / parallel): {s:.2}x"),
                    None => println!("executor speedup: no batch ran in parallel"),
                }
                println!(
                    "executor: {} batches of {:.1} transactions, {} of them in parallel",
                    r.executor_batches, r.executor_txs_per_batch, r.executor_parallel_batches
                );
                println!("peak RSS {:.1} MiB", r.peak_rss_bytes as f64 / (1024.0 * 1024.0));
                println!(
                    "CPU per message {:.0} us = {:.2}x the floor of {:.0} us (three signatures {:.0} us, \
                     one delivery on plain revm {:.0} us, measured after the relay)",
                    r.cpu_seconds_per_message * 1e6,
                    r.cpu_over_floor,
                    r.floor.seconds_per_message * 1e6,
                    r.floor.sign_seconds * 1e6,
                    r.floor.delivery_seconds * 1e6
                );
                let stages: Vec<String> =
                    r.cpu_stages_per_message.iter().map(|(stage, s)| format!("{stage} {:.0} us", s * 1e6)).collect();
                println!("by stage: {}", stages.join(", "));
            }
            Ok(())
        }
        BenchTarget::LightClient { json, seconds } => {
            anyhow::ensure!(seconds > 0.0 && seconds.is_finite(), "--seconds must be positive");
            if cfg!(debug_assertions) {
                tracing::warn!("this is a debug build: build with --release for meaningful figures");
            }
            let fixtures = lc::fixtures(1_001, 200);
            let report = lc::run(&fixtures, Duration::from_secs_f64(seconds));
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "header verifications: {:>10.0}/s   keccak bound {:>10.0}/s   ({:.2}x of the bound)",
                    report.headers_per_s,
                    report.keccak_headers_per_s,
                    report.headers_per_s / report.keccak_headers_per_s
                );
                println!(
                    "receipt proofs:       {:>10.0}/s   keccak bound {:>10.0}/s   ({:.2}x of the bound)",
                    report.proofs_per_s,
                    report.keccak_proofs_per_s,
                    report.proofs_per_s / report.keccak_proofs_per_s
                );
            }
            Ok(())
        }
        BenchTarget::Executors { json, blocks, workers, txs, rounds } => {
            anyhow::ensure!(workers >= 1 && txs >= 1 && rounds >= 1, "--workers, --txs and --rounds must be positive");
            if cfg!(debug_assertions) {
                tracing::warn!("this is a debug build: build with --release for meaningful figures");
            }
            if let Some(dir) = blocks {
                let data = ferry_executors::blocks::BlockData::open(&dir)?;
                let report = ferry_executors::bench::blocks::measure(&data, workers, rounds)?;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    println!("{workers} workers, real blocks from {}, median of {rounds}", dir.display());
                    print!("{report}");
                }
                return Ok(());
            }
            let report = ferry_executors::bench::measure(workers, txs, rounds)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
                return Ok(());
            }
            println!("{workers} workers, {txs} transactions per batch, median of {rounds}");
            print!("{report}");
            Ok(())
        }
    }
}
