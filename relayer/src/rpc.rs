//! Every chain's RPC as one stack of transport layers under its providers: each request
//! timed out, timed and counted (`ferry_rpc_request_seconds{chain, method}`,
//! `ferry_rpc_requests_total{chain, method, outcome}`), and retried with backoff when
//! the node says it is rate limited or briefly unavailable. Every endpoint's transport
//! is built with [`RpcLayer`] (`endpoints`), so no call escapes the timeouts or the
//! metrics.

use std::{
    task::{Context as TaskContext, Poll},
    time::{Duration, Instant},
};

use alloy::{
    rpc::json_rpc::{RequestPacket, ResponsePacket},
    transports::{TransportError, TransportErrorKind, TransportFut},
};
use prometheus::{HistogramVec, IntCounterVec};
use tower::{Layer, Service};

use crate::metrics::Metrics;

/// Retries of a request the node refused for its rate limit or as unavailable.
pub(crate) const RATE_LIMIT_RETRIES: u32 = 5;
/// The first wait before such a retry, in milliseconds.
pub(crate) const RATE_LIMIT_BACKOFF_MS: u64 = 200;
/// The compute units per second a node is assumed to allow (the retry layer's budget).
pub(crate) const COMPUTE_UNITS_PER_SECOND: u64 = 10_000;

/// Times out, times and counts every request of one chain.
#[derive(Debug, Clone)]
pub(crate) struct RpcLayer {
    chain: String,
    requests: IntCounterVec,
    seconds: HistogramVec,
    batch_size: HistogramVec,
    timeout: Duration,
}

impl RpcLayer {
    pub(crate) fn new(metrics: &Metrics, chain: &str, timeout: Duration) -> Self {
        Self {
            chain: chain.to_string(),
            requests: metrics.rpc_requests_total.clone(),
            seconds: metrics.rpc_request_seconds.clone(),
            batch_size: metrics.rpc_batch_size.clone(),
            timeout,
        }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService { inner, layer: self.clone() }
    }
}

/// [`RpcLayer`] over a transport.
#[derive(Debug, Clone)]
pub(crate) struct RpcService<S> {
    inner: S,
    layer: RpcLayer,
}

impl<S> Service<RequestPacket> for RpcService<S>
where
    S: Service<RequestPacket, Response = ResponsePacket, Error = TransportError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: RequestPacket) -> Self::Future {
        // A batch of several calls is counted once, as method `batch`, with its size.
        let calls = request.len();
        let method = if calls > 1 {
            self.layer.batch_size.with_label_values(&[self.layer.chain.as_str()]).observe(calls as f64);
            "batch".to_string()
        } else {
            request.method_names().next().unwrap_or("empty_batch").to_string()
        };
        let layer = self.layer.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            let started = Instant::now();
            let result = match tokio::time::timeout(layer.timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(TransportErrorKind::custom_str(&format!("{method}: no answer in {:?}", layer.timeout))),
            };
            let labels = [layer.chain.as_str(), method.as_str()];
            layer.seconds.with_label_values(&labels).observe(started.elapsed().as_secs_f64());
            // An error answer is as much a failed call as a dropped connection.
            let ok = result.as_ref().is_ok_and(|response| !response.is_error());
            let outcome = if ok { "ok" } else { "error" };
            layer.requests.with_label_values(&[layer.chain.as_str(), method.as_str(), outcome]).inc();
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use alloy::{
        providers::{Provider, ProviderBuilder},
        rpc::client::ClientBuilder,
    };

    use super::*;

    /// A node that takes the connection and never answers: the call fails at the
    /// layer's timeout, and is counted as an error of its method.
    #[tokio::test]
    async fn a_node_that_never_answers_times_out_and_is_counted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: url::Url = format!("http://{}", listener.local_addr().unwrap()).parse().unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let metrics = Metrics::new();
        let client =
            ClientBuilder::default().layer(RpcLayer::new(&metrics, "alpha", Duration::from_millis(300))).http(url);
        let provider = ProviderBuilder::new().connect_client(client).erased();
        let error = provider.get_block_number().await.unwrap_err();
        assert!(error.to_string().contains("eth_blockNumber: no answer in 300ms"), "{error}");
        let errors = metrics.rpc_requests_total.with_label_values(&["alpha", "eth_blockNumber", "error"]).get();
        assert_eq!(errors, 1);
        assert_eq!(metrics.rpc_request_seconds.with_label_values(&["alpha", "eth_blockNumber"]).get_sample_count(), 1);
        held.abort();
    }
}
