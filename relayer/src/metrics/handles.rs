//! Metrics bound once to a component's labels (reth's per-component metric structs are
//! the model): a destination's deliverer, a chain's watcher and a route (origin,
//! destination) each take their series when they start, so that event sites only
//! count, and the labels of a chain or a route are computed in one place.

use alloy::primitives::Address;
use ferry_executors::ExecutionMode;
use prometheus::{Counter, Gauge, Histogram, IntCounter, IntCounterVec, IntGauge};

use super::Metrics;

/// A value for each execution mode.
pub(crate) struct ByMode<T> {
    parallel: T,
    sequential: T,
    split: T,
}

impl<T> ByMode<T> {
    fn new(mut f: impl FnMut(&str) -> T) -> Self {
        Self {
            parallel: f(ExecutionMode::Parallel.as_str()),
            sequential: f(ExecutionMode::Sequential.as_str()),
            split: f(ExecutionMode::Split.as_str()),
        }
    }

    /// The value of `mode`.
    pub(crate) fn get(&self, mode: ExecutionMode) -> &T {
        match mode {
            ExecutionMode::Parallel => &self.parallel,
            ExecutionMode::Sequential => &self.sequential,
            ExecutionMode::Split => &self.split,
        }
    }
}

/// What a destination's deliverer counts, bound to the chain's label.
pub(crate) struct DeliveryMetrics {
    /// `ferry_executor_batches_total{chain, mode}`.
    pub batches: ByMode<IntCounter>,
    /// `ferry_executor_batch_seconds{chain, mode}`.
    pub batch_seconds: ByMode<Histogram>,
    /// `ferry_executor_transactions_total{chain}`.
    pub transactions: IntCounter,
    /// `ferry_executor_reexecutions_total{chain}`.
    pub reexecutions: IntCounter,
    /// `ferry_executor_state_reads_total{chain, source="cache"}`.
    pub state_reads_cache: IntCounter,
    /// `ferry_executor_state_reads_total{chain, source="rpc"}`.
    pub state_reads_rpc: IntCounter,
    /// `ferry_executor_sequential_check_seconds{chain}`.
    pub sequential_check_seconds: Histogram,
    /// `ferry_executor_checked_parallel_seconds{chain}`.
    pub checked_parallel_seconds: Histogram,
    /// `ferry_validation_mismatches_total{chain, kind="sequential"}`.
    pub sequential_mismatches: IntCounter,
    /// `ferry_validation_mismatches_total{chain, kind="receipt"}`.
    pub receipt_mismatches: IntCounter,
    /// `ferry_submitter_transactions_total{chain, outcome}` by outcome.
    pub succeeded: IntCounter,
    /// Likewise, `outcome="reverted"`.
    pub reverted: IntCounter,
    /// Likewise, `outcome="replaced"`.
    pub replaced: IntCounter,
    /// Likewise, `outcome="reorged"`.
    pub reorged: IntCounter,
    /// Likewise, `outcome="superseded"`: given up, its nonce taken by another transaction.
    pub superseded: IntCounter,
    /// Likewise, `outcome="dropped"`: the node no longer had it; sent again as it was.
    pub dropped: IntCounter,
    /// `ferry_submitter_batch_size{chain}`.
    pub batch_size: Histogram,
    /// `ferry_submitter_wallet_balance_wei{chain}`.
    pub wallet_balance_wei: Gauge,
    /// `ferry_submitter_fees_over_cap{chain}`.
    pub fees_over_cap: IntGauge,
    /// `ferry_nats_redeliveries_total{destination}`.
    pub redeliveries: IntCounter,
}

/// What a chain's watcher counts, bound to the chain's label.
pub(crate) struct WatcherMetrics {
    /// `ferry_chain_head_block{chain}`.
    pub head: IntGauge,
    /// `ferry_chain_final_block{chain}`.
    pub finalized: IntGauge,
    /// `ferry_light_client_headers_verified_total{chain}`.
    pub headers_verified: IntCounter,
    rejected: IntCounterVec,
    /// `ferry_light_client_reorgs_total{chain}`.
    pub reorgs: IntCounter,
    /// `ferry_light_client_halted{chain}`.
    pub halted: IntGauge,
    chain: String,
}

impl WatcherMetrics {
    /// Counts a header the light client refused, for `reason`.
    pub(crate) fn rejected(&self, reason: &str) {
        self.rejected.with_label_values(&[self.chain.as_str(), reason]).inc();
    }
}

