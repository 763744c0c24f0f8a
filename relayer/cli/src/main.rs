//! `ferry`: the relayer service and its operator commands.

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

use ferry_cli::{bench, commands, deploy, devnet, fees, report, value};
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc's malloc (as reth runs): the parallel executor and the relay
/// allocate many small, short-lived objects on several threads at once (each transaction's
/// versions and diff, records, envelopes). On pevm's real blocks it raised the pool's mean
/// speedup over plain revm by about 0.04 (both in the same process, so on the same
/// allocator); mimalloc, tried too, doubled the relay's memory and cost it CPU.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// ferry: a verifying cross-chain relayer for EVM chains.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: watchers, validators and the relayer (or one role).
    Run(commands::RunArgs),
    /// Start two local anvil chains and a NATS server, deploy and wire the contracts,
    /// write DIR/ferry.toml and DIR/devnet.json, run the relayer and three validators,
    /// bridge a demo transfer there and back, and stay up until Ctrl-C or SIGTERM.
    Devnet(devnet::DevnetArgs),
    /// Deploy ferry's contracts on two running chains and write the configuration (and
    /// devnet.json) to relay between them; does nothing if they are already there.
    Deploy(deploy::DeployArgs),
    /// Send tokens to another chain and follow the message until delivered.
    Bridge(commands::BridgeArgs),
    /// Show one message and its stage history.
    Status(commands::StatusArgs),
    /// List messages, optionally in one stage.
    Messages(commands::MessagesArgs),
    /// Put a parked message back on the bus for another delivery attempt.
    Retry(commands::RetryArgs),
    /// Delivery fees: `claim` moves what senders paid at each paymaster to the relayer.
    Fees(fees::FeesArgs),
    /// Print the accountant's books per token route (locked, released, unbacked).
    Accountant(value::AccountantArgs),
    /// List, release or cancel the transfers the validators hold (the governor's delay
    /// for large transfers, the accountant's refusals).
    Governor(value::GovernorArgs),
    /// Exit 0 if a running ferry answers its health check (for container health checks).
    Health(commands::HealthArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Measure throughput, each figure beside a baseline from the same run.
    Bench(bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Report every problem of a configuration file with its key path.
    Check(commands::CheckArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match command(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {}", report::error_report(&error));
            ExitCode::FAILURE
        }
    }
}

async fn command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => commands::run(args).await,
        Command::Devnet(args) => devnet::run(args).await,
        Command::Deploy(args) => deploy::run(args).await,
        Command::Health(args) => commands::health(args).await,
        Command::Accountant(args) => value::accountant(args).await,
        Command::Fees(args) => fees::fees(args).await,
        Command::Governor(args) => value::governor(args).await,
        Command::Bridge(args) => commands::bridge(args).await,
        Command::Status(args) => commands::status(args).await,
        Command::Messages(args) => commands::messages(args).await,
        Command::Retry(args) => commands::retry(args).await,
        Command::Config(ConfigCommand::Check(args)) => commands::check(args),
        Command::Bench(args) => bench::run(args).await,
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn,alloy_pubsub=off,alloy_transport_ws=off"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
