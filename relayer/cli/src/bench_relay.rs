//! `ferry bench relay`: the whole pipeline on a fresh devnet, messages sent alpha -> beta
//! as fast as alpha accepts them, or at a steady rate.

use std::time::{Duration, Instant};

use std::collections::HashMap;

use alloy::{
    primitives::{Address, B256, U256},
    providers::Provider,
    rpc::types::Filter,
    sol_types::SolEvent,
};
use anyhow::Context;
use ferry_devnet::{Devnet, DevnetOptions};
use ferry_messages::contracts::{BridgedToken, Mailbox, TokenBridge};
use ferry_relayer::{Role, Service, Stage, cpu};
use serde::Serialize;

/// What `ferry bench relay --json` prints.
#[derive(Debug, Serialize)]
pub struct RelayReport {
    /// Messages sent and delivered.
    pub messages: usize,
    /// What the relay worked for: from the first message turning final on the origin (the
    /// watcher observing it) to the last delivery.
    pub seconds: f64,
    /// Delivered per second over that span.
    pub messages_per_s: f64,
    /// From the first send to the last delivery (the origin's confirmations included).
    pub end_to_end_seconds: f64,
    /// Messages per second offered (sent to the origin), measured.
    pub offered_per_s: f64,
    /// Block time of both chains, in seconds (the latency target is counted in these).
    pub block_time_s: f64,
    /// From the origin block's finality (the watcher observing it) to delivery.
    pub latency_p50_s: f64,
    /// The same, 99th percentile.
    pub latency_p99_s: f64,
    /// Delivery transactions per message.
    pub tx_per_message: f64,
    /// Time of the sampled sequential re-runs over the time the same batches took in
    /// parallel (the production sampling rate, 1 in 20: absent when no parallel batch was
    /// sampled).
    pub executor_speedup: Option<f64>,
    /// Batches the destination's pool executed (each a round's `processBatch`
    /// transactions, predicted), and of them those it ran in parallel: the bound on
    /// `executor_speedup`, which has nothing to sample when none did.
    pub executor_batches: u64,
    /// Of `executor_batches`, those run in parallel.
    pub executor_parallel_batches: u64,
    /// Transactions per executed batch.
    pub executor_txs_per_batch: f64,
    /// Peak resident memory of this process (the relayer and validators).
    pub peak_rss_bytes: u64,
    /// CPU of this process (every role, three validators) from the first send to the
    /// last delivery, per message delivered, the load generator's own share left out.
    pub cpu_seconds_per_message: f64,
    /// The load generator's CPU per message (its own thread: sending the transfers and
    /// reading back their ids), left out of `cpu_seconds_per_message`.
    pub generator_cpu_seconds_per_message: f64,
    /// `cpu_seconds_per_message` by pipeline stage (`ferry_stage_cpu_seconds_total`);
    /// `other` is what no stage claims (the runtime, the NATS and HTTP clients' own tasks).
    pub cpu_stages_per_message: std::collections::BTreeMap<String, f64>,
    /// What no relayer can skip for a message, measured in this process after the relay
    /// (the bound `cpu_seconds_per_message` is held against).
    pub floor: Floor,
    /// `cpu_seconds_per_message` over `floor.seconds_per_message`.
    pub cpu_over_floor: f64,
}

/// The CPU floor of one message: three validators' signatures over its attestation and
/// one execution of its delivery on plain revm, which recovers the quorum's two
/// signatures itself (as the collector does, once). Measured on the same machine in the
/// same run as the relay, just before and just after it, so the two compare whatever the
/// host's speed that minute.
#[derive(Debug, Serialize)]
pub struct Floor {
    /// Three signatures.
    pub sign_seconds: f64,
    /// One Mailbox delivery (`process` with a two-signature quorum) on plain revm.
    pub delivery_seconds: f64,
    /// Their sum.
    pub seconds_per_message: f64,
}

impl Floor {
    /// Signatures and deliveries timed per pass.
    const SAMPLE: usize = 200;
    /// Passes before the relay and again after it: the median of all counts, so that a
    /// host that slows down or speeds up during the run moves the floor with the relay.
    const PASSES: usize = 9;

