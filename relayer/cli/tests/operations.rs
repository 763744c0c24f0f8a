//! What an operator relies on: the alert rules, dashboard, container files and logs.
//!
//! The linters run on the files as committed; then a real Prometheus (Debian's, started
//! by hand on loopback with a temporary TSDB) scrapes a real `ferry run` on a devnet
//! after messages flowed, and every expression of `alerts.yml` and of the dashboard is
//! asked of it: each must parse and find series, so none points at a metric ferry does
//! not export.

mod common;

use std::{collections::BTreeSet, path::Path, process::Stdio, time::Duration};

use alloy::primitives::{B256, Bytes};
use common::{
    Net, amounts, ferry_cli, ferry_run,
    prometheus::{Prometheus, root},
    wait_for, wait_ok,
};
use ferry_messages::contracts::{Mailbox, TestRecipient};
use serde_json::Value;
use tokio::process::Command;

/// Runs a tool to completion; fails the test with its output unless it exits 0.
fn tool(program: &str, args: &[&str], dir: &Path) -> String {
    let output = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} could not start ({e}): ops/install-tools.sh installs it"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{program} {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = root().join("ops/prometheus");
    let checked = tool("promtool", &["check", "rules", "alerts.yml"], &dir);
    assert!(checked.contains("SUCCESS"), "{checked}");
    tool("promtool", &["test", "rules", "alerts_test.yml"], &dir);
    tool("promtool", &["check", "config", "prometheus.yml"], &dir);
}

#[test]
fn dockerfile_and_compose_file_pass_their_linters() {
    let root = root();
    tool("hadolint", &["ops/Dockerfile"], &root);
    tool("docker-compose", &["-f", "ops/docker-compose.yml", "config", "-q"], &root);
    // The image runs as a non-root user and checks its own health.
    let dockerfile = std::fs::read_to_string(root.join("ops/Dockerfile")).unwrap();
    assert!(dockerfile.lines().any(|l| l.starts_with("USER ") && !l.contains("root")), "{dockerfile}");
    assert!(dockerfile.contains("HEALTHCHECK"), "{dockerfile}");
}

#[test]
fn the_compose_validators_are_the_devnet_set() {
    let compose = std::fs::read_to_string(root().join("ops/docker-compose.yml")).unwrap();
    let keys = env_values(&compose, "FERRY__VALIDATORS__KEY");
    assert_eq!(keys.len(), 2, "two validator processes sign in compose: {keys:?}");
    let set: Vec<B256> = (0..3).map(ferry_devnet::validator_key).collect();
    for key in &keys {
        assert!(set.contains(key), "{key} is not one of the devnet validator keys `ferry deploy` enrols");
    }
    assert_ne!(keys[0], keys[1], "the two validators must hold different keys");
}

#[test]
fn the_dashboard_parses_and_every_panel_has_a_query() {
    let dashboard = dashboard();
    let panels = panels(&dashboard);
    assert!(panels.len() >= 20, "only {} panels", panels.len());
    let mut ids = BTreeSet::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "duplicate panel id at {title}");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("panel {title} has no targets"));
        assert!(!targets.is_empty(), "panel {title} has no targets");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "panel {title} has an empty query");
        }
    }
    for provisioning in ["datasources/prometheus.yml", "dashboards/ferry.yml"] {
        let path = root().join("ops/grafana/provisioning").join(provisioning);
        assert!(std::fs::read_to_string(&path).unwrap().contains("apiVersion: 1"), "{}", path.display());
    }
}

/// The parsed dashboard.
fn dashboard() -> Value {
    let text = std::fs::read_to_string(root().join("ops/grafana/dashboards/ferry.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every panel that is not a row, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            out.extend(panel["panels"].as_array().into_iter().flatten().cloned());
        } else {
            out.push(panel.clone());
        }
    }
    out
}

/// The values given to `name:` in a compose file's environment blocks.
fn env_values(compose: &str, name: &str) -> Vec<B256> {
    compose
        .lines()
        .filter_map(|line| line.trim().strip_prefix(&format!("{name}:")))
        .map(|value| value.trim().trim_matches('"').parse().unwrap())
        .collect()
}

