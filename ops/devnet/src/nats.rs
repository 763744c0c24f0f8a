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
    let mut process = launch(dir, port, "")?;
    let port = process.ready(Duration::from_secs(30)).await?;
    wait_for_client(&process, port).await?;
    Ok((process, port))
}

/// Starts nats-server on `port` (None: a port of its own choosing, which it logs, so
/// nothing races for it) with JetStream in `dir` and `extra` configuration (a cluster
/// block), without waiting for it.
fn launch(dir: &TempDir, port: Option<u16>, extra: &str) -> Result<ChildProcess, DevnetError> {
    let binary = find_nats_server()?;
    let config = dir.path().join("nats.conf");
    let store = dir.path().join("jetstream");
    let text = format!(
        "host: 127.0.0.1\nport: {}\njetstream {{\n  store_dir: {:?}\n  max_memory_store: {MAX_MEMORY_STORE}\n  max_file_store: {MAX_FILE_STORE}\n}}\n{extra}",
        port.map_or(-1, i32::from),
        store.display().to_string(),
    );
    std::fs::write(&config, text).map_err(|e| DevnetError::io(&config, e))?;
    let args = vec!["-c".to_string(), config.display().to_string()];
    ChildProcess::spawn("nats-server", &binary, &args, dir.path().join("nats.log"), client_port)
}

/// A JetStream cluster of nats-servers on loopback, each killed when dropped and each
/// with its store in a temporary directory that outlives its restarts.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<ClusterNode>,
}

#[derive(Debug)]
struct ClusterNode {
    process: Option<ChildProcess>,
    port: u16,
    cluster_port: u16,
    /// The monitoring port (`/healthz`).
    monitor_port: u16,
    dir: TempDir,
}

impl NatsCluster {
    /// Starts `size` clustered servers and waits until the cluster serves JetStream
    /// (a leader elected: a stream with `size` replicas can be created).
    pub async fn spawn(size: usize) -> Result<Self, DevnetError> {
        // Routes name each other's cluster ports up front, so these are picked here.
        let cluster_ports = (0..size).map(|_| crate::free_port()).collect::<Result<Vec<_>, _>>()?;
        let mut nodes = Vec::with_capacity(size);
        for (i, &cluster_port) in cluster_ports.iter().enumerate() {
            let dir = tempfile::Builder::new()
                .prefix(&format!("ferry-nats-{i}-"))
                .tempdir()
                .map_err(|e| DevnetError::io("tempdir", e))?;
            let monitor_port = crate::free_port()?;
            let process = launch(&dir, None, &cluster_block(i, cluster_port, &cluster_ports, monitor_port))?;
            nodes.push(ClusterNode { process: Some(process), port: 0, cluster_port, monitor_port, dir });
        }
        for node in &mut nodes {
            if let Some(process) = node.process.as_mut() {
                node.port = process.ready(Duration::from_secs(30)).await?;
            }
        }
        let cluster = Self { nodes };
        cluster.wait_for_jetstream(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    /// Every server's `nats://127.0.0.1:<port>`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.port)).collect()
    }

    /// Kills server `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.nodes[i].process.take() {
            process.kill();
        }
    }

    /// Starts server `i` again on its ports and store, and waits until it serves and
    /// has caught up: its `/healthz` says JetStream is current with the meta leader and
    /// with every stream and consumer it holds a replica of. An operator's rolling
    /// restart waits for that before taking the next server down; taking it down
    /// sooner leaves a replicated stream two members short.
    pub async fn restart(&mut self, i: usize) -> Result<(), DevnetError> {
        self.kill(i);
        let ports: Vec<u16> = self.nodes.iter().map(|n| n.cluster_port).collect();
        let node = &mut self.nodes[i];
        let block = cluster_block(i, node.cluster_port, &ports, node.monitor_port);
        let mut process = launch(&node.dir, Some(node.port), &block)?;
        process.ready(Duration::from_secs(30)).await?;
        wait_for_client(&process, node.port).await?;
        wait_until_current(&process, node.monitor_port, Duration::from_secs(120)).await?;
        node.process = Some(process);
        Ok(())
    }

    /// Server `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].process.as_ref().map(ChildProcess::pid)
    }

    async fn wait_for_jetstream(&self, timeout: Duration) -> Result<(), DevnetError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let probe = async_nats::jetstream::stream::Config {
            name: "FERRY_CLUSTER_PROBE".into(),
            subjects: vec!["ferry.cluster-probe".into()],
            num_replicas: self.nodes.len(),
            ..Default::default()
        };
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            let attempt = async {
                let client = async_nats::connect(self.urls()).await.map_err(|e| e.to_string())?;
                let js = async_nats::jetstream::new(client);
                js.get_or_create_stream(probe.clone()).await.map_err(|e| e.to_string())?;
                js.delete_stream("FERRY_CLUSTER_PROBE").await.map_err(|e| e.to_string())?;
                Ok::<(), String>(())
            };
            match tokio::time::timeout(Duration::from_secs(10), attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last = e,
                Err(_) => last = "no answer in 10 s".into(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let node = self.nodes.iter().find_map(|n| n.process.as_ref());
        let reason = format!("the cluster served no JetStream within {timeout:?}: {last}");
        Err(match node {
            Some(process) => process.not_ready(&reason),
            None => DevnetError::NotReady { binary: "nats-server", reason, log: PathBuf::new() },
        })
    }
}

/// The configuration block that makes server `i` (listening for routes on `port`, for
/// monitoring on `monitor`) a member of the cluster whose route ports are `ports`.
fn cluster_block(i: usize, port: u16, ports: &[u16], monitor: u16) -> String {
    let routes: Vec<String> = ports.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect();
    format!(
        "server_name: ferry-{i}\nhttp: \"127.0.0.1:{monitor}\"\ncluster {{\n  name: ferry\n  host: 127.0.0.1\n  port: {port}\n  routes: [{}]\n}}\n",
        routes.join(", ")
    )
}

/// Waits until the server monitored on `monitor` answers `/healthz` with status ok
/// (nats-server 2.9 and later: JetStream current with its meta leader and with each
/// stream and consumer replica it holds).
async fn wait_until_current(process: &ChildProcess, monitor: u16, timeout: Duration) -> Result<(), DevnetError> {
    let url = format!("http://127.0.0.1:{monitor}/healthz");
    let client = alloy::transports::http::reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let answer = client.get(&url).timeout(Duration::from_secs(5)).send().await;
        let last = match answer {
            Ok(response) => {
                let ok = response.status().is_success();
                let body = response.text().await.unwrap_or_default();
                if ok && body.contains("\"ok\"") {
                    tracing::info!(monitor, waited = ?(timeout - deadline.saturating_duration_since(tokio::time::Instant::now())), "nats-server current");
                    return Ok(());
                }
                body
            }
            Err(e) => e.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(process.not_ready(&format!("not current within {timeout:?}: {}", last.trim())));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
