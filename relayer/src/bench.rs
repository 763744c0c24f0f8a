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
    /// transfers, ERC-20, heavy calls, hot spots, a dependent chain, Mailbox deliveries).
    Executors {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Worker threads of the pool.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Transactions per batch.
        #[arg(long, default_value_t = 1000)]
        txs: usize,
        /// Measurements per workload (the median is reported).
        #[arg(long, default_value_t = 7)]
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
    },
}

/// Runs the chosen benchmark and prints its figures.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.target {
        BenchTarget::Relay { json, messages, block_time } => {
            anyhow::ensure!(messages >= 1 && block_time > 0.0, "--messages and --block-time must be positive");
            let r = crate::bench_relay::run(messages, block_time).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} messages alpha -> beta in {:.1}s: {:.1} messages/s",
                    r.messages, r.seconds, r.messages_per_s
                );
                println!("latency from finality to delivery: p50 {:.2}s  p99 {:.2}s", r.latency_p50_s, r.latency_p99_s);
                println!("{:.3} delivery transactions per message", r.tx_per_message);
                match r.executor_speedup {
                    Some(s) => println!("executor speedup (sequential re-run / parallel): {s:.2}x"),
                    None => println!("executor speedup: no batch ran in parallel"),
                }
                println!("peak RSS {:.1} MiB", r.peak_rss_bytes as f64 / (1024.0 * 1024.0));
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
        BenchTarget::Executors { json, workers, txs, rounds } => {
            anyhow::ensure!(workers >= 1 && txs >= 1 && rounds >= 1, "--workers, --txs and --rounds must be positive");
            if cfg!(debug_assertions) {
                tracing::warn!("this is a debug build: build with --release for meaningful figures");
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
