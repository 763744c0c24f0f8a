//! `ferry run`: the roles of a ferry process started together, sharing one store, one
//! NATS connection, one metrics registry and one HTTP server.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use ferry_light_client::{ValidatorKey, ValidatorSet};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::{
    ATTESTATION_STREAM, Bus, Config, ServiceError, Store,
    bus::{collector_consumer, deliverer_consumer},
    deliver::Deliverer,
    metrics::Metrics,
    store::{Stage, now_ms},
    watcher::Watcher,
};

/// What a process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// Watch, validate and relay.
    #[default]
    All,
    /// Collect signatures and deliver (no watchers, no keys but the relayer's).
    Relayer,
    /// Watch chains and sign what they prove.
    Validator,
}

/// What every task of a process shares.
pub struct Shared {
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

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("bus", &self.bus).finish_non_exhaustive()
    }
}

impl Shared {
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

/// A running ferry process.
#[derive(Debug)]
pub struct Service {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    http: SocketAddr,
}

impl Service {
    /// Opens the store, connects to NATS and starts the role's tasks and the HTTP server.
    pub async fn start(config: Config, role: Role) -> Result<Self, ServiceError> {
        if let Some(problem) = config.check().into_iter().next() {
            return Err(ServiceError::Config(problem.to_string()));
        }
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| ServiceError::Config(format!("data_dir {}: {e}", config.data_dir.display())))?;
        let store = Store::open(&config.data_dir.join("ferry.redb"))?;
        let validators = ValidatorSet::new(config.validators.set.clone(), usize::from(config.validators.threshold))
            .map_err(|e| ServiceError::Config(format!("validators: {e}")))?;
        let signers = match role {
            Role::Relayer => vec![],
            _ => config
                .validator_keys()?
                .iter()
                .map(|k| ValidatorKey::from_bytes(k.expose()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ServiceError::Config(format!("validator key: {e}")))?,
        };
        let relayer_key = match role {
            Role::Validator => None,
            _ => Some(config.relayer_key()?.ok_or_else(|| ServiceError::Config("relayer.key: no relayer key".into()))?),
        };
        let ack_wait = Duration::from_secs(config.nats.ack_wait_secs.max(1));
        let bus = Bus::connect(&config.nats.url, &config.nats.stream, ack_wait).await?;
        let shared = Arc::new(Shared {
            config: config.clone(),
            store,
            metrics: Metrics::new(),
            bus,
            validators,
            caught_up: Mutex::new(BTreeMap::new()),
        });

        let names: Vec<&str> = config.chains.keys().map(String::as_str).collect();
        shared.metrics.prime(&names);
        let (http, server) = crate::http::serve(shared.clone(), config.http.listen).await?;
        let mut tasks = vec![server, tokio::spawn(gauges(shared.clone(), role))];
        if role != Role::Relayer {
            let signers = Arc::new(signers);
            for (name, chain) in &config.chains {
                shared.set_caught_up(name, false);
                let watcher = Watcher::new(shared.clone(), name.clone(), chain.clone(), signers.clone());
                tasks.push(tokio::spawn(watcher.run()));
            }
        }
        if let Some(key) = relayer_key {
            tasks.push(tokio::spawn(crate::collector::run(shared.clone())));
            for (name, chain) in &config.chains {
                let deliverer = Deliverer::new(shared.clone(), name.clone(), chain.clone(), &key)
                    .map_err(|e| ServiceError::Config(e.to_string()))?;
                tasks.push(tokio::spawn(deliverer.run()));
            }
        }
        info!(?role, %http, chains = config.chains.len(), "ferry running");
        Ok(Self { shared, tasks, http })
    }

    /// Where the HTTP server listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The shared state (store, metrics, bus), for tests and embedding.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops every task and waits until they are gone, so that the store file is free
    /// for the next process. Work in flight is abandoned the way a crash abandons it.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        info!("ferry stopped");
    }
}

/// Keeps the pending gauges in step with the store and the NATS consumers.
async fn gauges(shared: Arc<Shared>, role: Role) {
    let mut consumers = Vec::new();
    if role != Role::Validator {
        consumers.push((ATTESTATION_STREAM.to_string(), collector_consumer(&shared.config.relayer.name)));
        for chain in shared.config.chains.values() {
            consumers.push((shared.bus.stream().to_string(), deliverer_consumer(chain.chain_id)));
        }
    }
    loop {
        pending_gauges(&shared);
        for (stream, consumer) in &consumers {
            // A consumer is created when its task first connects: until then there is no backlog.
            if let Ok((pending, ack_pending)) = shared.bus.backlog(stream, consumer).await {
                let labels = [stream.as_str(), consumer.as_str()];
                shared.metrics.nats_consumer_pending.with_label_values(&labels).set(pending as i64);
                shared.metrics.nats_consumer_ack_pending.with_label_values(&labels).set(ack_pending as i64);
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn pending_gauges(shared: &Shared) {
    let pending = match shared.store.pending() {
        Ok(pending) => pending,
        Err(error) => return warn!(%error, "reading the pending messages failed"),
    };
    let now = now_ms() as f64 / 1000.0;
    // Every (destination, stage) pair gets a series, zero included, so that dashboards and
    // alerts see the gauge fall back to nothing pending.
    for (name, chain) in &shared.config.chains {
        let destination = chain.chain_id as u32;
        for stage in Stage::ALL.into_iter().filter(|s| !s.is_final()) {
            let n = pending.counts.get(&(destination, stage)).copied().unwrap_or(0);
            shared.metrics.messages_pending.with_label_values(&[name.as_str(), stage.as_str()]).set(n as i64);
        }
        let age = pending.oldest.get(&destination).map_or(0.0, |&ts| (now - ts as f64).max(0.0));
        shared.metrics.messages_oldest_pending_seconds.with_label_values(&[name.as_str()]).set(age);
    }
}
