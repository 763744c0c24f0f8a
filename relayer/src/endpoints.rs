//! A chain's RPC endpoints as one: reads go to the healthiest endpoint and fall over to
//! the next when it fails, signed transactions go to every healthy one, and with a
//! quorum of K the light client takes a header only when K endpoints give the same hash.
//!
//! Health is what the endpoint did lately: a failed call puts it on probation (longer
//! after each failure in a row, cleared by a success), and a prober compares every
//! endpoint's head with the best one's, so a lagging endpoint counts as sick too.
//! `ferry_rpc_endpoint_up{chain, endpoint}` and `ferry_rpc_endpoint_head_lag_blocks`
//! show both; the endpoint label is `host:port`, never a URL that may carry credentials.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    task::{Context as TaskContext, Poll},
    time::{Duration, Instant},
};

use alloy::{
    consensus::Header,
    network::EthereumWallet,
    primitives::B256,
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::{
        client::ClientBuilder,
        json_rpc::{RequestPacket, ResponsePacket},
    },
    transports::{TransportError, TransportErrorKind, TransportFut, http::Http, layers::RetryBackoffLayer},
};
use ferry_light_client::{HeaderSource, RpcHeaderSource, SourceError};
use futures_util::future::join_all;
use prometheus::{IntCounter, IntGauge};
use tower::{Layer, Service};
use tracing::warn;

use crate::{
    ChainConfig,
    metrics::Metrics,
    rpc::{COMPUTE_UNITS_PER_SECOND, RATE_LIMIT_BACKOFF_MS, RATE_LIMIT_RETRIES, RpcLayer, RpcService},
};

/// The first probation after a failure; each further failure in a row doubles it.
const PROBATION: Duration = Duration::from_secs(2);
/// The longest probation.
const MAX_PROBATION: Duration = Duration::from_secs(60);
/// How much of a new latency sample the running average takes.
const LATENCY_WEIGHT: f64 = 0.2;

/// One endpoint's transport, its own provider (for probes and quorum reads) and health.
struct Endpoint {
    label: String,
    transport: RpcService<Http<alloy::transports::http::Client>>,
    provider: DynProvider,
    health: Mutex<Health>,
    up: IntGauge,
    lag: IntGauge,
}

/// What an endpoint did lately.
#[derive(Debug, Default)]
struct Health {
    /// Failures in a row.
    failures: u32,
    /// Until when it is passed over.
    probation_until: Option<Instant>,
    /// Its head at the last probe.
    head: u64,
    /// Blocks behind the best endpoint at the last probe.
    lag: u64,
    /// Running average of its answers' latency, in seconds.
    latency: f64,
}

impl Health {
    fn healthy(&self, now: Instant, max_lag: u64) -> bool {
        self.probation_until.is_none_or(|until| until <= now) && self.lag <= max_lag
    }
}

/// One chain's endpoints.
pub(crate) struct Endpoints {
    chain: String,
    list: Vec<Endpoint>,
    quorum: usize,
    max_lag: u64,
    disagreements: IntCounter,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<&str> = self.list.iter().map(|e| e.label.as_str()).collect();
        f.debug_struct("Endpoints").field("chain", &self.chain).field("endpoints", &labels).finish_non_exhaustive()
    }
}

impl Endpoints {
    /// The endpoints of chain `name` (`config check` refuses URLs that do not parse; one
    /// that gets through anyway is an endpoint that fails every call).
    pub(crate) fn new(metrics: &Metrics, name: &str, chain: &ChainConfig) -> Arc<Self> {
        let urls = chain.rpc_endpoints();
        let mut labels: Vec<String> = Vec::new();
        let list = urls
            .iter()
            .map(|url| {
                let parsed: url::Url =
                    url.parse().unwrap_or_else(|_| "http://invalid.invalid".parse().expect("static URL"));
                let label = unique(endpoint_label(&parsed), &labels);
                labels.push(label.clone());
                let timeout = Duration::from_millis(chain.rpc_timeout_ms.max(1));
                let transport = RpcLayer::new(metrics, name, timeout).layer(Http::new(parsed));
                let provider = ProviderBuilder::new()
                    .connect_client(ClientBuilder::default().transport(transport.clone(), false))
                    .erased();
                let gauges = [name, label.as_str()];
                let up = metrics.rpc_endpoint_up.with_label_values(&gauges);
                up.set(1);
                let lag = metrics.rpc_endpoint_head_lag_blocks.with_label_values(&gauges);
                Endpoint { label, transport, provider, health: Mutex::new(Health::default()), up, lag }
            })
            .collect();
        Arc::new(Self {
            chain: name.to_string(),
            list,
            quorum: chain.rpc_quorum.max(1),
            max_lag: chain.rpc_max_head_lag,
            disagreements: metrics.bad_input_total.with_label_values(&["rpc", "rpc_disagreement"]),
        })
    }

