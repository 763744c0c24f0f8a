//! The relayer's Prometheus metrics: one [`Metrics`] value owns a private registry with every
//! `ferry_*` metric registered in it, and [`Metrics::render`] produces the text exposition served
//! at `/metrics` (with content type [`CONTENT_TYPE`]).

mod handles;

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub(crate) use handles::{DeliveryMetrics, RouteMetrics, WatcherMetrics};

/// The HTTP `Content-Type` of [`Metrics::render`]'s output: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets of `ferry_message_delivery_seconds`, in seconds.
const DELIVERY_BUCKETS: &[f64] = &[0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 55.0, 89.0, 144.0, 300.0, 600.0];

/// Buckets of `ferry_rpc_request_seconds`, in seconds.
const RPC_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Buckets of `ferry_rpc_batch_size`, in calls.
const RPC_BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0];

/// Buckets of `ferry_submitter_batch_size`, in messages.
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];

/// Every metric of the ferry relayer, registered in one private registry.
///
/// Each field is the metric named `ferry_<field>`; the label names are listed in each field's
/// documentation, in the order `with_label_values` expects them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,

    /// `ferry_chain_head_block{chain}`: the latest block number seen on a chain.
    pub chain_head_block: IntGaugeVec,
    /// `ferry_chain_final_block{chain}`: the latest finalised block number of a chain.
    pub chain_final_block: IntGaugeVec,

    /// `ferry_light_client_headers_verified_total{chain}`: headers the light client accepted.
    pub light_client_headers_verified_total: IntCounterVec,
    /// `ferry_light_client_headers_rejected_total{chain, reason}`: headers the light client rejected.
    pub light_client_headers_rejected_total: IntCounterVec,
    /// `ferry_light_client_reorgs_total{chain}`: reorganisations the light client followed.
    pub light_client_reorgs_total: IntCounterVec,
    /// `ferry_light_client_halted{chain}`: 1 while the light client of a chain is halted, else 0.
    pub light_client_halted: IntGaugeVec,

    /// `ferry_messages_observed_total{origin, destination}`: messages seen emitted on an origin chain.
    pub messages_observed_total: IntCounterVec,
    /// `ferry_messages_delivered_total{origin, destination}`: messages delivered to their destination.
    pub messages_delivered_total: IntCounterVec,
    /// `ferry_messages_parked_total{origin, destination, reason}`: messages set aside undelivered.
    pub messages_parked_total: IntCounterVec,
    /// `ferry_messages_rate_limited_total{origin, destination}`: deliveries the recipient
    /// bridge's inbound rate limit refused for now (each waits for the bucket to refill).
    pub messages_rate_limited_total: IntCounterVec,
    /// `ferry_relayer_fees_paid_wei_total{origin, destination}`: what the messages this
    /// relayer delivered paid at their origin's GasPaymaster, in the destination's native
    /// token (wei, converted at the paymaster's exchange rate).
    pub relayer_fees_paid_wei_total: CounterVec,
    /// `ferry_relayer_gas_spent_wei_total{origin, destination}`: what this relayer's
    /// delivery transactions cost on the destination (gas used times its price, shared
    /// among a transaction's messages).
    pub relayer_gas_spent_wei_total: CounterVec,
    /// `ferry_messages_pending{destination, stage}`: messages currently waiting at a pipeline stage.
    pub messages_pending: IntGaugeVec,
    /// `ferry_messages_oldest_pending_seconds{destination}`: age of the oldest message neither
    /// delivered nor parked, from its origin block's timestamp (0 when none is pending).
    pub messages_oldest_pending_seconds: GaugeVec,
    /// `ferry_message_delivery_seconds{origin, destination}`: time from the origin block's
    /// timestamp to the confirmation of `delivered(id)` on the destination.
    pub message_delivery_seconds: HistogramVec,

    /// `ferry_attestations_signed_total{validator, origin}`: attestations signed by a validator.
    pub attestations_signed_total: IntCounterVec,
    /// `ferry_collector_signatures_checked_total{source}`: validator signatures the
    /// collector checked, by how it found the signer (`memo`: signed by this process's own
    /// validators or recovered here before; `curve`: recovered).
    pub collector_signatures_checked_total: IntCounterVec,

    /// `ferry_executor_batches_total{chain, mode}`: batches executed (`mode`: sequential or parallel).
    pub executor_batches_total: IntCounterVec,
    /// `ferry_executor_transactions_total{chain}`: transactions executed.
    pub executor_transactions_total: IntCounterVec,
    /// `ferry_executor_reexecutions_total{chain}`: transactions re-executed after a conflict.
    pub executor_reexecutions_total: IntCounterVec,
    /// `ferry_executor_batch_seconds{chain, mode}`: time to execute a batch.
    pub executor_batch_seconds: HistogramVec,
    /// `ferry_executor_state_reads_total{chain, source}`: state reads of the executor on a
    /// destination's forked state, by how they were answered (`cache`: in memory, fetched
    /// by a batched prefetch or an earlier read; `rpc`: a round trip of its own).
    pub executor_state_reads_total: IntCounterVec,
    /// `ferry_executor_ecrecover_total{source}`: the EVM's `ecrecover` calls in predictions,
    /// by how they were answered (`memo`: a signature the collector recovered already;
    /// `curve`: recovered afresh). Process-wide, as revm's crypto provider is.
    pub executor_ecrecover_total: IntCounterVec,
    /// `ferry_executor_sequential_check_seconds{chain}`: time of the sampled sequential re-run of a
    /// parallel batch (compare with `ferry_executor_batch_seconds{mode="parallel"}` for the speedup).
    pub executor_sequential_check_seconds: HistogramVec,
    /// `ferry_executor_checked_parallel_seconds{chain}`: parallel time of the batches that were
    /// re-run sequentially, so that the two sums give the speedup on the same batches.
    pub executor_checked_parallel_seconds: HistogramVec,

    /// `ferry_validation_mismatches_total{chain, kind}`: disagreements found while validating.
    pub validation_mismatches_total: IntCounterVec,

    /// `ferry_submitter_transactions_total{chain, outcome}`: transactions sent by the submitter.
    pub submitter_transactions_total: IntCounterVec,
    /// `ferry_submitter_fees_over_cap{chain}`: 1 while the chain's fees are over
    /// `max_fee_per_gas_gwei` and deliveries to it wait.
    pub submitter_fees_over_cap: IntGaugeVec,
    /// `ferry_submitter_wallet_balance_wei{chain}`: the submitter wallet's balance (a float: wei
    /// amounts can exceed `i64`).
    pub submitter_wallet_balance_wei: GaugeVec,
    /// `ferry_submitter_batch_size{chain}`: messages per `processBatch` transaction.
    pub submitter_batch_size: HistogramVec,

    /// `ferry_nats_published_total{stream}`: messages published to a NATS stream.
    pub nats_published_total: IntCounterVec,
    /// `ferry_nats_redeliveries_total{destination}`: NATS messages received again after a redelivery.
    pub nats_redeliveries_total: IntCounterVec,
    /// `ferry_nats_consumer_pending{stream, consumer}`: stream messages not yet delivered to one of
    /// this relayer's consumers (its backlog).
    pub nats_consumer_pending: IntGaugeVec,
    /// `ferry_nats_consumer_ack_pending{stream, consumer}`: messages delivered to a consumer and not
    /// yet acknowledged.
    pub nats_consumer_ack_pending: IntGaugeVec,

    /// `ferry_bad_input_total{source, reason}`: malformed or invalid inputs dropped.
    pub bad_input_total: IntCounterVec,

    /// `ferry_accountant_locked{route}`: what the origin's bridge locked or burned for the
    /// route `origin->destination`, in token base units, from final events (a float: the
    /// amounts exceed `i64`).
    pub accountant_locked: GaugeVec,
    /// `ferry_accountant_released{route}`: what the destination's bridge released or minted
    /// from the route's messages, in token base units, from final events.
    pub accountant_released: GaugeVec,
    /// `ferry_accountant_unbacked{route}`: released beyond locked on the route (0 when the
    /// books balance): tokens the route's destination holds that nothing locked.
    pub accountant_unbacked: GaugeVec,
    /// `ferry_accountant_refusals_total{route}`: transfers this process's validators refused
    /// to sign because they would take released past locked.
    pub accountant_refusals_total: IntCounterVec,
    /// `ferry_governor_held{route, reason}`: transfers this process's validators hold
    /// unsigned (`reason`: delay, the governor's delay for large transfers; accountant).
    pub governor_held: IntGaugeVec,

    /// `ferry_rpc_requests_total{chain, method, outcome}`: RPC requests made (`outcome`: ok or error).
    pub rpc_requests_total: IntCounterVec,
    /// `ferry_rpc_request_seconds{chain, method}`: RPC request durations.
    pub rpc_request_seconds: HistogramVec,
    /// `ferry_rpc_batch_size{chain}`: calls per batched JSON-RPC request (method `batch`).
    pub rpc_batch_size: HistogramVec,
    /// `ferry_rpc_endpoint_up{chain, endpoint}`: 1 while the endpoint answers and keeps up
    /// with the best one's head, 0 while it is on probation or lagging.
    pub rpc_endpoint_up: IntGaugeVec,
    /// `ferry_rpc_endpoint_head_lag_blocks{chain, endpoint}`: blocks the endpoint's head
    /// trails the best endpoint's, at the last probe.
    pub rpc_endpoint_head_lag_blocks: IntGaugeVec,

    /// `ferry_build_info{version}`: always 1, labelled with the relayer's version.
    pub build_info: IntGaugeVec,
}

