//! The value-safety commands: `ferry accountant` (the books per token route) and
//! `ferry governor list|release|cancel` (the transfers this process's validators hold).
//! Both ask the running process's HTTP API; with it down, the books and the held list
//! are read from the store.

use std::path::PathBuf;

use alloy::primitives::B256;
use anyhow::Context;
use ferry_relayer::{Config, guard::Held};

use crate::commands::{open_store, post_and_print};

/// Arguments of `ferry accountant`.
#[derive(Debug, clap::Args)]
pub struct AccountantArgs {
    /// The configuration file (the HTTP API's address and the data dir).
    #[arg(long, env = "FERRY_CONFIG")]
    config: PathBuf,
}

/// Prints each route's books: locked on the origin, released on the destination, and
/// what was released beyond locked.
pub async fn accountant(args: AccountantArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let url = format!("http://{}/accountant", config.http.listen);
    let routes: Vec<serde_json::Value> = match reqwest::get(&url).await {
        Ok(response) if response.status().is_success() => response.json().await?,
        _ => offline_books(&config)?,
    };
    println!("{:<20} {:>32} {:>32} {:>32}", "route", "locked", "released", "unbacked");
    for route in &routes {
        let field = |name: &str| route[name].as_str().unwrap_or("?").to_string();
        let unbacked = field("unbacked");
        let flag = if unbacked != "0" { "  UNBACKED" } else { "" };
        println!("{:<20} {:>32} {:>32} {:>32}{flag}", field("route"), field("locked"), field("released"), unbacked);
    }
    Ok(())
}

fn offline_books(config: &Config) -> anyhow::Result<Vec<serde_json::Value>> {
    let ledger = open_store(config)?.books()?;
    let label = |id: u32| config.chain_by_id(id.into()).map_or_else(|| id.to_string(), |(name, _)| name.to_string());
    Ok(ledger
        .routes()
        .iter()
        .map(|(&(o, d), books)| {
            serde_json::json!({
                "route": format!("{}->{}", label(o), label(d)),
                "locked": books.locked.to_string(),
                "released": books.released.to_string(),
                "unbacked": books.unbacked().to_string(),
            })
        })
        .collect())
}

/// Arguments of `ferry governor`.
#[derive(Debug, clap::Args)]
pub struct GovernorArgs {
    #[command(subcommand)]
    action: GovernorAction,
    /// The configuration file (the HTTP API's address).
    #[arg(long, env = "FERRY_CONFIG", global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum GovernorAction {
    /// List the held transfers with why each is held.
    List,
    /// End a held transfer's delay now: it is signed at the next review (the accountant
    /// still checks it).
    Release {
        /// The message id.
        id: B256,
    },
    /// Never sign a held transfer: its record is parked.
    Cancel {
        /// The message id.
        id: B256,
    },
}

/// Lists, releases or cancels held transfers.
pub async fn governor(args: GovernorArgs) -> anyhow::Result<()> {
    let path = args.config.context("--config (or FERRY_CONFIG) is required")?;
    let config = Config::load(&path)?;
    let base = format!("http://{}/governor", config.http.listen);
    let (id, verb) = match args.action {
        GovernorAction::List => {
            let held: Vec<Held> = match reqwest::get(&base).await {
                Ok(response) if response.status().is_success() => response.json().await?,
                _ => open_store(&config)?.held()?,
            };
            for h in &held {
                println!("{} {:>5} -> {:<5} {:>28} {}", h.id, h.origin, h.destination, h.amount, describe(h));
            }
            return Ok(());
        }
        GovernorAction::Release { id } => (id, "release"),
        GovernorAction::Cancel { id } => (id, "cancel"),
    };
    post_and_print(&format!("{base}/{id}/{verb}")).await
}

fn describe(held: &Held) -> String {
    match &held.reason {
        ferry_relayer::guard::HoldReason::Delay { until_ms: 0 } => "delay: released by an operator".into(),
        ferry_relayer::guard::HoldReason::Delay { until_ms } => format!("delay: until {until_ms} ms"),
        ferry_relayer::guard::HoldReason::Accountant { shortfall } => format!("accountant: {shortfall}"),
    }
}