    /// Times [`Self::PASSES`] passes of each part of the floor on the calling thread.
    pub fn measure() -> anyhow::Result<FloorSamples> {
        let key = ferry_light_client::ValidatorKey::from_bytes(&B256::repeat_byte(0x42))?;
        let attestations: Vec<ferry_messages::Attestation> = (0..Self::SAMPLE as u64)
            .map(|i| ferry_messages::Attestation {
                origin: 31337,
                origin_mailbox: B256::repeat_byte(0xaa),
                destination: 31338,
                block_hash: B256::repeat_byte(0xbb),
                id: B256::left_padding_from(&i.to_be_bytes()),
            })
            .collect();
        let fixture = ferry_executors::bench::Fixture::new(8)?;
        let deliveries = ferry_executors::bench::workloads(&fixture, Self::SAMPLE)
            .into_iter()
            .find(|w| w.name == "mailbox-delivery")
            .context("the executors' bench has no mailbox-delivery workload")?;
        let mut samples = FloorSamples::default();
        for _ in 0..Self::PASSES {
            let start = Instant::now();
            for attestation in &attestations {
                std::hint::black_box(key.sign(attestation)?);
            }
            samples.sign.push(start.elapsed().as_secs_f64() / Self::SAMPLE as f64);
            let (seconds, _) = ferry_executors::bench::plain_revm(fixture.state.clone(), &fixture.ctx, &deliveries.txs);
            samples.delivery.push(seconds / Self::SAMPLE as f64);
        }
        Ok(samples)
    }

    /// The floor from the passes before and after the relay.
    fn of(before: FloorSamples, after: FloorSamples) -> Self {
        let median = |a: Vec<f64>, b: Vec<f64>| ferry_executors::bench::median([a, b].concat());
        let (sign_seconds, delivery_seconds) =
            (3.0 * median(before.sign, after.sign), median(before.delivery, after.delivery));
        Self { sign_seconds, delivery_seconds, seconds_per_message: sign_seconds + delivery_seconds }
    }
}

/// Per pass: one signature's seconds and one delivery's.
#[derive(Debug, Default)]
pub struct FloorSamples {
    sign: Vec<f64>,
    delivery: Vec<f64>,
}

/// How to run the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct RelayBench {
    /// Messages to send.
    pub messages: usize,
    /// Block time of both chains, in seconds.
    pub block_time: f64,
    /// Messages per second to send at; as fast as the origin accepts them when `None`.
    pub rate: Option<f64>,
    /// Block gas limit of both chains.
    pub gas_limit: u64,
}

