//! What the tasks of one ferry process share: the configuration, the store, the
//! metrics, the NATS connection, the validator set and the readiness of each watched
//! chain. It sits below every role: the roles take a [`Context`]; the service builds it.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use ferry_light_client::ValidatorSet;

use crate::{
    Bus, Config, Store,
    endpoints::Endpoints,
    metrics::{Metrics, RouteMetrics},
};

/// What every task of a process shares.
pub struct Context {
    /// The configuration.
    pub config: Config,
    /// The store.
    pub store: Store,
    /// The metrics.
    pub metrics: Metrics,
    /// JetStream.
    pub bus: Bus,
    /// The validator set every Mailbox holds.
    pub validators: ValidatorSet,
    /// Per watched chain: whether its watcher has caught up with the chain's head.
    caught_up: Mutex<BTreeMap<String, bool>>,
    /// The metrics of every route between configured chains, bound once.
    routes: BTreeMap<(u32, u32), Arc<RouteMetrics>>,
    /// Each configured chain's RPC endpoints, shared by its watcher and its deliverer.
    endpoints: BTreeMap<String, Arc<Endpoints>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("bus", &self.bus).finish_non_exhaustive()
    }
}

impl Context {
    /// The context of a process running `config`, with fresh metrics and no chain
    /// caught up yet.
    pub fn new(config: Config, store: Store, bus: Bus, validators: ValidatorSet) -> Self {
        let metrics = Metrics::new();
        let chains: Vec<(u32, &str)> =
            config.chains.iter().map(|(name, c)| (c.chain_id as u32, name.as_str())).collect();
        let routes = chains
            .iter()
            .flat_map(|&(origin, from)| {
                let metrics = &metrics;
                chains
                    .iter()
                    .filter(move |(destination, _)| *destination != origin)
                    .map(move |&(destination, to)| ((origin, destination), Arc::new(metrics.route(from, to))))
            })
            .collect();
        let endpoints =
            config.chains.iter().map(|(name, chain)| (name.clone(), Endpoints::new(&metrics, name, chain))).collect();
        Self { config, store, metrics, bus, validators, caught_up: Mutex::new(BTreeMap::new()), routes, endpoints }
    }

    /// The RPC endpoints of the configured chain `name` (a chain not configured gets
    /// endpoints of its own, as `chain` says).
    pub(crate) fn endpoints(&self, name: &str, chain: &crate::ChainConfig) -> Arc<Endpoints> {
        self.endpoints.get(name).cloned().unwrap_or_else(|| Endpoints::new(&self.metrics, name, chain))
    }

    /// The metric label of the chain with EIP-155 id `chain_id`: its configured name, or the id
    /// itself for a chain this service does not know.
    pub fn chain_label(&self, chain_id: u64) -> String {
        self.config.chain_by_id(chain_id).map_or_else(|| chain_id.to_string(), |(name, _)| name.to_string())
    }

    /// The metrics of the route from chain id `origin` to `destination` (bound now for a
    /// route between chains this process does not know).
    pub(crate) fn route(&self, origin: u32, destination: u32) -> Arc<RouteMetrics> {
        match self.routes.get(&(origin, destination)) {
            Some(route) => route.clone(),
            None => {
                Arc::new(self.metrics.route(&self.chain_label(origin.into()), &self.chain_label(destination.into())))
            }
        }
    }

    pub(crate) fn set_caught_up(&self, chain: &str, caught_up: bool) {
        if let Ok(mut map) = self.caught_up.lock() {
            map.insert(chain.to_string(), caught_up);
        }
    }

    /// Whether the watcher of chain `name` has caught up with its head.
    pub fn caught_up(&self, name: &str) -> bool {
        self.caught_up.lock().is_ok_and(|map| map.get(name).copied().unwrap_or(false))
    }

    /// Why the process is not ready, or nothing when it is: every watcher caught up and
    /// NATS connected.
    pub fn not_ready(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if !self.bus.connected() {
            reasons.push("NATS is not connected".to_string());
        }
        if let Ok(map) = self.caught_up.lock() {
            reasons
                .extend(map.iter().filter(|(_, ok)| !**ok).map(|(chain, _)| format!("chain {chain} is catching up")));
        }
        reasons
    }
}
