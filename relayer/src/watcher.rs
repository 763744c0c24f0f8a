//! One chain's watcher (docs/architecture.md, steps 1 and 2): follows new heads
//! (WebSocket, with HTTP polling as the fallback), hands every header to the chain's
//! light client, turns the `Dispatch` logs of final blocks into proven messages and,
//! where this process runs validators, signs them and publishes the signatures.

use std::{sync::Arc, time::Duration};

use alloy::{
    consensus::ReceiptEnvelope,
    primitives::{B256, BloomInput},
    providers::{DynProvider, Provider, ProviderBuilder, WsConnect},
    sol_types::SolEvent,
};
use ferry_light_client::{
    CheckpointStore, Event, HeaderSource, LightClient, LightClientConfig, LightClientError, ProvenMessage, ReceiptTrie,
    RpcHeaderSource, SealedHeader, SourceError, ValidatorKey,
};
use ferry_messages::{
    contracts::Mailbox,
    wire::{OriginBlock, SignedAttestation, WIRE_VERSION},
};
use futures_util::StreamExt;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::{
    ChainConfig,
    backoff::Backoff,
    context::Context,
    lifecycle::{MessageRecord, applied},
};

/// Most headers synced before the new final blocks are scanned, so that the scan always
/// finds them among the final headers the light client keeps.
const SYNC_CHUNK: u64 = 64;

/// A chain's watcher.
pub(crate) struct Watcher {
    context: Arc<Context>,
    name: String,
    chain: ChainConfig,
    provider: DynProvider,
    signers: Arc<Vec<ValidatorKey>>,
}

impl Watcher {
    pub(crate) fn new(
        context: Arc<Context>,
        name: String,
        chain: ChainConfig,
        signers: Arc<Vec<ValidatorKey>>,
    ) -> Self {
        let provider = match chain.rpc_url.parse() {
            Ok(url) => ProviderBuilder::new().connect_http(url).erased(),
            // `config check` refuses such a URL; a provider that fails every call keeps
            // the watcher (and its readiness) honest if one gets through anyway.
            Err(_) => {
                ProviderBuilder::new().connect_http("http://invalid.invalid".parse().expect("static URL")).erased()
            }
        };
        Self { context, name, chain, provider, signers }
    }