/// Grafana's interval variables, as a dashboard at its default range would fill them in.
fn grafana_expr(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m").replace("$__interval", "15s").replace("$__range", "30m")
}

/// Series that exist only once their event happened, labelled by what happened (a header
/// rejected for a reason): a healthy run has none, so the rules reading them are only
/// required to evaluate cleanly and stay silent.
const BORN_OF_EVENTS: &[&str] = &["ferry_light_client_headers_rejected_total"];

/// The metric names an expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("ferry_") || word.starts_with("process_") || word == "up" {
            names.insert(word.to_string());
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_finds_every_alert_and_panel_series_and_logs_are_json() {
    let net = Net::start(Some(Duration::from_millis(500)), 2).await;
    let path = net.dir.path().join("ferry.toml");
    net.config.write(&path).unwrap();
    let log_path = net.dir.path().join("ferry.log");
    let mut ferry = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .env("FERRY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let api = net.api();
    wait_ok(&format!("{api}/healthz"), Duration::from_secs(60)).await;

    // The compose file's keys are anvil's dev accounts, as the devnet reports them.
    let compose = std::fs::read_to_string(root().join("ops/docker-compose.yml")).unwrap();
    let accounts: Vec<B256> = net.devnet.info().accounts.iter().map(|a| a.private_key).collect();
    for key in env_values(&compose, "FERRY__RELAYER__KEY").iter().chain(&env_values(&compose, "FERRY_DEPLOYER_KEY")) {
        assert!(accounts.contains(key), "compose key {key} is not an anvil dev account");
    }

    // Traffic both ways, a message that parks, and a forged NATS payload.
    let there = net.send_many("alpha", "beta", 0, net.account(1), &amounts(40, 11)).await;
    let parked = dispatch_to_rejecting_recipient(&net).await;
    let nats = async_nats::connect(net.devnet.info().nats_url.as_str()).await.unwrap();
    nats.publish("ferry.att.31337.31338", Bytes::from_static(b"\x00 not an attestation").into()).await.unwrap();
    nats.flush().await.unwrap();
    net.wait_processed("beta", &there, Duration::from_secs(120)).await;
    let back = net.send_many("beta", "alpha", 1, net.account(2), &amounts(40, 11)[..5]).await;
    net.wait_processed("alpha", &back, Duration::from_secs(120)).await;
    wait_for(Duration::from_secs(60), "the parked message and the refused payload", || async {
        let metrics = reqwest::get(format!("{api}/metrics")).await.ok()?.text().await.ok()?;
        (metrics.contains("ferry_messages_parked_total{destination=\"beta\",origin=\"alpha\",reason=\"recipient\"} 1")
            && metrics.contains("ferry_bad_input_total{reason=\"malformed\",source=\"nats_attestation\"} 1"))
        .then_some(())
    })
    .await;

    // promtool's linter accepts the live exposition.
    let exposition = reqwest::get(format!("{api}/metrics")).await.unwrap().text().await.unwrap();
    lint_metrics(&exposition).await;

    let prometheus = Prometheus::start(&net.config.http.listen.to_string());
    // Rates need two scrapes: wait until one of them answers.
    wait_for(Duration::from_secs(60), "two scrapes of ferry", || async {
        let up = prometheus.query("count_over_time(up{job=\"ferry\"}[1m]) >= 3 and up == 1").await.ok()?;
        (!up.is_empty()).then_some(())
    })
    .await;

    for panel in panels(&dashboard()) {
        for target in panel["targets"].as_array().unwrap() {
            let expr = grafana_expr(target["expr"].as_str().unwrap());
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            let found = wait_for(Duration::from_secs(30), &format!("panel {title}: {expr}"), || async {
                match prometheus.query(&expr).await {
                    Ok(series) if !series.is_empty() => Some(Ok(series)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }
            })
            .await;
            assert!(found.is_ok(), "panel {title}: {expr}: {found:?}");
        }
    }

    let expected = std::fs::read_to_string(root().join("ops/prometheus/alerts.yml"))
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    let rules = wait_for(Duration::from_secs(30), "every rule evaluated", || async {
        let rules = prometheus.rules().await;
        let evaluated = rules.iter().all(|r| r["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001")));
        (rules.len() == expected && evaluated).then_some(rules)
    })
    .await;
    for rule in &rules {
        let (name, query) = (rule["name"].as_str().unwrap(), rule["query"].as_str().unwrap());
        assert_eq!(rule["health"], "ok", "{name}: {query}: {}", rule["lastError"]);
        for metric in metric_names(query).into_iter().filter(|m| !BORN_OF_EVENTS.contains(&m.as_str())) {
            let series = prometheus.query(&format!("count({metric})")).await.unwrap();
            assert!(!series.is_empty(), "{name} reads {metric}, which ferry does not export");
        }
    }
    // On a healthy devnet the alarms about failures stay quiet.
    let quiet = ["FerryDown", "FerryAbsent", "FerryValidationMismatch", "FerryLightClientHalted", "FerryWalletLow"];
    for quiet in quiet.into_iter().chain(["FerryHeadersRejected"]) {
        let rule = rules.iter().find(|r| r["name"] == quiet).unwrap_or_else(|| panic!("no rule {quiet}"));
        assert_eq!(rule["state"], "inactive", "{quiet}: {rule}");
    }
    // And the ones about what this test did wake up.
    for (alert, label) in [("FerryBadInput", "nats_attestation"), ("FerryMessagesParked", "recipient")] {
        wait_for(Duration::from_secs(30), alert, || async {
            let rule = prometheus.rules().await.into_iter().find(|r| r["name"] == alert)?;
            let alerts = rule["alerts"].as_array()?;
            alerts.iter().any(|a| a["labels"].to_string().contains(label)).then_some(())
        })
        .await;
    }
    drop(prometheus);

    ferry.kill().await.unwrap();
    ferry.wait().await.unwrap();
    check_json_logs(&std::fs::read_to_string(&log_path).unwrap(), &there, parked);
}

/// Dispatches one message to a recipient that rejects it: the deliverer parks it.
async fn dispatch_to_rejecting_recipient(net: &Net) -> B256 {
    let beta = net.wallet("beta", 3);
    let recipient = TestRecipient::deploy(&beta).await.unwrap();
    recipient.setRejecting(true).send().await.unwrap().get_receipt().await.unwrap();
    let alpha = net.wallet("alpha", 4);
    let mailbox = Mailbox::new(net.config.chains["alpha"].mailbox, &alpha);
    let call = mailbox.dispatch(31338, recipient.address().into_word(), Bytes::from_static(b"park me"));
    let receipt = call.send().await.unwrap().get_receipt().await.unwrap();
    let id = receipt.inner.logs().iter().find_map(|l| l.log_decode::<Mailbox::Dispatch>().ok()).unwrap().inner.data.id;
    net.pay_for("alpha", 4, id, 31338, 100_000).await;
    id
}

/// `promtool check metrics` on an exposition: no lint problem.
async fn lint_metrics(exposition: &str) {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool could not start: ops/install-tools.sh installs it");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(exposition.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool check metrics:\n{text}");
}

