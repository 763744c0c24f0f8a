//! What the tasks of one ferry process share: the configuration, the store, the
//! metrics, the NATS connection, the validator set and the readiness of each watched
//! chain. It sits below every role: the roles take a [`Context`]; the service builds it.

use std::{collections::BTreeMap, sync::Mutex};

use ferry_light_client::ValidatorSet;

use crate::{Bus, Config, Store, metrics::Metrics};

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
        Self { config, store, metrics: Metrics::new(), bus, validators, caught_up: Mutex::new(BTreeMap::new()) }
    }

    /// The metric label of the chain with EIP-155 id `chain_id`: its configured name, or the id
    /// itself for a chain this service does not know.
    pub fn chain_label(&self, chain_id: u64) -> String {
        self.config.chain_by_id(chain_id).map_or_else(|| chain_id.to_string(), |(name, _)| name.to_string())
    }

    pub(crate) fn set_caught_up(&self, chain: &str, caught_up: bool) {
        if let Ok(mut map) = self.caught_up.lock() {
            map.insert(chain.to_string(), caught_up);
        }
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
