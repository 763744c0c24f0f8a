//! `ferry run`: the roles of a ferry process started together, sharing one store, one
//! NATS connection, one metrics registry and one HTTP server.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use ferry_light_client::{ValidatorKey, ValidatorSet};
use tokio::task::JoinHandle;

use crate::cpu;
use tracing::{info, warn};

use crate::{
    ATTESTATION_STREAM, Bus, Config, Context, ServiceError, Store,
    bus::{collector_consumer, deliverer_consumer},
    deliver::Deliverer,
    lifecycle::Stage,
    store::now_ms,
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

/// A running ferry process.
#[derive(Debug)]
pub struct Service {
    context: Arc<Context>,
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
        if role != Role::Validator && !ferry_executors::recoveries::install() {
            warn!("another ecrecover provider was installed first: predictions recover every signature afresh");
        }
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
        let bus = Bus::connect(&config.nats).await?;
        let context = Arc::new(Context::new(config.clone(), store, bus, validators));

        let names: Vec<&str> = config.chains.keys().map(String::as_str).collect();
        context.metrics.prime(&names);
        context.metrics.prime_routes(&crate::guard::token_routes(&context));
        let (http, server) = crate::http::serve(context.clone(), config.http.listen).await?;
        let mut tasks = vec![server, tokio::spawn(gauges(context.clone(), role))];
        for (name, chain) in &config.chains {
            // Every second at most: lag is counted in blocks, and probes cost the nodes.
            let interval = Duration::from_millis(chain.poll_interval_ms.max(1000));
            tasks.push(tokio::spawn(context.endpoints(name, chain).run_prober(interval)));
        }
        if role != Role::Relayer {
            let signers = Arc::new(signers);
            for (name, chain) in &config.chains {
                context.set_caught_up(name, false);
                let watcher = Watcher::new(context.clone(), name.clone(), chain.clone(), signers.clone());
                tasks.push(tokio::spawn(cpu::metered(cpu::Stage::Watch, watcher.run())));
            }
            if !signers.is_empty() {
                tasks.push(tokio::spawn(crate::guard::run(context.clone(), signers.clone())));
            }
        }
        if let Some(key) = relayer_key {
            tasks.push(tokio::spawn(cpu::metered(cpu::Stage::Collect, crate::collector::run(context.clone()))));
            for (name, chain) in &config.chains {
                let deliverer = Deliverer::new(context.clone(), name.clone(), chain.clone(), &key)
                    .map_err(|e| ServiceError::Config(e.to_string()))?;
                tasks.push(tokio::spawn(cpu::metered(cpu::Stage::Submit, deliverer.run())));
            }
        }
        info!(?role, %http, chains = config.chains.len(), "ferry running");
        Ok(Self { context, tasks, http })
    }

    /// Where the HTTP server listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// What the process's tasks share (store, metrics, bus), for tests and embedding.
    pub fn context(&self) -> &Arc<Context> {
        &self.context
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
        // A connection the HTTP server was serving (a scraper's keep-alive) holds the
        // context, and with it the store file, until its task sees the peer go: wait for
        // that, a few seconds at most.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.context) > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        info!("ferry stopped");
    }
}

/// Keeps the pending gauges in step with the store and the NATS consumers.
async fn gauges(context: Arc<Context>, role: Role) {
    let mut consumers = Vec::new();
    if role != Role::Validator {
        consumers.push((ATTESTATION_STREAM.to_string(), collector_consumer(&context.config.relayer.name)));
        for chain in context.config.chains.values() {
            consumers.push((context.bus.stream().to_string(), deliverer_consumer(chain.chain_id)));
        }
    }
    loop {
        pending_gauges(&context);
        ecrecover_counters(&context);
        for (stream, consumer) in &consumers {
            // A consumer is created when its task first connects: until then there is no backlog.
            if let Ok((pending, ack_pending)) = context.bus.backlog(stream, consumer).await {
                let labels = [stream.as_str(), consumer.as_str()];
                context.metrics.nats_consumer_pending.with_label_values(&labels).set(pending as i64);
                context.metrics.nats_consumer_ack_pending.with_label_values(&labels).set(ack_pending as i64);
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Brings `ferry_executor_ecrecover_total` up to the memo's own counters.
fn ecrecover_counters(context: &Context) {
    let (memo, curve) = ferry_executors::recoveries::stats();
    for (source, total) in [("memo", memo), ("curve", curve)] {
        let counter = context.metrics.executor_ecrecover_total.with_label_values(&[source]);
        counter.inc_by(total.saturating_sub(counter.get()));
    }
}

fn pending_gauges(context: &Context) {
    let pending = match context.store.pending() {
        Ok(pending) => pending,
        Err(error) => return warn!(%error, "reading the pending messages failed"),
    };
    let now = now_ms() as f64 / 1000.0;
    // Every (destination, stage) pair gets a series, zero included, so that dashboards and
    // alerts see the gauge fall back to nothing pending.
    for (name, chain) in &context.config.chains {
        let destination = chain.chain_id as u32;
        for stage in Stage::ALL.into_iter().filter(|s| !s.is_final()) {
            let n = pending.counts.get(&(destination, stage)).copied().unwrap_or(0);
            context.metrics.messages_pending.with_label_values(&[name.as_str(), stage.as_str()]).set(n as i64);
        }
        let age = pending.oldest.get(&destination).map_or(0.0, |&ts| (now - ts as f64).max(0.0));
        context.metrics.messages_oldest_pending_seconds.with_label_values(&[name.as_str()]).set(age);
    }
}
