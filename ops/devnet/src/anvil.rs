//! An anvil chain as a child process.

use std::{path::PathBuf, time::Duration};

use alloy::{
    primitives::B256,
    providers::{Provider, ProviderBuilder},
};
use serde::Deserialize;
use tempfile::TempDir;

use crate::{DevnetError, find_anvil, process::ChildProcess};

/// How to start an anvil chain.
#[derive(Debug, Clone, Default)]
pub struct AnvilOptions {
    /// EIP-155 chain id (anvil's default, 31337, when `None`).
    pub chain_id: Option<u64>,
    /// Mine a block every this often; `None` mines one per transaction (automine).
    pub block_time: Option<Duration>,
    /// EVM hardfork name (`london`, `cancun`, `prague`, ...); anvil's default when `None`.
    pub hardfork: Option<String>,
    /// Further arguments passed as they are.
    pub extra_args: Vec<String>,
}

/// A running anvil, killed when dropped.
#[derive(Debug)]
pub struct Anvil {
    process: ChildProcess,
    chain_id: u64,
    port: u16,
    private_keys: Vec<B256>,
    dir: TempDir,
}

#[derive(Deserialize)]
struct ConfigOut {
    private_keys: Vec<B256>,
}

impl Anvil {
    /// Starts anvil on a port of its choosing and waits until it answers `eth_chainId`.
    pub async fn spawn(options: AnvilOptions) -> Result<Self, DevnetError> {
        let binary = find_anvil()?;
        let dir =
            tempfile::Builder::new().prefix("ferry-anvil-").tempdir().map_err(|e| DevnetError::io("tempdir", e))?;
        let config_out = dir.path().join("anvil.json");
        let mut args: Vec<String> =
            vec!["--port".into(), "0".into(), "--config-out".into(), config_out.display().to_string()];
        if let Some(id) = options.chain_id {
            args.extend(["--chain-id".into(), id.to_string()]);
        }
        if let Some(block_time) = options.block_time {
            args.extend(["--block-time".into(), block_time.as_secs_f64().to_string()]);
        }
        if let Some(fork) = &options.hardfork {
            args.extend(["--hardfork".into(), fork.clone()]);
        }
        args.extend(options.extra_args.iter().cloned());

        let mut process = ChildProcess::spawn("anvil", &binary, &args, dir.path().join("anvil.log"), listening_port)?;
        let port = process.ready(Duration::from_secs(30)).await?;
        let private_keys = read_keys(&config_out)?;
        let url = format!("http://127.0.0.1:{port}").parse().map_err(|e| DevnetError::rpc("anvil URL", e))?;
        let provider = ProviderBuilder::new().connect_http(url);
        let chain_id = wait_for_rpc(&process, &provider).await?;
        Ok(Self { process, chain_id, port, private_keys, dir })
    }

    /// The chain id anvil reports.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The port it listens on (HTTP and WebSocket).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `ws://127.0.0.1:<port>`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The funded dev accounts' keys, in anvil's order.
    pub fn private_keys(&self) -> &[B256] {
        &self.private_keys
    }

    /// The process id, for tests that signal it.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Where anvil's output goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("anvil.log")
    }

    /// Freezes the process (SIGSTOP): an RPC outage as clients see it.
    pub fn pause(&self) -> std::io::Result<()> {
        self.process.signal(libc::SIGSTOP)
    }

    /// Thaws a paused process (SIGCONT).
    pub fn resume(&self) -> std::io::Result<()> {
        self.process.signal(libc::SIGCONT)
    }
}

/// The port in anvil's `Listening on 127.0.0.1:<port>` line.
fn listening_port(line: &str) -> Option<u16> {
    line.trim().strip_prefix("Listening on ")?.rsplit(':').next()?.parse().ok()
}

fn read_keys(path: &std::path::Path) -> Result<Vec<B256>, DevnetError> {
    let text = std::fs::read_to_string(path).map_err(|e| DevnetError::io(path, e))?;
    let config: ConfigOut =
        serde_json::from_str(&text).map_err(|e| DevnetError::Format { path: path.into(), reason: e.to_string() })?;
    Ok(config.private_keys)
}

async fn wait_for_rpc(process: &ChildProcess, provider: &impl Provider) -> Result<u64, DevnetError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match provider.get_chain_id().await {
            Ok(id) => return Ok(id),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(process.not_ready(&format!("eth_chainId kept failing: {e}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_listening_line() {
        assert_eq!(super::listening_port("Listening on 127.0.0.1:46235"), Some(46235));
        assert_eq!(super::listening_port("Listening on [::1]:8545"), Some(8545));
        assert_eq!(super::listening_port("Chain ID"), None);
    }
}
