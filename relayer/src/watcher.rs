//! One chain's watcher (docs/architecture.md, steps 1 and 2): follows new heads
//! (WebSocket, with HTTP polling as the fallback), hands every header to the chain's
//! light client, turns the `Dispatch` logs of final blocks into proven messages and,
//! where this process runs validators, signs them and publishes the signatures.

use std::{collections::HashMap, sync::Arc, time::Duration};

use alloy::{
    consensus::ReceiptEnvelope,
    eips::BlockNumberOrTag,
    primitives::{B256, BloomInput},
    providers::{DynProvider, Provider, ProviderBuilder, WsConnect},
    sol_types::SolEvent,
};
use ferry_light_client::{
    CheckpointStore, DispatchedMessage, Event, HeaderSource, LightClient, LightClientConfig, LightClientError,
    ProofError, ReceiptTrie, SealedHeader, SourceError, ValidatorKey,
};
use ferry_messages::{
    contracts::{Mailbox, TokenBridge},
    wire::{OriginBlock, SignedAttestation, WIRE_VERSION},
};
use futures_util::StreamExt;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::{
    ChainConfig,
    backoff::Backoff,
    context::Context,
    endpoints::QuorumSource,
    guard::{Flow, flows},
    lifecycle::{MessageRecord, applied},
    metrics::WatcherMetrics,
    receipts::BlockReceipts,
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
    source: QuorumSource,
    signers: Arc<Vec<ValidatorKey>>,
    metrics: WatcherMetrics,
}

impl Watcher {
    pub(crate) fn new(
        context: Arc<Context>,
        name: String,
        chain: ChainConfig,
        signers: Arc<Vec<ValidatorKey>>,
    ) -> Self {
        let endpoints = context.endpoints(&name, &chain);
        let provider = endpoints.provider(None);
        let source = endpoints.header_source();
        let keys: Vec<_> = signers.iter().map(|key| key.address()).collect();
        let metrics = context.metrics.watcher(&name, &keys);
        Self { context, name, chain, provider, source, signers, metrics }
    }

    /// Runs until the task is aborted: opens the light client, then syncs on every new
    /// head or poll tick, backing off after errors.
    pub(crate) async fn run(self) {
        let wake = Arc::new(Notify::new());
        // Aborted with this task: the subscription must not outlive its watcher.
        let _heads: Vec<AbortOnDrop> = self
            .chain
            .ws_endpoints()
            .into_iter()
            .map(|ws| AbortOnDrop(tokio::spawn(follow_heads(ws.to_string(), wake.clone(), self.name.clone()))))
            .collect();
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

    /// The chain's endpoints as the light client's header source (a quorum of them when
    /// so configured; every call timed and counted by the endpoints' layers).
    fn source(&self) -> &QuorumSource {
        &self.source
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
            self.metrics.halted.set(1);
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
            let synced = ferry_light_client::sync(client, self.source(), target).await;
            let events = match synced {
                Ok(events) => events,
                Err(SourceError::LightClient(e)) => return Err(self.refused(e)),
                Err(e) => return Err(e.into()),
            };
            self.account(&events);
            self.scan_finals(client).await?;
            self.metrics.head.set(client.head().number as i64);
            self.metrics.finalized.set(client.finalized().number as i64);
            if client.head().number >= latest || events.is_empty() {
                break;
            }
        }
        self.context.set_caught_up(&self.name, client.head().number >= latest);
        Ok(())
    }

    fn refused(&self, e: LightClientError) -> WatchError {
        self.metrics.rejected(e.reason());
        if matches!(e, LightClientError::SafetyFault(_) | LightClientError::Halted { .. }) {
            self.metrics.halted.set(1);
        }
        WatchError::LightClient(e)
    }