impl Metrics {
    /// Creates every metric and registers it in a fresh registry; sets `ferry_build_info` to 1.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        // exponential_buckets only fails on a non-positive start or count, or a factor <= 1.
        let batch_buckets = prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid metric definition");

        let metrics = Self {
            chain_head_block: int_gauge(
                r,
                "ferry_chain_head_block",
                "Latest block number seen on the chain.",
                &["chain"],
            ),
            chain_final_block: int_gauge(
                r,
                "ferry_chain_final_block",
                "Latest finalised block number of the chain.",
                &["chain"],
            ),
            light_client_headers_verified_total: int_counter(
                r,
                "ferry_light_client_headers_verified_total",
                "Headers the light client verified and accepted.",
                &["chain"],
            ),
            light_client_headers_rejected_total: int_counter(
                r,
                "ferry_light_client_headers_rejected_total",
                "Headers the light client rejected, by reason.",
                &["chain", "reason"],
            ),
            light_client_reorgs_total: int_counter(
                r,
                "ferry_light_client_reorgs_total",
                "Chain reorganisations the light client followed.",
                &["chain"],
            ),
            light_client_halted: int_gauge(
                r,
                "ferry_light_client_halted",
                "Whether the light client of the chain is halted (1) or running (0).",
                &["chain"],
            ),
            messages_observed_total: int_counter(
                r,
                "ferry_messages_observed_total",
                "Cross-chain messages observed on the origin chain.",
                &["origin", "destination"],
            ),
            messages_delivered_total: int_counter(
                r,
                "ferry_messages_delivered_total",
                "Cross-chain messages delivered to the destination chain.",
                &["origin", "destination"],
            ),
            messages_rate_limited_total: int_counter(
                r,
                "ferry_messages_rate_limited_total",
                "Deliveries the recipient bridge's inbound rate limit refused for now; each waits for the bucket to refill.",
                &["origin", "destination"],
            ),
            relayer_fees_paid_wei_total: counter(
                r,
                "ferry_relayer_fees_paid_wei_total",
                "Delivery fees paid at the origin's GasPaymaster for messages this relayer delivered, in the destination's native token (wei).",
                &["origin", "destination"],
            ),
            relayer_gas_spent_wei_total: counter(
                r,
                "ferry_relayer_gas_spent_wei_total",
                "Gas this relayer's delivery transactions cost on the destination (wei), shared among their messages.",
                &["origin", "destination"],
            ),
            messages_parked_total: int_counter(
                r,
                "ferry_messages_parked_total",
                "Cross-chain messages parked undelivered, by reason.",
                &["origin", "destination", "reason"],
            ),
            messages_pending: int_gauge(
                r,
                "ferry_messages_pending",
                "Cross-chain messages currently waiting at a pipeline stage.",
                &["destination", "stage"],
            ),
            messages_oldest_pending_seconds: gauge(
                r,
                "ferry_messages_oldest_pending_seconds",
                "Age of the oldest message neither delivered nor parked, from its origin block's timestamp, in seconds.",
                &["destination"],
            ),
            message_delivery_seconds: histogram(
                r,
                "ferry_message_delivery_seconds",
                "Time from a message's origin block timestamp to its confirmed delivery, in seconds.",
                &["origin", "destination"],
                DELIVERY_BUCKETS.to_vec(),
            ),
            attestations_signed_total: int_counter(
                r,
                "ferry_attestations_signed_total",
                "Attestations signed by the validator for messages from the origin chain.",
                &["validator", "origin"],
            ),
            collector_signatures_checked_total: int_counter(
                r,
                "ferry_collector_signatures_checked_total",
                "Validator signatures the collector checked, by how the signer was found (memo or curve).",
                &["source"],
            ),
            executor_batches_total: int_counter(
                r,
                "ferry_executor_batches_total",
                "Batches run by the executor, by execution mode.",
                &["chain", "mode"],
            ),
            executor_transactions_total: int_counter(
                r,
                "ferry_executor_transactions_total",
                "Transactions executed by the executor.",
                &["chain"],
            ),
            executor_reexecutions_total: int_counter(
                r,
                "ferry_executor_reexecutions_total",
                "Transactions the parallel executor re-executed after a conflict.",
                &["chain"],
            ),
            executor_batch_seconds: histogram(
                r,
                "ferry_executor_batch_seconds",
                "Time to execute a batch, in seconds, by execution mode.",
                &["chain", "mode"],
                batch_buckets.clone(),
            ),
            executor_state_reads_total: int_counter(
                r,
                "ferry_executor_state_reads_total",
                "State reads of the executor on a destination's forked state, by source (cache or rpc).",
                &["chain", "source"],
            ),
            executor_ecrecover_total: int_counter(
                r,
                "ferry_executor_ecrecover_total",
                "The EVM's ecrecover calls in predictions, by source (memo or curve).",
                &["source"],
            ),
            executor_sequential_check_seconds: histogram(
                r,
                "ferry_executor_sequential_check_seconds",
                "Time of the sampled sequential re-run of a parallel batch, in seconds.",
                &["chain"],
                batch_buckets.clone(),
            ),
            executor_checked_parallel_seconds: histogram(
                r,
                "ferry_executor_checked_parallel_seconds",
                "Parallel time of the batches re-run sequentially (the speedup's denominator), in seconds.",
                &["chain"],
                batch_buckets,
            ),
            validation_mismatches_total: int_counter(
                r,
                "ferry_validation_mismatches_total",
                "Mismatches found while validating execution results, by kind.",
                &["chain", "kind"],
            ),
            submitter_transactions_total: int_counter(
                r,
                "ferry_submitter_transactions_total",
                "Transactions sent by the submitter, by outcome.",
                &["chain", "outcome"],
            ),
            submitter_fees_over_cap: int_gauge(
                r,
                "ferry_submitter_fees_over_cap",
                "1 while the chain's fees are over max_fee_per_gas_gwei and deliveries to it wait.",
                &["chain"],
            ),
            submitter_wallet_balance_wei: gauge(
                r,
                "ferry_submitter_wallet_balance_wei",
                "Balance of the submitter's wallet on the chain, in wei.",
                &["chain"],
            ),
            submitter_batch_size: histogram(
                r,
                "ferry_submitter_batch_size",
                "Messages carried per processBatch transaction.",
                &["chain"],
                BATCH_SIZE_BUCKETS.to_vec(),
            ),
            nats_published_total: int_counter(
                r,
                "ferry_nats_published_total",
                "Messages published to the NATS stream.",
                &["stream"],
            ),
            nats_redeliveries_total: int_counter(
                r,
                "ferry_nats_redeliveries_total",
                "NATS messages received again after a redelivery.",
                &["destination"],
            ),
            nats_consumer_pending: int_gauge(
                r,
                "ferry_nats_consumer_pending",
                "Stream messages not yet delivered to this relayer's consumer.",
                &["stream", "consumer"],
            ),
            nats_consumer_ack_pending: int_gauge(
                r,
                "ferry_nats_consumer_ack_pending",
                "Messages delivered to this relayer's consumer and not yet acknowledged.",
                &["stream", "consumer"],
            ),
            bad_input_total: int_counter(
                r,
                "ferry_bad_input_total",
                "Malformed or invalid inputs dropped, by source and reason.",
                &["source", "reason"],
            ),
            accountant_locked: gauge(
                r,
                "ferry_accountant_locked",
                "Tokens (base units) the route's origin bridge locked or burned, from final events.",
                &["route"],
            ),
            accountant_released: gauge(
                r,
                "ferry_accountant_released",
                "Tokens (base units) the route's destination bridge released or minted, from final events.",
                &["route"],
            ),
            accountant_unbacked: gauge(
                r,
                "ferry_accountant_unbacked",
                "Tokens (base units) released beyond locked on the route; 0 while its books balance.",
                &["route"],
            ),
            accountant_refusals_total: int_counter(
                r,
                "ferry_accountant_refusals_total",
                "Transfers the validators refused to sign: released would exceed locked on the route.",
                &["route"],
            ),
            governor_held: int_gauge(
                r,
                "ferry_governor_held",
                "Transfers the validators hold unsigned, by reason (delay or accountant).",
                &["route", "reason"],
            ),
            rpc_requests_total: int_counter(
                r,
                "ferry_rpc_requests_total",
                "RPC requests made to a chain's node, by method and outcome.",
                &["chain", "method", "outcome"],
            ),
            rpc_request_seconds: histogram(
                r,
                "ferry_rpc_request_seconds",
                "Duration of RPC requests to a chain's node, in seconds.",
                &["chain", "method"],
                RPC_BUCKETS.to_vec(),
            ),
            rpc_endpoint_up: int_gauge(
                r,
                "ferry_rpc_endpoint_up",
                "1 while an RPC endpoint answers and keeps up with the best head, 0 on probation or lagging.",
                &["chain", "endpoint"],
            ),
            rpc_endpoint_head_lag_blocks: int_gauge(
                r,
                "ferry_rpc_endpoint_head_lag_blocks",
                "Blocks an RPC endpoint's head trails the best endpoint's, at the last probe.",
                &["chain", "endpoint"],
            ),
            rpc_batch_size: histogram(
                r,
                "ferry_rpc_batch_size",
                "Calls per batched JSON-RPC request to a chain's node.",
                &["chain"],
                RPC_BATCH_BUCKETS.to_vec(),
            ),
            build_info: int_gauge(
                r,
                "ferry_build_info",
                "Always 1; labelled with the version of the running relayer.",
                &["version"],
            ),
            registry,
        };
        metrics.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // CPU, memory and file descriptors of this process (Linux /proc), as process_*.
        let process = prometheus::process_collector::ProcessCollector::for_self();
        if let Err(error) = metrics.registry.register(Box::new(process)) {
            tracing::warn!(%error, "registering the process metrics failed");
        }
        // Where that CPU goes, by pipeline stage.
        match crate::cpu::StageCpuCollector::new() {
            Ok(stages) => {
                if let Err(error) = metrics.registry.register(Box::new(stages)) {
                    tracing::warn!(%error, "registering the stage CPU metrics failed");
                }
            }
            Err(error) => tracing::warn!(%error, "defining the stage CPU metrics failed"),
        }
        metrics
    }

    /// Creates the value-safety series of each token route (`origin->destination`) at
    /// zero, so that the accountant's alerts see a value before the first transfer.
    pub fn prime_routes(&self, routes: &[String]) {
        for route in routes {
            self.accountant_locked.with_label_values(&[route]);
            self.accountant_released.with_label_values(&[route]);
            self.accountant_unbacked.with_label_values(&[route]);
            self.accountant_refusals_total.with_label_values(&[route]);
            for reason in ["delay", "accountant"] {
                self.governor_held.with_label_values(&[route, reason]);
            }
        }
    }

    /// Creates the series of events that may never happen (mismatches, reorgs, halts,
    /// redeliveries, parallel batches and their sequential re-checks) at zero for the chains a
    /// service follows, so that alerts and dashboards see a value, not an absent series, on a
    /// healthy relayer.
    pub fn prime(&self, chains: &[&str]) {
        for &chain in chains {
            for kind in ["receipt", "sequential"] {
                self.validation_mismatches_total.with_label_values(&[chain, kind]);
            }
            self.light_client_reorgs_total.with_label_values(&[chain]);
            self.light_client_halted.with_label_values(&[chain]);
            self.nats_redeliveries_total.with_label_values(&[chain]);
            self.messages_oldest_pending_seconds.with_label_values(&[chain]);
            for mode in ["parallel", "sequential", "split"] {
                self.executor_batches_total.with_label_values(&[chain, mode]);
                self.executor_batch_seconds.with_label_values(&[chain, mode]);
            }
            self.executor_sequential_check_seconds.with_label_values(&[chain]);
            self.executor_checked_parallel_seconds.with_label_values(&[chain]);
            self.executor_reexecutions_total.with_label_values(&[chain]);
            for source in ["cache", "rpc"] {
                self.executor_state_reads_total.with_label_values(&[chain, source]);
            }
        }
    }

    /// Renders every metric in the Prometheus text exposition format (see [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&families, &mut buffer) {
            tracing::warn!(%error, "encoding the metrics failed");
        }
        String::from_utf8(buffer).unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
    }

    /// Counts one dropped bad input in `ferry_bad_input_total{source, reason}`.
    pub fn bad_input(&self, source: &str, reason: &str) {
        self.bad_input_total.with_label_values(&[source, reason]).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `metric` in `registry` and returns it; a registration error (a duplicate name, which
/// only a programming error can cause) is logged and the metric is still returned, unexported.
fn register<T: Clone + Collector + 'static>(registry: &Registry, metric: T) -> T {
    if let Err(error) = registry.register(Box::new(metric.clone())) {
        tracing::warn!(%error, "registering a metric failed");
    }
    metric
}

/// Creates and registers an integer counter vector (constant name, help and labels).
fn int_counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition"))
}