    /// A provider over all the endpoints (signing with `wallet` when given), with the
    /// rate-limit retries on top.
    pub(crate) fn provider(self: &Arc<Self>, wallet: Option<EthereumWallet>) -> DynProvider {
        let client = ClientBuilder::default()
            .layer(RetryBackoffLayer::new(RATE_LIMIT_RETRIES, RATE_LIMIT_BACKOFF_MS, COMPUTE_UNITS_PER_SECOND))
            .transport(Failover(self.clone()), false);
        match wallet {
            Some(wallet) => ProviderBuilder::new().wallet(wallet).connect_client(client).erased(),
            None => ProviderBuilder::new().connect_client(client).erased(),
        }
    }

    /// The light client's header source: with a quorum of one, any endpoint's word
    /// (falling over); above that, K endpoints' agreement.
    pub(crate) fn header_source(self: &Arc<Self>) -> QuorumSource {
        QuorumSource { endpoints: self.clone(), any: RpcHeaderSource::new(self.provider(None)) }
    }

    /// Indices of the endpoints, healthy first, then by lag and latency.
    fn ranked(&self) -> Vec<usize> {
        let now = Instant::now();
        let mut keyed: Vec<(bool, u64, f64, usize)> = self
            .list
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let h = lock(&e.health);
                (!h.healthy(now, self.max_lag), h.lag, h.latency, i)
            })
            .collect();
        keyed.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(a.2.total_cmp(&b.2)));
        keyed.into_iter().map(|k| k.3).collect()
    }

    /// The healthy endpoints, or all of them when none is.
    fn healthy(&self) -> Vec<usize> {
        let now = Instant::now();
        let healthy: Vec<usize> =
            (0..self.list.len()).filter(|&i| lock(&self.list[i].health).healthy(now, self.max_lag)).collect();
        if healthy.is_empty() { (0..self.list.len()).collect() } else { healthy }
    }

    fn succeeded(&self, i: usize, elapsed: Duration) {
        let endpoint = &self.list[i];
        let mut h = lock(&endpoint.health);
        h.failures = 0;
        h.probation_until = None;
        let sample = elapsed.as_secs_f64();
        h.latency = if h.latency == 0.0 { sample } else { h.latency + LATENCY_WEIGHT * (sample - h.latency) };
        endpoint.up.set(i64::from(h.lag <= self.max_lag));
    }

    /// Puts endpoint `i` on probation, longer for each failure in a row.
    fn failed(&self, i: usize, error: &dyn std::fmt::Display) {
        let endpoint = &self.list[i];
        let mut h = lock(&endpoint.health);
        h.failures = h.failures.saturating_add(1);
        let probation = PROBATION.saturating_mul(1 << (h.failures - 1).min(8)).min(MAX_PROBATION);
        h.probation_until = Some(Instant::now() + probation);
        endpoint.up.set(0);
        warn!(chain = %self.chain, endpoint = %endpoint.label, failures = h.failures, ?probation, %error, "RPC endpoint failed; on probation");
    }

    /// Asks every endpoint for its head and records each one's lag behind the best.
    pub(crate) async fn probe(&self) {
        let heads = join_all(self.list.iter().enumerate().map(|(i, e)| async move {
            let started = Instant::now();
            let head = e.provider.get_block_number().await;
            (i, head, started.elapsed())
        }))
        .await;
        let best = heads.iter().filter_map(|(_, head, _)| head.as_ref().ok().copied()).max().unwrap_or(0);
        for (i, head, elapsed) in heads {
            match head {
                Ok(head) => {
                    let lag = best.saturating_sub(head);
                    {
                        let mut h = lock(&self.list[i].health);
                        (h.head, h.lag) = (head, lag);
                    }
                    self.list[i].lag.set(lag as i64);
                    self.succeeded(i, elapsed);
                }
                Err(e) => self.failed(i, &e),
            }
        }
    }

    /// Probes every `interval` until the task is aborted.
    pub(crate) async fn run_prober(self: Arc<Self>, interval: Duration) {
        loop {
            self.probe().await;
            tokio::time::sleep(interval).await;
        }
    }

    /// A read: the best endpoint's answer, falling over to the next on a transport error.
    async fn first_answer(&self, request: RequestPacket) -> Result<ResponsePacket, TransportError> {
        let mut last = None;
        for i in self.ranked() {
            let started = Instant::now();
            match self.list[i].transport.clone().call(request.clone()).await {
                Ok(response) => {
                    self.succeeded(i, started.elapsed());
                    return Ok(response);
                }
                Err(e) => {
                    self.failed(i, &e);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| TransportErrorKind::custom_str("no RPC endpoint configured")))
    }

    /// A signed transaction: to every healthy endpoint at once; the first acceptance is
    /// the answer (the others typically say they know it already).
    async fn broadcast(&self, request: RequestPacket) -> Result<ResponsePacket, TransportError> {
        let targets = self.healthy();
        let answers = join_all(targets.iter().map(|&i| {
            let request = request.clone();
            let mut transport = self.list[i].transport.clone();
            async move {
                let started = Instant::now();
                (i, transport.call(request).await, started.elapsed())
            }
        }))
        .await;
        let (mut accepted, mut refused, mut failed) = (None, None, None);
        for (i, answer, elapsed) in answers {
            match answer {
                Ok(response) => {
                    self.succeeded(i, elapsed);
                    if response.is_error() {
                        refused.get_or_insert(response);
                    } else {
                        accepted.get_or_insert(response);
                    }
                }
                Err(e) => {
                    self.failed(i, &e);
                    failed.get_or_insert(e);
                }
            }
        }
        match (accepted, refused, failed) {
            (Some(response), _, _) | (None, Some(response), _) => Ok(response),
            (None, None, Some(e)) => Err(e),
            (None, None, None) => Err(TransportErrorKind::custom_str("no RPC endpoint configured")),
        }
    }
}