/// Every line is a JSON object; every line naming a message carries its id, origin and
/// destination; the deliveries and the park were logged.
fn check_json_logs(log: &str, delivered: &[B256], parked: B256) {
    let mut delivered_lines = BTreeSet::new();
    let mut parked_logged = false;
    let mut lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        lines += 1;
        let Some(id) = value["id"].as_str() else { continue };
        for field in ["origin", "destination"] {
            assert!(value[field].is_number(), "a message line without {field}: {line}");
        }
        let id: B256 = id.parse().unwrap();
        match value["message"].as_str() {
            Some("delivered") => {
                delivered_lines.insert(id);
            }
            Some(m) if m.starts_with("parked") => parked_logged |= id == parked,
            _ => {}
        }
    }
    assert!(lines > 0, "no log lines");
    let missing: Vec<_> = delivered.iter().filter(|id| !delivered_lines.contains(*id)).collect();
    assert!(missing.is_empty(), "deliveries not logged: {missing:?}");
    assert!(parked_logged, "the park of {parked} was not logged");
}

/// What docker-compose runs, as processes: `ferry deploy` onto two running chains (and
/// again, doing nothing), then `ferry run --role all` and `--role validator` with the
/// compose file's keys in the environment, and a transfer delivered through them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_topology_deploys_once_and_relays_with_keys_from_the_environment() {
    use ferry_devnet::{Anvil, AnvilOptions, NatsServer};
    let chain =
        |id| AnvilOptions { chain_id: Some(id), block_time: Some(Duration::from_millis(500)), ..Default::default() };
    let (alpha, beta, nats) =
        tokio::try_join!(Anvil::spawn(chain(31337)), Anvil::spawn(chain(31338)), NatsServer::spawn()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let compose = std::fs::read_to_string(root().join("ops/docker-compose.yml")).unwrap();
    let deployer = env_values(&compose, "FERRY_DEPLOYER_KEY")[0];
    let relayer = env_values(&compose, "FERRY__RELAYER__KEY")[0];
    let validators = env_values(&compose, "FERRY__VALIDATORS__KEY");
    let http = format!("127.0.0.1:{}", ferry_devnet::free_port().unwrap());
    let (collateral, synthetic) = (format!("alpha={}", alpha.rpc_url()), format!("beta={}", beta.rpc_url()));
    let data = dir.path().join("data");
    let deploy = [
        "deploy",
        "--collateral",
        &collateral,
        "--synthetic",
        &synthetic,
        "--nats",
        &nats.url(),
        "--http",
        &http,
        "--data-dir",
        data.to_str().unwrap(),
        "--dir",
        dir.path().to_str().unwrap(),
    ];
    let env = [("FERRY_DEPLOYER_KEY", deployer.to_string())];
    let first = ferry_cli(&deploy, &env).await;
    assert!(first.contains("wrote"), "{first}");
    let config_path = dir.path().join("ferry.toml");
    let written = std::fs::read_to_string(&config_path).unwrap();
    let again = ferry_cli(&deploy, &env).await;
    assert!(again.contains("nothing to do"), "{again}");
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), written, "a second deploy rewrote the config");
    ferry_cli(&["config", "check", config_path.to_str().unwrap()], &[]).await;

    let other_data = dir.path().join("validator-1");
    let other_http = format!("127.0.0.1:{}", ferry_devnet::free_port().unwrap());
    let mut ferry = ferry_run(
        &config_path,
        "all",
        &[("FERRY__RELAYER__KEY", relayer.to_string()), ("FERRY__VALIDATORS__KEY", validators[0].to_string())],
    );
    let mut validator = ferry_run(
        &config_path,
        "validator",
        &[
            ("FERRY__VALIDATORS__KEY", validators[1].to_string()),
            ("FERRY__DATA_DIR", other_data.display().to_string()),
            ("FERRY__HTTP__LISTEN", other_http.clone()),
        ],
    );
    for address in [&http, &other_http] {
        wait_ok(&format!("http://{address}/readyz"), Duration::from_secs(90)).await;
        // The container's health check says so too.
        let healthy = ferry_cli(&["health", "--ready", "--http", address], &[]).await;
        assert!(healthy.contains("200"), "{healthy}");
    }
    let dead = format!("127.0.0.1:{}", ferry_devnet::free_port().unwrap());
    let unhealthy = Command::new(env!("CARGO_BIN_EXE_ferry")).args(["health", "--http", &dead]).output().await.unwrap();
    assert!(!unhealthy.status.success(), "ferry health passed with nothing listening");

    // One transfer from the deployer, who holds the demo supply: two signatures from two
    // processes reach the threshold, and it is delivered.
    let config = ferry_relayer::Config::load(&config_path).unwrap();
    let user = alloy::signers::local::PrivateKeySigner::from_bytes(&deployer).unwrap().address();
    let amount = alloy::primitives::U256::from(1234u64);
    let sent = ferry_cli::bridge::send(&config, "alpha", "beta", amount, user, &deployer).await.unwrap();
    wait_for(Duration::from_secs(120), "the transfer delivered on beta", || async {
        ferry_cli::bridge::delivered_on_chain(&config, "beta", sent.id).await.ok()?.then_some(())
    })
    .await;
    ferry.kill().await.unwrap();
    validator.kill().await.unwrap();
}
