//! A real Prometheus for the tests that check what operators see: Debian's, started by
//! hand on loopback with a temporary TSDB, scraping one ferry process and evaluating
//! `ops/prometheus/alerts.yml` every second; killed by PID on drop.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use serde_json::Value;
use tokio::process::{Child, Command};

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Prometheus server on loopback with its TSDB in a temp dir, killed by PID on drop.
pub struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` every second and evaluates `alerts.yml` every second.
    pub fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = ferry_devnet::free_port().unwrap();
        let rules = root().join("ops/prometheus/alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: ferry\n    static_configs:\n      - targets: ['{target}']\n",
            rules.display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus could not start: ops/install-tools.sh installs it");
        Prometheus { child, url: format!("http://127.0.0.1:{port}"), _dir: dir }
    }

    /// An instant query's result vector, or the error Prometheus gave.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/query", self.url), &[("query", expr)])
            .map_err(|e| e.to_string())?;
        let response = reqwest::get(url).await.map_err(|e| e.to_string())?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Every alerting rule Prometheus loaded, with its health and state (none while it
    /// is not answering yet).
    pub async fn rules(&self) -> Vec<Value> {
        let Ok(response) = reqwest::get(format!("{}/api/v1/rules", self.url)).await else { return vec![] };
        let body: Value = response.json().await.unwrap_or_default();
        body["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Waits until the alert `name` fires (or panics at the deadline) and returns it.
    pub async fn wait_firing(&self, name: &str, deadline: std::time::Duration) -> Value {
        super::wait_for(deadline, &format!("alert {name} firing"), || async {
            let rule = self.rules().await.into_iter().find(|r| r["name"] == name)?;
            rule["alerts"].as_array()?.iter().find(|a| a["state"] == "firing").cloned()
        })
        .await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on a child we started and have not reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}