/// `host:port` of an endpoint URL: no scheme, path, query or credentials.
fn endpoint_label(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("unknown");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// `label`, or `label#n` when an earlier endpoint took it (two paths on one host).
fn unique(label: String, taken: &[String]) -> String {
    if !taken.contains(&label) {
        return label;
    }
    (2..).map(|n| format!("{label}#{n}")).find(|l| !taken.contains(l)).unwrap_or(label)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The transport over a chain's endpoints.
#[derive(Clone)]
struct Failover(Arc<Endpoints>);

impl Service<RequestPacket> for Failover {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: RequestPacket) -> Self::Future {
        let endpoints = self.0.clone();
        Box::pin(async move {
            if request.method_names().any(|m| m == "eth_sendRawTransaction") {
                endpoints.broadcast(request).await
            } else {
                endpoints.first_answer(request).await
            }
        })
    }
}

/// Headers for the light client, agreed by a quorum of endpoints.
#[derive(Clone)]
pub(crate) struct QuorumSource {
    endpoints: Arc<Endpoints>,
    any: RpcHeaderSource<DynProvider>,
}

impl QuorumSource {
    /// Block `number` from every healthy endpoint; the header K of them agree on. A
    /// dissenting endpoint is logged, counted and put on probation; without K in
    /// agreement nothing is returned.
    async fn agreed(&self, number: u64) -> Result<(Header, B256), SourceError> {
        let set = &self.endpoints;
        let what = format!("block {number} from a quorum of {}", set.quorum);
        let answers = join_all(set.healthy().into_iter().map(|i| async move {
            (i, RpcHeaderSource::new(set.list[i].provider.clone()).header_by_number(number).await)
        }))
        .await;
        let mut votes: HashMap<B256, Vec<usize>> = HashMap::new();
        let mut headers: HashMap<B256, Header> = HashMap::new();
        for (i, answer) in answers {
            match answer {
                Ok((header, hash)) => {
                    votes.entry(hash).or_default().push(i);
                    headers.entry(hash).or_insert(header);
                }
                Err(SourceError::NotFound(_)) => {}
                Err(e) => set.failed(i, &e),
            }
        }
        let winner = votes.iter().filter(|(_, who)| who.len() >= set.quorum).map(|(hash, _)| *hash).next();
        if votes.len() > 1 {
            self.disagreement(number, &votes, winner);
        }
        match winner.and_then(|hash| headers.remove(&hash).map(|header| (header, hash))) {
            Some(agreed) => Ok(agreed),
            None if votes.len() > 1 => Err(SourceError::Disagreement {
                what,
                reason: format!("no hash has {} endpoints behind it: {}", set.quorum, self.describe(&votes)),
            }),
            None => Err(SourceError::NotFound(format!(
                "{what} (only {} endpoints have it)",
                votes.values().map(Vec::len).max().unwrap_or(0)
            ))),
        }
    }

    /// Counts and logs a disagreement at `number`, penalising whoever is not behind the
    /// winning hash (everyone, when no hash won).
    fn disagreement(&self, number: u64, votes: &HashMap<B256, Vec<usize>>, winner: Option<B256>) {
        let set = &self.endpoints;
        set.disagreements.inc();
        warn!(chain = %set.chain, number, answers = %self.describe(votes), agreed = ?winner, "RPC endpoints disagree on a block hash; refused");
        for (hash, who) in votes {
            if Some(*hash) != winner {
                for &i in who {
                    set.failed(i, &format!("served {hash} for block {number}, not the quorum's"));
                }
            }
        }
    }

    fn describe(&self, votes: &HashMap<B256, Vec<usize>>) -> String {
        votes
            .iter()
            .map(|(hash, who)| {
                let labels: Vec<&str> = who.iter().map(|&i| self.endpoints.list[i].label.as_str()).collect();
                format!("{hash} from {}", labels.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl HeaderSource for QuorumSource {
    /// The highest block K endpoints have.
    async fn latest_number(&self) -> Result<u64, SourceError> {
        let set = &self.endpoints;
        if set.quorum <= 1 {
            return self.any.latest_number().await;
        }
        let heads = join_all(set.healthy().into_iter().map(|i| set.list[i].provider.get_block_number())).await;
        let mut heads: Vec<u64> = heads.into_iter().filter_map(Result::ok).collect();
        heads.sort_unstable_by(|a, b| b.cmp(a));
        heads.get(set.quorum - 1).copied().ok_or_else(|| SourceError::Request {
            what: "eth_blockNumber".into(),
            reason: format!("{} of the {} endpoints needed for the quorum answered", heads.len(), set.quorum),
        })
    }

    async fn header_by_number(&self, number: u64) -> Result<(Header, B256), SourceError> {
        if self.endpoints.quorum <= 1 {
            return self.any.header_by_number(number).await;
        }
        self.agreed(number).await
    }

    /// By hash, any endpoint will do: the light client checks that the header hashes to it.
    async fn header_by_hash(&self, hash: B256) -> Result<(Header, B256), SourceError> {
        self.any.header_by_hash(hash).await
    }

    async fn finalized(&self) -> Result<Option<(u64, B256)>, SourceError> {
        let Some((number, hash)) = self.any.finalized().await? else { return Ok(None) };
        if self.endpoints.quorum <= 1 {
            return Ok(Some((number, hash)));
        }
        let (_, agreed) = self.agreed(number).await?;
        Ok((agreed == hash).then_some((number, hash)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_host_and_port_without_credentials_and_unique() {
        let url: url::Url = "https://user:secret@rpc.example.com/v2/KEY".parse().unwrap();
        assert_eq!(endpoint_label(&url), "rpc.example.com:443");
        let taken = vec!["rpc.example.com:443".to_string()];
        assert_eq!(unique("rpc.example.com:443".into(), &taken), "rpc.example.com:443#2");
        assert_eq!(unique("other:8545".into(), &taken), "other:8545");
    }

    #[test]
    fn probation_grows_with_failures_in_a_row_and_a_success_ends_it() {
        let metrics = Metrics::new();
        let mut chain = ChainConfig::new(1, "http://127.0.0.1:8545", alloy::primitives::Address::ZERO);
        chain.rpc_urls = vec!["http://127.0.0.1:1".into()];
        let set = Endpoints::new(&metrics, "alpha", &chain);
        assert_eq!(set.ranked(), vec![0, 1]);
        set.failed(0, &"refused");
        let first = lock(&set.list[0].health).probation_until.unwrap();
        set.failed(0, &"refused");
        let second = lock(&set.list[0].health).probation_until.unwrap();
        assert!(second > first);
        assert_eq!(set.ranked(), vec![1, 0], "the endpoint on probation is tried last");
        assert_eq!(set.healthy(), vec![1]);
        assert_eq!(metrics.rpc_endpoint_up.with_label_values(&["alpha", "127.0.0.1:8545"]).get(), 0);
        set.succeeded(0, Duration::from_millis(5));
        assert_eq!(set.healthy(), vec![0, 1]);
        assert_eq!(metrics.rpc_endpoint_up.with_label_values(&["alpha", "127.0.0.1:8545"]).get(), 1);
    }

    /// The first endpoint refuses connections: a read falls over to the second at once,
    /// and the first goes on probation.
    #[tokio::test]
    async fn a_read_falls_over_to_the_next_endpoint() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let app = axum::Router::new().route(
                "/",
                axum::routing::post(|body: axum::body::Bytes| async move {
                    let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    axum::Json(serde_json::json!({"jsonrpc": "2.0", "id": request["id"], "result": "0x2a"}))
                }),
            );
            axum::serve(listener, app).await
        });
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let metrics = Metrics::new();
        let mut chain = ChainConfig::new(1, format!("http://{dead}"), alloy::primitives::Address::ZERO);
        chain.rpc_urls = vec![format!("http://{live}")];
        let set = Endpoints::new(&metrics, "alpha", &chain);
        assert_eq!(set.provider(None).get_block_number().await.unwrap(), 42);
        assert_eq!(set.healthy(), vec![1]);
        assert_eq!(metrics.rpc_endpoint_up.with_label_values(&["alpha", &dead.to_string()]).get(), 0);
        server.abort();
    }
}
