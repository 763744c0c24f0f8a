//! A JSON-RPC proxy in front of a real anvil that lies when told to: it serves headers
//! that do not hash, receipts that do not prove, or bytes that are not JSON, for a set
//! number of answers, and forwards everything else untouched.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use serde_json::Value;

/// What the proxy does to the next answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    /// Answers to `eth_getBlockByNumber`/`eth_getBlockByHash` with a timestamp one
    /// second off, so that the header no longer hashes to the hash served with it.
    Headers,
    /// Answers to `eth_getBlockReceipts` with one byte of a log's data flipped, so that
    /// the receipts no longer prove against the header's `receiptsRoot`.
    Receipts,
    /// Answers to `eth_getBlockReceipts` (asked by the watcher alone, so the test knows
    /// who reads them) replaced by bytes that are not JSON.
    Garbage,
    /// Answers to `eth_getBlockByNumber` with another block: its `extraData` changed and
    /// its hash recomputed, so that the header hashes right and is simply not the
    /// chain's (an endpoint on another fork, or one that lies with care).
    Fork,
    /// Answers to `eth_blockNumber` with the head at the time the lie began: a node that
    /// stopped following the chain.
    StaleHead,
    /// Forwards `eth_sendRawTransaction` and answers 502: the transaction goes out, the
    /// sender never hears so.
    SwallowSends,
}

#[derive(Debug)]
struct Plan {
    lie: Option<Lie>,
    /// The head a stale endpoint keeps answering.
    stale: Option<Value>,
    /// Requests held unanswered while frozen.
    held: usize,
    frozen: bool,
    /// Answers still to tamper with.
    left: usize,
    /// Answers tampered with so far.
    told: usize,
}

/// A running proxy; stops with the test's runtime or when killed.
pub struct RpcProxy {
    addr: SocketAddr,
    plan: Arc<Mutex<Plan>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

#[derive(Clone)]
struct Upstream {
    url: String,
    client: reqwest::Client,
    plan: Arc<Mutex<Plan>>,
}

impl RpcProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: &str) -> RpcProxy {
        let plan = Arc::new(Mutex::new(Plan { lie: None, stale: None, held: 0, frozen: false, left: 0, told: 0 }));
        let state = Upstream { url: upstream.to_string(), client: reqwest::Client::new(), plan: plan.clone() };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", post(forward)).with_state(state);
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        RpcProxy { addr, plan, server }
    }

    /// Stops listening and drops every connection: from now on, connections are refused.
    pub async fn kill(&self) {
        self.server.abort();
        while !self.server.is_finished() {
            tokio::task::yield_now().await;
        }
    }

    /// The URL to give ferry instead of the node's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Tells `lie` in the next `answers` answers it applies to.
    pub fn lie(&self, lie: Lie, answers: usize) {
        let mut plan = self.plan.lock().unwrap();
        (plan.lie, plan.left, plan.told, plan.stale) = (Some(lie), answers, 0, None);
    }

    /// Whether every planned lie has been told.
    pub fn done(&self) -> bool {
        self.plan.lock().unwrap().left == 0
    }

    /// Takes requests and answers none (until thawed): a node that hangs.
    pub fn freeze(&self) {
        self.plan.lock().unwrap().frozen = true;
    }

    /// How many requests arrived while frozen.
    pub fn held(&self) -> usize {
        self.plan.lock().unwrap().held
    }

    /// How many answers were tampered with under the current plan.
    pub fn told(&self) -> usize {
        self.plan.lock().unwrap().told
    }
}

