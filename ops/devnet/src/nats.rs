//! A nats-server with JetStream as a child process.

use std::{path::PathBuf, time::Duration};

use tempfile::TempDir;

use crate::{DevnetError, find_nats_server, process::ChildProcess};

/// JetStream limits of a test server: enough for the 10,000-message fault run, small
/// enough for a laptop.
const MAX_MEMORY_STORE: u64 = 256 * 1024 * 1024;
const MAX_FILE_STORE: u64 = 2 * 1024 * 1024 * 1024;

/// A running nats-server with JetStream on loopback, killed when dropped. Its store
/// lives in a temporary directory that outlives restarts.
#[derive(Debug)]
pub struct NatsServer {
    process: ChildProcess,
    port: u16,
    dir: TempDir,
}

impl NatsServer {
    /// Starts nats-server on a port of its choosing, with JetStream on a temporary store,
    /// and waits until a client can connect.
    pub async fn spawn() -> Result<Self, DevnetError> {
        let dir =
            tempfile::Builder::new().prefix("ferry-nats-").tempdir().map_err(|e| DevnetError::io("tempdir", e))?;
        let (process, port) = start(&dir, None).await?;
        Ok(Self { process, port, dir })
    }

    /// Kills the server and starts it again on the same port and store, as an outage
    /// and recovery look to clients.
    pub async fn restart(&mut self) -> Result<(), DevnetError> {
        self.process.kill();
        let (process, _) = start(&self.dir, Some(self.port)).await?;
        self.process = process;
        Ok(())
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, for tests that signal it.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Where the server's output goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }
}

async fn start(dir: &TempDir, port: Option<u16>) -> Result<(ChildProcess, u16), DevnetError> {
    let binary = find_nats_server()?;
    let config = dir.path().join("nats.conf");
    let store = dir.path().join("jetstream");
    // port -1: the server picks a free port itself and logs it, so nothing races for it.
    let text = format!(
        "host: 127.0.0.1\nport: {}\njetstream {{\n  store_dir: {:?}\n  max_memory_store: {MAX_MEMORY_STORE}\n  max_file_store: {MAX_FILE_STORE}\n}}\n",
        port.map_or(-1, i32::from),
        store.display().to_string(),
    );
    std::fs::write(&config, text).map_err(|e| DevnetError::io(&config, e))?;
    let args = vec!["-c".to_string(), config.display().to_string()];
    let mut process = ChildProcess::spawn("nats-server", &binary, &args, dir.path().join("nats.log"), client_port)?;
    let port = process.ready(Duration::from_secs(30)).await?;
    wait_for_client(&process, port).await?;
    Ok((process, port))
}

/// The port in `Listening for client connections on 127.0.0.1:<port>`.
fn client_port(line: &str) -> Option<u16> {
    let (_, addr) = line.split_once("Listening for client connections on ")?;
    addr.trim().rsplit(':').next()?.parse().ok()
}

async fn wait_for_client(process: &ChildProcess, port: u16) -> Result<(), DevnetError> {
    let url = format!("nats://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let client = async_nats::connect(&url).await.map_err(|e| e.to_string())?;
            client.flush().await.map_err(|e| e.to_string())?;
            // JetStream must answer too; stream lookups work on every 2.x server.
            let js = async_nats::jetstream::new(client);
            match js.get_stream("FERRY_READINESS_PROBE").await {
                Ok(_) => Ok(()),
                Err(e) if matches!(e.kind(), async_nats::jetstream::context::GetStreamErrorKind::JetStream(_)) => {
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(())) => return Ok(()),
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(process.not_ready("no NATS client connection with JetStream within 30s"));
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_listening_line() {
        let line = "[12] 2026/11/25 20:44:09.123456 [INF] Listening for client connections on 127.0.0.1:41234";
        assert_eq!(super::client_port(line), Some(41234));
        assert_eq!(super::client_port("[INF] Server is ready"), None);
    }
}