    fn account(&self, events: &[Event]) {
        let chain = self.name.as_str();
        for event in events {
            match event {
                Event::NewHead(_) => self.metrics.headers_verified.inc(),
                Event::Reorg(reorg) => {
                    self.metrics.reorgs.inc();
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
            let (proven, flows) = self.prove_block(&header).await?;
            let block = OriginBlock { number: header.number, hash: header.hash(), timestamp: header.timestamp };
            let records = self.records(block, &proven);
            // The accountant's books with this block's own locks booked: a transfer's lock
            // is in the block that dispatched it.
            let mut ledger = self.context.store.books()?;
            flows.iter().for_each(|flow| ledger.add(flow));
            let (sign, hold) = self.guard(&ledger, &proven, &records);
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
            self.attest(block, &sign).await?;
            // Books, holds and cursor together: a crash before this rescans the block and
            // books it once.
            self.context.store.write(|tx| {
                tx.book(&flows)?;
                for held in &hold {
                    tx.hold(held)?;
                    if let Some(mut record) = tx.get(&held.id)?
                        && applied(record.hold(format!("{}: {}", held.reason.label(), describe(&held.reason))))
                    {
                        tx.put(&record)?;
                    }
                }
                tx.set_cursor(chain_id, number)
            })?;
            crate::guard::observe(&self.context, &ledger);
            for held in &hold {
                info!(id = %held.id, amount = %held.amount, reason = ?held.reason, "transfer held unsigned");
            }
            for record in &records {
                self.context.route(record.origin, record.destination).observed.inc();
            }
        }
        Ok(())
    }

    /// The proven messages of one final block and its bridge's transfer events, from
    /// receipts checked against the verified header (none fetched when the header's
    /// bloom rules out both the Mailbox's dispatches and the bridge's releases).
    async fn prove_block(&self, header: &SealedHeader) -> Result<(Vec<DispatchedMessage>, Vec<Flow>), WatchError> {
        let mailbox = self.chain.mailbox;
        let bloom = header.logs_bloom;
        let has = |address: &[u8], topic: &[u8]| {
            bloom.contains_input(BloomInput::Raw(address)) && bloom.contains_input(BloomInput::Raw(topic))
        };
        let dispatched = has(mailbox.as_slice(), Mailbox::Dispatch::SIGNATURE_HASH.as_slice());
        // A bridge's locks come with a dispatch; its releases come with none.
        let released = self.chain.bridge.is_some_and(|bridge| {
            has(bridge.as_slice(), TokenBridge::ReceivedTransferRemote::SIGNATURE_HASH.as_slice())
        });
        if !dispatched && !released {
            return Ok((vec![], vec![]));
        }
        let number = header.number;
        let served: BlockReceipts = self
            .provider
            .raw_request("eth_getBlockReceipts".into(), (BlockNumberOrTag::Number(number),))
            .await
            .map_err(|source| {
                if source.is_deser_error() {
                    WatchError::Malformed(format!("eth_getBlockReceipts({number}): {source}"))
                } else {
                    WatchError::Receipts { number, source }
                }
            })?;
        let receipts: Vec<ReceiptEnvelope> = served
            .into_consensus()
            .map_err(|e| WatchError::Malformed(format!("eth_getBlockReceipts({number}): {e}")))?
            .ok_or(WatchError::NoReceipts(number))?;
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
        // The block's receipts are checked whole against the verified header (one trie,
        // no proof kept): a node that serves receipts not matching `receiptsRoot` is caught
        // here, and every message is then read off a receipt proven to be the block's.
        let chain_id = self.chain.chain_id as u32;
        let proven = ReceiptTrie::check_root(&receipts, header.receipts_root).and_then(|()| {
            dispatches
                .iter()
                .map(|&(tx_index, log_index)| {
                    let receipt = usize::try_from(tx_index).ok().and_then(|i| receipts.get(i));
                    let count = receipts.len();
                    let receipt = receipt.ok_or(ProofError::NoSuchReceipt { index: tx_index, count })?;
                    ferry_light_client::dispatched(receipt, log_index, chain_id, mailbox)
                })
                .collect::<Result<Vec<_>, _>>()
        });
        let proven = proven.map_err(|e| {
            self.context.metrics.bad_input("rpc", "receipt_proof");
            WatchError::Proof { number, reason: e.to_string() }
        })?;
        // The trie above matched `receiptsRoot`: these receipts are the block's.
        let flows = match self.chain.bridge {
            Some(bridge) => flows(self.chain.chain_id as u32, bridge, &receipts),
            None => vec![],
        };
        Ok((proven, flows))
    }

    /// Splits a block's proven messages into those to sign now and the transfers the
    /// accountant or the governor holds (only where this process signs at all).
    fn guard<'m>(
        &self,
        ledger: &crate::guard::Ledger,
        proven: &'m [DispatchedMessage],
        records: &[MessageRecord],
    ) -> (Vec<&'m DispatchedMessage>, Vec<crate::guard::Held>) {
        if self.signers.is_empty() {
            return (proven.iter().collect(), vec![]);
        }
        let mut sign = Vec::with_capacity(proven.len());
        let mut hold = Vec::new();
        // By id: a block carries hundreds of messages, and each id is a hash to compute.
        let by_id: HashMap<B256, &MessageRecord> = records.iter().map(|r| (r.id, r)).collect();
        for message in proven {
            let decision = crate::guard::decide(&self.context, ledger, &message.message);
            let record = decision.is_some().then(|| by_id.get(&message.id).copied()).flatten();
            match (decision, record) {
                (Some((amount, reason)), Some(record)) => hold.push(crate::guard::held(record, amount, reason)),
                _ => sign.push(message),
            }
        }
        (sign, hold)
    }

    /// Records (observed and proven) for the proven messages of one block.
    fn records(&self, block: OriginBlock, proven: &[DispatchedMessage]) -> Vec<MessageRecord> {
        proven
            .iter()
            .filter_map(|message| {
                let mut record = MessageRecord::dispatched(message, self.chain.mailbox, block);
                let detail = format!("receipts checked against the receipts root of block {} ({})", block.number, block.hash);
                applied(record.prove(detail)).then_some(record)
            })
            .inspect(|record| info!(id = %record.id, origin = record.origin, destination = record.destination, block = block.number, "message proven"))
            .collect()
    }

    /// Signs each proven message with this process's validator keys and publishes the
    /// signatures; messages for chains this network does not serve are not signed.
    async fn attest(&self, block: OriginBlock, proven: &[&DispatchedMessage]) -> Result<(), WatchError> {
        let mut items = Vec::with_capacity(proven.len());
        for message in proven {
            let (origin, destination) = (message.message.origin, message.message.destination);
            if self.context.config.chain_by_id(u64::from(destination)).is_none() {
                warn!(id = %message.id, origin, destination, "message for a chain this network does not serve; not signed");
                self.context.metrics.bad_input("chain", "unknown_destination");
                continue;
            }
            // The verified header's hash, not one recomputed from the proof's copy.
            items.push(ToSign { message: (*message).clone(), origin_mailbox: self.chain.mailbox, block });
        }
        sign(&self.context, &self.signers, &items).await
    }
}

/// A message to sign, with its id and bytes as dispatched (computed once, where it was
/// read) and where it was dispatched.
pub(crate) struct ToSign {
    /// The message, its id and its bytes.
    pub message: DispatchedMessage,
    /// The Mailbox that dispatched it.
    pub origin_mailbox: alloy::primitives::Address,
    /// The final block it was dispatched in.
    pub block: OriginBlock,
}

/// Signs each message (with its origin Mailbox and final origin block) with every key in
/// `signers` and publishes the signatures in one round trip to JetStream.
pub(crate) async fn sign(context: &Context, signers: &[ValidatorKey], items: &[ToSign]) -> Result<(), WatchError> {
    if signers.is_empty() || items.is_empty() {
        return Ok(());
    }
    // A process that also collects remembers what its own validators signed: recovering
    // a signature it made itself would tell it nothing (see `collector::check`).
    let remember = ferry_executors::recoveries::installed();
    // Every signature of the block in one stage scope: reading the thread's CPU clock
    // (a system call) around each one cost a tenth of a signature.
    let signatures = crate::cpu::scope(crate::cpu::Stage::Sign, || {
        items
            .iter()
            .map(|ToSign { message, origin_mailbox, block }| {
                let attestation =
                    ferry_messages::wire::attestation_of(message.id, &message.message, *origin_mailbox, block.hash);
                let hash = attestation.signing_hash();
                let sign = |key: &ValidatorKey| -> Result<_, ferry_light_client::CommitteeError> {
                    let signature = key.sign_hash(hash)?;
                    if remember {
                        ferry_executors::recoveries::remember_signature(hash, &signature, key.address());
                    }
                    Ok(signature)
                };
                signers.iter().map(sign).collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    let mut signed = Vec::with_capacity(items.len() * signers.len());
    for (ToSign { message: DispatchedMessage { message, id, bytes }, origin_mailbox, block }, signatures) in
        items.iter().zip(signatures)
    {
        for (key, signature) in signers.iter().zip(signatures) {
            let envelope = SignedAttestation {
                version: WIRE_VERSION,
                message: bytes.clone(),
                origin_mailbox: *origin_mailbox,
                block: *block,
                validator: key.address(),
                signature: signature.as_bytes().to_vec().into(),
            };
            debug!(%id, origin = message.origin, destination = message.destination, validator = %key.address(), "signed");
            signed.push((envelope, message.clone()));
        }
    }
    context.bus.publish_attestations(&signed).await?;
    let mut per_origin: HashMap<u32, u64> = HashMap::new();
    for item in items {
        *per_origin.entry(item.message.message.origin).or_default() += 1;
    }
    for (origin, count) in per_origin {
        let origin = context.chain_label(origin.into());
        for key in signers {
            let counter =
                context.metrics.attestations_signed_total.with_label_values(&[&key.address().to_string(), &origin]);
            counter.inc_by(count);
        }
    }
    Ok(())
}

/// A hold's reason as the record's history shows it.
fn describe(reason: &crate::guard::HoldReason) -> String {
    match reason {
        crate::guard::HoldReason::Delay { until_ms } => format!("signed at {until_ms} ms unless released or cancelled"),
        crate::guard::HoldReason::Accountant { shortfall } => shortfall.clone(),
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
    #[error("eth_getBlockReceipts({number}): {source}")]
    Receipts { number: u64, source: alloy::transports::TransportError },
    #[error("the node has no receipts for final block {0}")]
    NoReceipts(u64),
    #[error("rpc: malformed answer: {0}")]
    Malformed(String),
    #[error("block {number}: the receipts do not prove against the verified header: {reason}")]
    Proof { number: u64, reason: String },
    #[error("signing: {0}")]
    Sign(#[from] ferry_light_client::CommitteeError),
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