async fn forward(
    State(up): State<Upstream>,
    body: Bytes,
) -> (axum::http::StatusCode, [(&'static str, &'static str); 1], Vec<u8>) {
    let json = [("content-type", "application/json")];
    let method = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("method").and_then(Value::as_str).map(str::to_string));
    let frozen = {
        let mut plan = up.plan.lock().unwrap();
        plan.held += usize::from(plan.frozen);
        plan.frozen
    };
    if frozen {
        // Held open, never answered: the client's timeout is all that ends it.
        std::future::pending::<()>().await;
    }
    let lie = {
        let plan = up.plan.lock().unwrap();
        let applies = matches!(
            (plan.lie, method.as_deref()),
            (Some(Lie::Garbage), Some("eth_getBlockReceipts"))
                | (Some(Lie::Headers), Some("eth_getBlockByNumber" | "eth_getBlockByHash"))
                | (Some(Lie::Fork), Some("eth_getBlockByNumber"))
                | (Some(Lie::Receipts), Some("eth_getBlockReceipts"))
                | (Some(Lie::StaleHead), Some("eth_blockNumber"))
                | (Some(Lie::SwallowSends), Some("eth_sendRawTransaction"))
        );
        (applies && plan.left > 0).then_some(plan.lie).flatten()
    };
    if lie == Some(Lie::Garbage) {
        count(&up.plan);
        return (axum::http::StatusCode::OK, json, b"<html>upstream confused</html>".to_vec());
    }
    let answer = match up.client.post(&up.url).header("content-type", "application/json").body(body).send().await {
        Ok(response) => response.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
        Err(_) => return (axum::http::StatusCode::BAD_GATEWAY, json, Vec::new()),
    };
    let Some(lie) = lie else { return (axum::http::StatusCode::OK, json, answer) };
    if lie == Lie::SwallowSends {
        count(&up.plan);
        return (axum::http::StatusCode::BAD_GATEWAY, json, Vec::new());
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(&answer) else {
        return (axum::http::StatusCode::OK, json, answer);
    };
    if lie == Lie::StaleHead {
        let mut plan = up.plan.lock().unwrap();
        let stale = plan.stale.get_or_insert_with(|| value["result"].clone()).clone();
        value["result"] = stale;
        plan.told += 1;
        return (axum::http::StatusCode::OK, json, serde_json::to_vec(&value).unwrap());
    }
    if tamper(lie, &mut value) {
        count(&up.plan);
    }
    (axum::http::StatusCode::OK, json, serde_json::to_vec(&value).unwrap())
}

fn count(plan: &Mutex<Plan>) {
    let mut plan = plan.lock().unwrap();
    plan.left = plan.left.saturating_sub(1);
    plan.told += 1;
}

/// Applies `lie` to a JSON-RPC answer; false when the answer has nothing to lie about.
fn tamper(lie: Lie, answer: &mut Value) -> bool {
    let Some(result) = answer.get_mut("result") else { return false };
    match lie {
        Lie::Headers => {
            let Some(ts) = result.get("timestamp").and_then(Value::as_str) else { return false };
            let Ok(ts) = u64::from_str_radix(ts.trim_start_matches("0x"), 16) else { return false };
            result["timestamp"] = Value::String(format!("{:#x}", ts + 1));
            true
        }
        Lie::Receipts => {
            let Some(receipts) = result.as_array_mut() else { return false };
            for receipt in receipts {
                let Some(logs) = receipt.get_mut("logs").and_then(Value::as_array_mut) else { continue };
                for log in logs {
                    let Some(data) = log.get("data").and_then(Value::as_str) else { continue };
                    if data.len() > 2 {
                        // Flip the last hex digit of the data.
                        let mut flipped = data.to_string();
                        let last = flipped.pop().unwrap_or('0');
                        flipped.push(if last == '0' { '1' } else { '0' });
                        log["data"] = Value::String(flipped);
                        return true;
                    }
                }
            }
            false
        }
        Lie::Fork => {
            let Ok(mut block) = serde_json::from_value::<alloy::rpc::types::Block>(result.clone()) else {
                return false;
            };
            block.header.inner.extra_data = alloy::primitives::Bytes::from_static(b"another fork");
            block.header.hash = block.header.inner.hash_slow();
            *result = serde_json::to_value(&block).unwrap();
            true
        }
        Lie::Garbage | Lie::StaleHead | Lie::SwallowSends => false,
    }
}