    /// Runs until the task is aborted: opens the light client, then syncs on every new
    /// head or poll tick, backing off after errors.
    pub(crate) async fn run(self) {
        let wake = Arc::new(Notify::new());
        // Aborted with this task: the subscription must not outlive its watcher.
        let _heads = self
            .chain
            .ws_url
            .clone()
            .map(|ws| AbortOnDrop(tokio::spawn(follow_heads(ws, wake.clone(), self.name.clone()))));
        let mut client = None;
        let mut backoff = Backoff::task();
        let poll = Duration::from_millis(self.chain.poll_interval_ms);
        loop {
            let step = match client.as_mut() {
                None => self.open().await.map(|c| client = Some(c)),
                Some(c) => self.step(c).await,
            };
            match step {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    if let Some(reason) = e.bad_input() {
                        self.context.metrics.bad_input("rpc", &reason);
                    }
                    let retry_in = backoff.next_delay();
                    warn!(chain = %self.name, error = %e, ?retry_in, "watcher step failed");
                    self.context.set_caught_up(&self.name, false);
                    tokio::time::sleep(retry_in).await;
                    continue;
                }
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    fn source(&self) -> Instrumented<'_> {
        Instrumented { inner: RpcHeaderSource::new(self.provider.clone()), context: &self.context, chain: &self.name }
    }

    /// Opens the light client from the store, or from the configured start block.
    async fn open(&self) -> Result<LightClient, WatchError> {
        let mut config = LightClientConfig::new(self.chain.chain_id, self.chain.confirmations);
        config.rules = self.chain.header_rules();
        let (header, hash) = self.source().header_by_number(self.chain.start_block).await?;
        let checkpoint = SealedHeader::new_unchecked(header, hash);
        let store = CheckpointStore::with_database(self.context.store.database());
        let client = LightClient::open(config, store, checkpoint)?;
        if self.context.store.cursor(self.chain.chain_id)?.is_none() {
            self.context.store.write(|tx| tx.set_cursor(self.chain.chain_id, self.chain.start_block))?;
        }
        if let Some(fault) = client.halted() {
            self.context.metrics.light_client_halted.with_label_values(&[self.name.as_str()]).set(1);
            warn!(chain = %self.name, %fault, "light client is halted; an operator must investigate");
        }
        info!(chain = %self.name, head = client.head().number, finalized = client.finalized().number, "light client open");
        Ok(client)
    }

    /// Syncs to the source's head in chunks, scanning new final blocks after each.
    async fn step(&self, client: &mut LightClient) -> Result<(), WatchError> {
        if client.halted().is_some() {
            self.context.set_caught_up(&self.name, false);
            return Ok(());
        }
        let latest = self.source().latest_number().await?;
        loop {
            let target = latest.min(client.head().number + SYNC_CHUNK);
            let synced = ferry_light_client::sync(client, &self.source(), target).await;
            let events = match synced {
                Ok(events) => events,
                Err(SourceError::LightClient(e)) => return Err(self.refused(e)),
                Err(e) => return Err(e.into()),
            };
            self.account(&events);
            self.scan_finals(client).await?;
            let chain = self.name.as_str();
            self.context.metrics.chain_head_block.with_label_values(&[chain]).set(client.head().number as i64);
            self.context.metrics.chain_final_block.with_label_values(&[chain]).set(client.finalized().number as i64);
            if client.head().number >= latest || events.is_empty() {
                break;
            }
        }
        self.context.set_caught_up(&self.name, client.head().number >= latest);
        Ok(())
    }

    fn refused(&self, e: LightClientError) -> WatchError {
        let chain = self.name.as_str();
        self.context.metrics.light_client_headers_rejected_total.with_label_values(&[chain, e.reason()]).inc();
        if matches!(e, LightClientError::SafetyFault(_) | LightClientError::Halted { .. }) {
            self.context.metrics.light_client_halted.with_label_values(&[chain]).set(1);
        }
        WatchError::LightClient(e)
    }

    fn account(&self, events: &[Event]) {
        let chain = self.name.as_str();
        for event in events {
            match event {
                Event::NewHead(_) => {
                    self.context.metrics.light_client_headers_verified_total.with_label_values(&[chain]).inc()
                }
                Event::Reorg(reorg) => {
                    self.context.metrics.light_client_reorgs_total.with_label_values(&[chain]).inc();
                    info!(
                        chain,
                        depth = reorg.dropped.len(),
                        ancestor = reorg.common_ancestor.number,
                        "reorg below the head; nothing final was touched"
                    );
                }
                Event::Finalized(_) => {}
            }
        }
    }

    /// Turns the `Dispatch` logs of every final block past the scan cursor into proven
    /// messages, signs them, and moves the cursor, block by block.
    async fn scan_finals(&self, client: &LightClient) -> Result<(), WatchError> {
        let chain_id = self.chain.chain_id;
        let cursor = self.context.store.cursor(chain_id)?.unwrap_or(self.chain.start_block);
        for number in cursor + 1..=client.finalized().number {
            let header = client
                .fork_choice()
                .canonical(number)
                .ok_or(WatchError::Gap {
                    number,
                    held_from: client.fork_choice().final_headers().next().map(|h| h.number),
                })?
                .clone();
            let proven = self.prove_block(&header).await?;
            let block = OriginBlock { number: header.number, hash: header.hash(), timestamp: header.timestamp };
            let records = self.records(block, &proven);
            // Records first, so that a signature coming back through the collector finds
            // the message's history; the cursor moves only once the signatures are out, so
            // a crash in between re-signs (JetStream drops the duplicates).
            self.context.store.write(|tx| {
                for record in &records {
                    if tx.get(&record.id)?.is_none() {
                        tx.put(record)?;
                    }
                }
                Ok(())
            })?;
            self.attest(block, &proven).await?;
            self.context.store.write(|tx| tx.set_cursor(chain_id, number))?;
            for record in &records {
                let origin = self.context.chain_label(record.origin.into());
                let destination = self.context.chain_label(record.destination.into());
                self.context
                    .metrics
                    .messages_observed_total
                    .with_label_values(&[origin.as_str(), destination.as_str()])
                    .inc();
            }
        }
        Ok(())
    }

    /// The proven messages of one final block (none without fetching receipts when the
    /// header's bloom rules the Mailbox out).
    async fn prove_block(&self, header: &SealedHeader) -> Result<Vec<ProvenMessage>, WatchError> {
        let mailbox = self.chain.mailbox;
        let bloom = header.logs_bloom;
        if !bloom.contains_input(BloomInput::Raw(mailbox.as_slice()))
            || !bloom.contains_input(BloomInput::Raw(Mailbox::Dispatch::SIGNATURE_HASH.as_slice()))
        {
            return Ok(vec![]);
        }
        let number = header.number;
        let receipts = self
            .context
            .metrics
            .rpc(&self.name, "eth_getBlockReceipts", self.provider.get_block_receipts(number.into()))
            .await
            .map_err(|e| {
                let reason = format!("eth_getBlockReceipts({number}): {e}");
                if e.is_deser_error() { WatchError::Malformed(reason) } else { WatchError::Rpc(reason) }
            })?
            .ok_or_else(|| WatchError::Rpc(format!("no receipts for final block {number}")))?;
        let receipts: Vec<ReceiptEnvelope> = receipts.into_iter().map(|r| r.inner.into_primitives_receipt()).collect();
        let dispatches: Vec<(u64, u64)> = receipts
            .iter()
            .enumerate()
            .flat_map(|(tx_index, receipt)| {
                receipt.logs().iter().enumerate().filter_map(move |(log_index, log)| {
                    (log.address == mailbox && log.topics().first() == Some(&Mailbox::Dispatch::SIGNATURE_HASH))
                        .then_some((tx_index as u64, log_index as u64))
                })
            })
            .collect();
        if dispatches.is_empty() {
            return Ok(vec![]);
        }
        // Proofs are built (one trie for the block) and checked against the verified
        // header: a node that serves receipts not matching `receiptsRoot` is caught here.
        let mut targets: Vec<u64> = dispatches.iter().map(|(tx, _)| *tx).collect();
        targets.dedup();
        let proven = ReceiptTrie::build(&receipts, &targets, header.receipts_root).and_then(|trie| {
            dispatches
                .iter()
                .map(|&(tx_index, log_index)| {
                    let message = ProvenMessage::from_trie(header, &trie, tx_index, log_index)?;
                    message.verify(header.hash(), self.chain.chain_id as u32, mailbox)?;
                    Ok(message)
                })
                .collect::<Result<Vec<_>, _>>()
        });
        proven.map_err(|e| {
            self.context.metrics.bad_input("rpc", "receipt_proof");
            WatchError::Proof { number, reason: e.to_string() }
        })
    }

    /// Records (observed and proven) for the proven messages of one block.
    fn records(&self, block: OriginBlock, proven: &[ProvenMessage]) -> Vec<MessageRecord> {
        proven
            .iter()
            .filter_map(|message| {
                let mut record = MessageRecord::observe(&message.message, self.chain.mailbox, block);
                let detail = format!("receipt proof against block {} ({})", block.number, block.hash);
                applied(record.prove(detail)).then_some(record)
            })
            .inspect(|record| info!(id = %record.id, origin = record.origin, destination = record.destination, block = block.number, "message proven"))
            .collect()
    }

    /// Signs each proven message with this process's validator keys and publishes the
    /// signatures; messages for chains this network does not serve are not signed.
    async fn attest(&self, block: OriginBlock, proven: &[ProvenMessage]) -> Result<(), WatchError> {
        let mut signed = Vec::with_capacity(proven.len() * self.signers.len());
        for message in proven {
            let id = message.id();
            let (origin, destination) = (message.message.origin, message.message.destination);
            if self.context.config.chain_by_id(u64::from(destination)).is_none() {
                warn!(%id, origin, destination, "message for a chain this network does not serve; not signed");
                self.context.metrics.bad_input("chain", "unknown_destination");
                continue;
            }
            // The verified header's hash, not one recomputed from the proof's copy.
            let attestation = ferry_messages::wire::attestation(&message.message, self.chain.mailbox, block.hash);
            for key in self.signers.iter() {
                let signature = key.sign(&attestation).map_err(|e| WatchError::Sign(e.to_string()))?;
                let envelope = SignedAttestation {
                    version: WIRE_VERSION,
                    message: message.message.encode().into(),
                    origin_mailbox: self.chain.mailbox,
                    block,
                    validator: key.address(),
                    signature: signature.as_bytes().to_vec().into(),
                };
                debug!(%id, origin, destination, validator = %key.address(), "signed");
                signed.push((envelope, message.message.clone()));
            }
        }
        // Out together: one round trip to JetStream for the block, not one per signature.
        self.context.bus.publish_attestations(&signed).await?;
        for (envelope, _) in &signed {
            let validator = envelope.validator.to_string();
            let labels = [validator.as_str(), self.name.as_str()];
            self.context.metrics.attestations_signed_total.with_label_values(&labels).inc();
        }
        Ok(())
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Wakes the watcher on every new head from the WebSocket subscription, reconnecting
/// with backoff; polling covers the gaps.
async fn follow_heads(url: String, wake: Arc<Notify>, chain: String) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(15));
    loop {
        match ProviderBuilder::new().connect_ws(WsConnect::new(url.clone())).await {
            Ok(provider) => match provider.subscribe_blocks().await {
                Ok(subscription) => {
                    backoff.reset();
                    let mut heads = subscription.into_stream();
                    while heads.next().await.is_some() {
                        wake.notify_one();
                    }
                    debug!(%chain, "new-heads subscription ended; reconnecting");
                }
                Err(e) => debug!(%chain, error = %e, "new-heads subscription refused"),
            },
            Err(e) => debug!(%chain, error = %e, "WebSocket connect failed; polling meanwhile"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// The chain's RPC as a header source, with every call timed and counted.
struct Instrumented<'a> {
    inner: RpcHeaderSource<DynProvider>,
    context: &'a Context,
    chain: &'a str,
}

impl HeaderSource for Instrumented<'_> {
    async fn latest_number(&self) -> Result<u64, SourceError> {
        self.context.metrics.rpc(self.chain, "eth_blockNumber", self.inner.latest_number()).await
    }

    async fn header_by_number(&self, number: u64) -> Result<(alloy::consensus::Header, B256), SourceError> {
        self.context.metrics.rpc(self.chain, "eth_getBlockByNumber", self.inner.header_by_number(number)).await
    }

    async fn header_by_hash(&self, hash: B256) -> Result<(alloy::consensus::Header, B256), SourceError> {
        self.context.metrics.rpc(self.chain, "eth_getBlockByHash", self.inner.header_by_hash(hash)).await
    }

    async fn finalized(&self) -> Result<Option<(u64, B256)>, SourceError> {
        self.context.metrics.rpc(self.chain, "eth_getBlockByNumber", self.inner.finalized()).await
    }
}

/// Why a watcher step failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchError {
    #[error("header source: {0}")]
    Source(#[from] SourceError),
    #[error("light client: {0}")]
    LightClient(#[from] LightClientError),
    #[error("store: {0}")]
    Store(#[from] crate::StoreError),
    #[error("bus: {0}")]
    Bus(#[from] crate::BusError),
    #[error("rpc: {0}")]
    Rpc(String),
    #[error("rpc: malformed answer: {0}")]
    Malformed(String),
    #[error("block {number}: the receipts do not prove against the verified header: {reason}")]
    Proof { number: u64, reason: String },
    #[error("signing: {0}")]
    Sign(String),
    #[error("final block {number} is no longer held (oldest held: {held_from:?})")]
    Gap { number: u64, held_from: Option<u64> },
}

impl WatchError {
    /// The `ferry_bad_input_total{source="rpc"}` reason when the node served something
    /// false or unreadable (a header that breaks the rules, an answer that does not parse);
    /// `None` for outages, which are not the input's fault, and for halts, which have
    /// their own metric. Receipts that do not prove are counted where they are caught.
    fn bad_input(&self) -> Option<String> {
        match self {
            Self::Malformed(_) | Self::Source(SourceError::Malformed { .. }) => Some("malformed_response".into()),
            Self::LightClient(LightClientError::Header(e))
            | Self::Source(SourceError::LightClient(LightClientError::Header(e))) => {
                Some(format!("header_{}", e.reason()))
            }
            _ => None,
        }
    }
}