/// Creates and registers a float counter vector (constant name, help and labels): wei
/// overflow an integer counter within tens of ether.
fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> CounterVec {
    register(registry, CounterVec::new(Opts::new(name, help), labels).expect("valid metric definition"))
}

/// Creates and registers an integer gauge vector (constant name, help and labels).
fn int_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition"))
}

/// Creates and registers a float gauge vector (constant name, help and labels).
fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(registry, GaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition"))
}

/// Creates and registers a histogram vector with the given buckets (constant name, help, labels).
fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    register(registry, HistogramVec::new(opts, labels).expect("valid metric definition"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics() {
        let metrics = Metrics::new();
        metrics.bad_input("nats", "malformed");
        metrics.messages_delivered_total.with_label_values(&["1", "2"]).inc();
        metrics.message_delivery_seconds.with_label_values(&["1", "2"]).observe(3.0);

        let text = metrics.render();
        assert!(text.contains("# HELP ferry_messages_delivered_total "), "{text}");
        assert!(text.contains("# TYPE ferry_message_delivery_seconds histogram"), "{text}");
        assert!(text.contains("ferry_bad_input_total{reason=\"malformed\",source=\"nats\"} 1\n"), "{text}");
        assert!(text.contains("ferry_messages_delivered_total{destination=\"2\",origin=\"1\"} 1\n"), "{text}");
        assert!(text.contains(&format!("ferry_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION"))), "{text}");
    }
}