/// Runs the benchmark.
pub async fn run(bench: RelayBench) -> anyhow::Result<RelayReport> {
    let RelayBench { messages, block_time, rate, gas_limit } = bench;
    let http = format!("127.0.0.1:{}", ferry_devnet::free_port()?).parse()?;
    let options = DevnetOptions {
        block_time: Some(Duration::from_secs_f64(block_time)),
        gas_limit: Some(gas_limit),
        http_listen: http,
        ..Default::default()
    };
    let devnet = Devnet::start(options).await?;
    let dir = tempfile::tempdir()?;
    let mut config = crate::devnet_config(dir.path(), &devnet, http, 2)?;
    config.relayer.batch_size = 500;
    let service = Service::start(config.clone(), Role::All).await?;
    // The relay is measured from a service that is up (watchers caught up, NATS
    // connected), as an operator's is: not its start-up, when a first scan takes several
    // blocks' messages at once.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let reasons = service.context().not_ready();
        if reasons.is_empty() {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the service is not ready after 120 s: {}", reasons.join("; "));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let floor_before = tokio::task::spawn_blocking(Floor::measure).await??;
    let info = devnet.info();
    let user = info.accounts[0].clone();
    let (rpc_url, bridge, token) = (info.chains[0].rpc_url.clone(), info.chains[0].bridge, info.chains[0].token);
    let start = Instant::now();
    let (cpu_start, stages_start) = (cpu::process_cpu_ns(), cpu::charged());
    // The load generator on a thread and runtime of its own, so that its CPU is its
    // thread's and can be told apart from the relay's.
    let generator = std::thread::Builder::new().name("bench-load".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let generated = runtime.block_on(generate(Load { rpc_url, bridge, token, user, messages, rate, start }));
        generated.map(|(ids, offered)| (ids, offered, cpu::thread_cpu_ns()))
    })?;
    let (ids, offered_per_s, generator_ns) = tokio::task::spawn_blocking(move || generator.join())
        .await?
        .map_err(|_| anyhow::anyhow!("load generator panicked"))??;
    tracing::info!(messages, sent_in = ?start.elapsed(), "all transfers mined on alpha");

    // Waiting reads the delivered counter, and the store's index only once the counter
    // is there: a walk of the index, ten times a second, grows with the run and would be
    // counted as the relay's CPU. The records are read once, at the end.
    let store = &service.context().store;
    let delivered = service.context().metrics.messages_delivered_total.with_label_values(&["alpha", "beta"]);
    let deadline = Instant::now() + Duration::from_secs(600);
    while delivered.get() < messages as u64 || store.count(Stage::Delivered)? < messages as u64 {
        anyhow::ensure!(Instant::now() < deadline, "not all delivered within 10 minutes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end_to_end_seconds = start.elapsed().as_secs_f64();
    let (cpu_end, stages_end) = (cpu::process_cpu_ns(), cpu::charged());
    let per_message = |nanos: u64| nanos as f64 * 1e-9 / messages as f64;
    let relay_ns = cpu_end.saturating_sub(cpu_start).saturating_sub(generator_ns);
    let mut cpu_stages_per_message = std::collections::BTreeMap::new();
    let mut attributed = 0.0;
    for ((stage, end), (_, begin)) in stages_end.iter().zip(&stages_start) {
        let seconds = (end - begin).max(0.0);
        attributed += seconds;
        cpu_stages_per_message.insert(stage.as_str().to_string(), seconds / messages as f64);
    }
    let other = (relay_ns as f64 * 1e-9 - attributed).max(0.0);
    cpu_stages_per_message.insert("other".into(), other / messages as f64);
    // The peak is the relay's: taken before the records are read back.
    let peak_rss_bytes = peak_rss();
    delivered_once_on_chain(&devnet, &ids).await?;
    let (mut first_observed, mut last_delivered) = (u64::MAX, 0);
    let mut latencies = Vec::with_capacity(messages);
    let mut txs = std::collections::HashSet::new();
    for id in &ids {
        let record = store.get(id)?.context("a sent message has no record")?;
        let (Some(observed), Some(delivered)) = (record.entered(Stage::Observed), record.entered(Stage::Delivered))
        else {
            anyhow::bail!("message {id} was not observed and delivered");
        };
        first_observed = first_observed.min(observed);
        last_delivered = last_delivered.max(delivered);
        latencies.push(delivered.saturating_sub(observed) as f64 / 1000.0);
        txs.extend(record.tx_hash());
    }
    let seconds = (last_delivered.saturating_sub(first_observed) as f64 / 1000.0).max(f64::EPSILON);
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
    let m = &service.context().metrics;
    // The sampled batches' sequential re-runs against the same batches' parallel runs.
    let sequential = m.executor_sequential_check_seconds.with_label_values(&["beta"]).get_sample_sum();
    let parallel = m.executor_checked_parallel_seconds.with_label_values(&["beta"]).get_sample_sum();
    let batches_in = |mode: &str| m.executor_batches_total.with_label_values(&["beta", mode]).get();
    let (executor_parallel_batches, executor_batches) =
        (batches_in("parallel"), batches_in("parallel") + batches_in("sequential"));
    let executor_txs =
        m.executor_transactions_total.with_label_values(&["beta"]).get() as f64 / executor_batches.max(1) as f64;
    let cpu_seconds_per_message = per_message(relay_ns);
    service.stop().await;
    drop(devnet);
    // With the relay and the chains stopped: the bound, on a machine as quiet as it gets.
    let floor = Floor::of(floor_before, tokio::task::spawn_blocking(Floor::measure).await??);
    let report = RelayReport {
        messages,
        seconds,
        messages_per_s: messages as f64 / seconds,
        end_to_end_seconds,
        offered_per_s,
        block_time_s: block_time,
        latency_p50_s: pick(0.5),
        latency_p99_s: pick(0.99),
        tx_per_message: txs.len() as f64 / messages as f64,
        executor_speedup: (parallel > 0.0 && sequential > 0.0).then(|| sequential / parallel),
        executor_batches,
        executor_parallel_batches,
        executor_txs_per_batch: executor_txs,
        peak_rss_bytes,
        cpu_seconds_per_message,
        generator_cpu_seconds_per_message: per_message(generator_ns),
        cpu_stages_per_message,
        cpu_over_floor: cpu_seconds_per_message / floor.seconds_per_message.max(f64::EPSILON),
        floor,
    };
    Ok(report)
}

/// What the load generator sends, from where.
struct Load {
    rpc_url: String,
    bridge: Address,
    token: Address,
    user: ferry_devnet::AccountInfo,
    messages: usize,
    rate: Option<f64>,
    start: Instant,
}

/// Sends `messages` transfers alpha -> beta (at `rate` per second, or as fast as alpha
/// takes them) and returns the ids they dispatched and the rate offered.
async fn generate(load: Load) -> anyhow::Result<(Vec<B256>, f64)> {
    let Load { rpc_url, bridge, token, user, messages, rate, start } = load;
    let alpha = ferry_devnet::wallet(&rpc_url, user.private_key)?;
    let token = BridgedToken::new(token, &alpha);
    token.approve(bridge, U256::MAX).send().await?.get_receipt().await?;
    let bridge = TokenBridge::new(bridge, &alpha);
    let mut nonce = alpha.get_transaction_count(user.address).pending().await?;
    let fee = alpha.get_gas_price().await? * 3 + 1_000_000_000;
    // Each transfer pays for its delivery at alpha's paymaster.
    let paid = bridge.quoteTransferRemote(31338).call().await?;
    let mut pending = Vec::with_capacity(messages);
    for i in 0..messages {
        if let Some(rate) = rate {
            tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        }
        let call = bridge
            .transferRemote(31338, Address::with_last_byte(1 + (i % 200) as u8), U256::from(1 + i))
            .value(paid)
            .nonce(nonce)
            .gas(300_000)
            .max_fee_per_gas(fee)
            .max_priority_fee_per_gas(1_000_000_000);
        pending.push(*call.send().await?.tx_hash());
        nonce += 1;
    }
    let offered_per_s = messages as f64 / start.elapsed().as_secs_f64().max(f64::EPSILON);
    Ok((dispatched(&alpha, &pending, user.address, nonce).await?, offered_per_s))
}

/// VmHWM of this process.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The ids of the messages the transfers `sent` dispatched, once `user`'s nonce on alpha
/// reaches `nonce` (every transfer mined), from the Mailbox's `Dispatch` logs: one query
/// for the lot rather than a receipt poll per transfer.
async fn dispatched(alpha: &impl Provider, sent: &[B256], user: Address, nonce: u64) -> anyhow::Result<Vec<B256>> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while alpha.get_transaction_count(user).await? < nonce {
        anyhow::ensure!(Instant::now() < deadline, "transfers not mined within 5 minutes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let filter = Filter::new().event_signature(Mailbox::Dispatch::SIGNATURE_HASH).from_block(0);
    let by_tx: HashMap<B256, B256> = alpha
        .get_logs(&filter)
        .await?
        .iter()
        .filter_map(|log| Some((log.transaction_hash?, log.log_decode::<Mailbox::Dispatch>().ok()?.inner.data.id)))
        .collect();
    let mut ids = Vec::with_capacity(sent.len());
    for tx in sent {
        match by_tx.get(tx) {
            Some(id) => ids.push(*id),
            // Not in the one query (a node may cap its answer): its receipt says.
            None => ids.push(dispatched_by(alpha, *tx).await?),
        }
    }
    Ok(ids)
}

/// The id transfer `tx` dispatched, from its receipt; or why there is none: not mined,
/// or reverted (with its gas and the revert reason the call gives at its parent block).
async fn dispatched_by(alpha: &impl Provider, tx: B256) -> anyhow::Result<B256> {
    let receipt = alpha.get_transaction_receipt(tx).await?.with_context(|| format!("transfer {tx} was not mined"))?;
    if let Some(log) = receipt.inner.logs().iter().find_map(|l| l.log_decode::<Mailbox::Dispatch>().ok()) {
        return Ok(log.inner.data.id);
    }
    let block = receipt.block_number.unwrap_or_default();
    let reason = match alpha.get_transaction_by_hash(tx).await? {
        Some(sent) => {
            let request = sent.into_request();
            match alpha.call(request).block(block.saturating_sub(1).into()).await {
                Ok(_) => "the call succeeds at its parent block".to_string(),
                Err(e) => e.to_string(),
            }
        }
        None => "its transaction is gone".to_string(),
    };
    anyhow::bail!(
        "transfer {tx} in block {block} dispatched nothing (status {}, gas used {}): {reason}",
        receipt.status(),
        receipt.gas_used
    )
}

/// What the chains say, not ferry: every message sent was processed on beta exactly
/// once, nothing else was, and the tokens locked on alpha equal the supply on beta.
async fn delivered_once_on_chain(devnet: &Devnet, ids: &[B256]) -> anyhow::Result<()> {
    let info = devnet.info();
    let (alpha, beta) = (&info.chains[0], &info.chains[1]);
    let beta_rpc = alloy::providers::ProviderBuilder::new().connect_http(beta.rpc_url.parse()?);
    let alpha_rpc = alloy::providers::ProviderBuilder::new().connect_http(alpha.rpc_url.parse()?);
    let filter = Filter::new().address(beta.mailbox).event_signature(Mailbox::Process::SIGNATURE_HASH).from_block(0);
    let mut processed: HashMap<B256, usize> = HashMap::new();
    for log in beta_rpc.get_logs(&filter).await? {
        let id = log.topics().get(1).copied().context("a Process event without an id")?;
        *processed.entry(id).or_default() += 1;
    }
    for id in ids {
        let times = processed.get(id).copied().unwrap_or(0);
        anyhow::ensure!(times == 1, "message {id} processed {times} times on beta");
    }
    anyhow::ensure!(processed.len() == ids.len(), "{} messages processed on beta, {} sent", processed.len(), ids.len());
    let locked = BridgedToken::new(alpha.token, &alpha_rpc).balanceOf(alpha.bridge).call().await?;
    let supply = BridgedToken::new(beta.token, &beta_rpc).totalSupply().call().await?;
    anyhow::ensure!(locked == supply, "locked on alpha {locked} != supply on beta {supply}");
    Ok(())
}