/// What is counted per route, bound to its origin's and destination's labels.
pub(crate) struct RouteMetrics {
    /// `ferry_messages_observed_total{origin, destination}`.
    pub observed: IntCounter,
    /// `ferry_messages_delivered_total{origin, destination}`.
    pub delivered: IntCounter,
    /// `ferry_message_delivery_seconds{origin, destination}`.
    pub delivery_seconds: Histogram,
    /// `ferry_messages_rate_limited_total{origin, destination}`.
    pub rate_limited: IntCounter,
    /// `ferry_relayer_fees_paid_wei_total{origin, destination}`.
    pub fees_paid_wei: Counter,
    /// `ferry_relayer_gas_spent_wei_total{origin, destination}`.
    pub gas_spent_wei: Counter,
    parked: IntCounterVec,
    labels: [String; 2],
}

impl RouteMetrics {
    /// Counts a message parked for `reason`.
    pub(crate) fn parked(&self, reason: &str) {
        let [origin, destination] = &self.labels;
        self.parked.with_label_values(&[origin.as_str(), destination.as_str(), reason]).inc();
    }
}

impl Metrics {
    /// The deliverer metrics of the chain labelled `chain`.
    pub(crate) fn delivery(&self, chain: &str) -> DeliveryMetrics {
        let one = [chain];
        let submitted = |outcome| self.submitter_transactions_total.with_label_values(&[chain, outcome]);
        DeliveryMetrics {
            batches: ByMode::new(|mode| self.executor_batches_total.with_label_values(&[chain, mode])),
            batch_seconds: ByMode::new(|mode| self.executor_batch_seconds.with_label_values(&[chain, mode])),
            transactions: self.executor_transactions_total.with_label_values(&one),
            reexecutions: self.executor_reexecutions_total.with_label_values(&one),
            state_reads_cache: self.executor_state_reads_total.with_label_values(&[chain, "cache"]),
            state_reads_rpc: self.executor_state_reads_total.with_label_values(&[chain, "rpc"]),
            sequential_check_seconds: self.executor_sequential_check_seconds.with_label_values(&one),
            checked_parallel_seconds: self.executor_checked_parallel_seconds.with_label_values(&one),
            sequential_mismatches: self.validation_mismatches_total.with_label_values(&[chain, "sequential"]),
            receipt_mismatches: self.validation_mismatches_total.with_label_values(&[chain, "receipt"]),
            succeeded: submitted("success"),
            reverted: submitted("reverted"),
            replaced: submitted("replaced"),
            reorged: submitted("reorged"),
            superseded: submitted("superseded"),
            dropped: submitted("dropped"),
            batch_size: self.submitter_batch_size.with_label_values(&one),
            wallet_balance_wei: self.submitter_wallet_balance_wei.with_label_values(&one),
            fees_over_cap: self.submitter_fees_over_cap.with_label_values(&one),
            redeliveries: self.nats_redeliveries_total.with_label_values(&one),
        }
    }

    /// The watcher metrics of the chain labelled `chain`, signing with `signers` (whose
    /// `ferry_attestations_signed_total` series start at zero; `watcher::sign` counts).
    pub(crate) fn watcher(&self, chain: &str, signers: &[Address]) -> WatcherMetrics {
        let one = [chain];
        for signer in signers {
            self.attestations_signed_total.with_label_values(&[&signer.to_string(), chain]);
        }
        WatcherMetrics {
            head: self.chain_head_block.with_label_values(&one),
            finalized: self.chain_final_block.with_label_values(&one),
            headers_verified: self.light_client_headers_verified_total.with_label_values(&one),
            rejected: self.light_client_headers_rejected_total.clone(),
            reorgs: self.light_client_reorgs_total.with_label_values(&one),
            halted: self.light_client_halted.with_label_values(&one),
            chain: chain.to_string(),
        }
    }

    /// The metrics of the route from the chain labelled `origin` to `destination`.
    pub(crate) fn route(&self, origin: &str, destination: &str) -> RouteMetrics {
        let two = [origin, destination];
        RouteMetrics {
            observed: self.messages_observed_total.with_label_values(&two),
            delivered: self.messages_delivered_total.with_label_values(&two),
            delivery_seconds: self.message_delivery_seconds.with_label_values(&two),
            rate_limited: self.messages_rate_limited_total.with_label_values(&two),
            fees_paid_wei: self.relayer_fees_paid_wei_total.with_label_values(&two),
            gas_spent_wei: self.relayer_gas_spent_wei_total.with_label_values(&two),
            parked: self.messages_parked_total.clone(),
            labels: [origin.to_string(), destination.to_string()],
        }
    }
}
