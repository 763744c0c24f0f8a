//! NATS JetStream (docs/architecture.md, step 3): the streams, the consumers, and publishing with
//! `Nats-Msg-Id` so that the server drops a second publish of the same thing.

use std::time::Duration;

use async_nats::jetstream::{
    self, AckKind, Context,
    consumer::{AckPolicy, PullConsumer, pull},
    message::PublishMessage,
    stream::{self, DiscardPolicy, StorageType},
};
use ferry_messages::{
    Message,
    wire::{Deliverable, SignedAttestation, attestation_subject, message_subject},
};
use futures_util::StreamExt;

use crate::{BusError, NatsConfig, cpu};

/// The stream validator signatures travel on (`ferry.att.<origin>.<destination>`).
pub const ATTESTATION_STREAM: &str = "FERRY_ATTESTATIONS";

/// Publishes one task keeps unacknowledged at most (async-nats allows 5,000 per
/// connection, shared by every task: a task holding them all would wait on itself).
const PUBLISH_WINDOW: usize = 500;

/// How much longer than its own expiry a fetch may take before it is abandoned.
const FETCH_GRACE: Duration = Duration::from_secs(10);

/// How long stream setup goes on trying: a cluster electing its JetStream leader, a
/// server slow to answer on a loaded machine.
const STREAM_SETUP: Duration = Duration::from_secs(60);

/// How long one stream setup attempt waits for the server's answers: under the
/// client's own request timeout (10 s), so that an unanswered attempt is told apart from
/// an answered one and the next one asks over a new connection.
const SETUP_ATTEMPT: Duration = Duration::from_secs(8);

/// How long JetStream drops a repeated `Nats-Msg-Id`.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// The durable consumer through which relayer `name` collects signatures.
pub fn collector_consumer(name: &str) -> String {
    format!("ferry-collect-{name}")
}

/// The durable consumer, shared by every relayer, of the deliverables for `chain_id`.
pub fn deliverer_consumer(chain_id: u64) -> String {
    format!("ferry-deliver-{chain_id}")
}

/// The JetStream side of a ferry process.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: Context,
    stream: String,
    ack_wait: Duration,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("stream", &self.stream).finish()
    }
}

impl Bus {
    /// Connects to the configured servers (moving to another when one goes away) and
    /// makes sure both streams exist with the configured replicas (created or updated
    /// here: nats-server 2.9 has no KV buckets to rely on, streams and consumers are all
    /// ferry needs). `ack_wait_secs` is how long a consumer waits for an ack before
    /// redelivering: what a crashed process's messages wait before another process takes
    /// them (delivery extends it with progress acks while a transaction is pending).
    pub async fn connect(config: &NatsConfig) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("ferry")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(config.servers())
            .await
            .map_err(|e| BusError::Connect(e.to_string()))?;
        let js = jetstream::new(client.clone());
        let ack_wait = Duration::from_secs(config.ack_wait_secs.max(1));
        let bus = Self { client, js, stream: config.stream.clone(), ack_wait };
        bus.ensure_stream(&config.stream, "ferry.msg.>", config.replicas).await?;
        bus.ensure_stream(ATTESTATION_STREAM, "ferry.att.>", config.replicas).await?;
        Ok(bus)
    }

    /// Whether the connection is up.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// How long an unacked message waits before redelivery.
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
    }

    /// The deliverables stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Creates stream `name`, or brings an existing one to this configuration (its
    /// replicas among it). A cluster electing its JetStream leader answers "temporarily
    /// unavailable" for a while, and a server asked by several processes at once may leave
    /// a request unanswered: each attempt is bounded by [`SETUP_ATTEMPT`], a timed-out one
    /// is followed by a fresh connection, and attempts go on up to [`STREAM_SETUP`].
    async fn ensure_stream(&self, name: &str, subjects: &str, replicas: usize) -> Result<(), BusError> {
        let wanted = stream::Config {
            name: name.to_string(),
            subjects: vec![subjects.to_string()],
            storage: StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            max_age: Duration::from_secs(7 * 24 * 3600),
            discard: DiscardPolicy::Old,
            num_replicas: replicas,
            ..Default::default()
        };
        let deadline = tokio::time::Instant::now() + STREAM_SETUP;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let error = match tokio::time::timeout(SETUP_ATTEMPT, self.apply_stream(&wanted)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => {
                    // The answer may be lost on this connection (its inbox, a server that
                    // dropped it): the next attempt asks over a new one. Not before the
                    // first connection is up: a reconnect queued behind it would drop it.
                    if self.connected()
                        && let Err(e) = self.client.force_reconnect().await
                    {
                        tracing::warn!(error = %e, "could not reconnect to NATS");
                    }
                    format!("no answer within {SETUP_ATTEMPT:?}")
                }
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(BusError::Setup(format!("stream {name} (replicas {replicas}): {error}")));
            }
            tracing::warn!(stream = name, attempt, %error, "stream setup failed; trying again");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// One attempt at stream setup. A stream that already satisfies `wanted` is left
    /// untouched, so processes restarting together do not write the same stream at once
    /// (a race nats-server 2.9 answers with timeouts); a missing one is created and a
    /// differing one updated.
    async fn apply_stream(&self, wanted: &stream::Config) -> Result<(), String> {
        match self.js.get_stream(&wanted.name).await {
            Ok(found) if satisfies(&found.cached_info().config, wanted) => Ok(()),
            Ok(_) => self.js.update_stream(wanted.clone()).await.map(drop).map_err(|e| e.to_string()),
            Err(e) if is_missing_stream(&e) => {
                self.js.create_stream(wanted.clone()).await.map(drop).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// A consumer's backlog: messages not yet delivered to it, and messages delivered and not
    /// yet acknowledged.
    pub async fn backlog(&self, stream: &str, consumer: &str) -> Result<(u64, u64), BusError> {
        let stream = self.js.get_stream(stream).await.map_err(|e| BusError::Setup(format!("stream {stream}: {e}")))?;
        let info =
            stream.consumer_info(consumer).await.map_err(|e| BusError::Setup(format!("consumer {consumer}: {e}")))?;
        Ok((info.num_pending, info.num_ack_pending as u64))
    }

    /// A durable pull consumer of `stream` filtered to `subject`. Processes that use the
    /// same `name` share its messages: each goes to one of them at a time.
    pub async fn consumer(&self, stream: &str, name: &str, subject: String) -> Result<PullConsumer, BusError> {
        let stream = self.js.get_stream(stream).await.map_err(|e| BusError::Setup(format!("stream {stream}: {e}")))?;
        stream
            .get_or_create_consumer(
                name,
                pull::Config {
                    durable_name: Some(name.to_string()),
                    filter_subject: subject,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_ack_pending: 20_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| BusError::Setup(format!("consumer {name}: {e}")))
    }

    /// Publishes validators' signatures, each deduplicated per (message, validator).
    /// Returns, for each, false when the server dropped it as a duplicate.
    pub async fn publish_attestations(&self, signed: &[(SignedAttestation, Message)]) -> Result<Vec<bool>, BusError> {
        let outgoing = signed.iter().map(|(signed, message)| Outgoing {
            subject: attestation_subject(message.origin, message.destination),
            dedup: format!("{}:{}", message.id(), signed.validator),
            payload: signed.encode(),
        });
        cpu::metered(cpu::Stage::Nats, self.publish_all(outgoing)).await
    }

    /// Publishes deliverables, each to its destination's subject with `Nats-Msg-Id` = its
    /// dedup key (the message id, or the id and a retry count when an operator retries a
    /// parked message). Returns, for each, false when the server dropped it as a duplicate.
    pub async fn publish_deliverables(
        &self,
        deliverables: &[(Deliverable, u32, String)],
    ) -> Result<Vec<bool>, BusError> {
        let outgoing = deliverables.iter().map(|(deliverable, destination, dedup)| Outgoing {
            subject: message_subject(*destination),
            dedup: dedup.clone(),
            payload: deliverable.encode(),
        });
        cpu::metered(cpu::Stage::Nats, self.publish_all(outgoing)).await
    }

    /// Sends messages without waiting for each acknowledgement (up to
    /// [`PUBLISH_WINDOW`] outstanding, well under the client's own limit that every task
    /// of the process shares), and collects the acknowledgements in order.
    async fn publish_all(&self, outgoing: impl Iterator<Item = Outgoing>) -> Result<Vec<bool>, BusError> {
        let mut window = std::collections::VecDeque::with_capacity(PUBLISH_WINDOW);
        let mut fresh = Vec::new();
        for o in outgoing {
            if window.len() >= PUBLISH_WINDOW
                && let Some(ack) = window.pop_front()
            {
                fresh.push(acknowledged(ack).await?);
            }
            let ack = self
                .js
                .send_publish(o.subject, PublishMessage::build().payload(o.payload.into()).message_id(o.dedup))
                .await
                .map_err(|e| BusError::Publish(e.to_string()))?;
            window.push_back(ack);
        }
        for ack in window {
            fresh.push(acknowledged(ack).await?);
        }
        Ok(fresh)
    }
}

/// Whether JetStream stored the message (false: dropped as a duplicate).
async fn acknowledged(ack: jetstream::context::PublishAckFuture) -> Result<bool, BusError> {
    Ok(!ack.await.map_err(|e| BusError::Publish(e.to_string()))?.duplicate)
}

/// One message to publish.
struct Outgoing {
    subject: String,
    dedup: String,
    payload: Vec<u8>,
}

/// Takes up to `max` messages from `consumer`: what is ready now or, when nothing is,
/// what arrives within `wait` (returning as soon as the first does, with whatever is
/// ready with it). A message the fetch fails on mid-way stays unacked and comes back
/// later.
pub async fn take(consumer: &PullConsumer, max: usize, wait: Duration) -> Result<Vec<jetstream::Message>, BusError> {
    // The server ends every fetch (at once, or at `wait`); a connection that silently
    // dropped its answer must not hold the caller beyond that.
    let limit = wait + FETCH_GRACE;
    let fetch = cpu::metered(cpu::Stage::Nats, async {
        let mut taken = ready(consumer, max).await?;
        if taken.is_empty() && !wait.is_zero() {
            let first = consumer
                .batch()
                .max_messages(1)
                .expires(wait)
                .messages()
                .await
                .map_err(|e| BusError::Fetch(e.to_string()))?;
            taken = drain(first).await;
            if !taken.is_empty() && max > 1 {
                taken.extend(ready(consumer, max - 1).await?);
            }
        }
        Ok::<_, BusError>(taken)
    });
    let taken = tokio::time::timeout(limit, fetch).await;
    taken.map_err(|_| BusError::Fetch(format!("no answer within {limit:?}")))?
}

/// What `consumer` has ready, up to `max`, without waiting.
async fn ready(consumer: &PullConsumer, max: usize) -> Result<Vec<jetstream::Message>, BusError> {
    let batch = consumer.fetch().max_messages(max).messages().await.map_err(|e| BusError::Fetch(e.to_string()))?;
    Ok(drain(batch).await)
}

async fn drain(mut batch: pull::Batch) -> Vec<jetstream::Message> {
    let mut taken = Vec::new();
    while let Some(message) = batch.next().await {
        match message {
            Ok(m) => taken.push(m),
            Err(e) => tracing::debug!(error = %e, "fetch ended early"),
        }
    }
    taken
}

/// Acks `message` with `kind`, logging (not failing) when the server cannot be told:
/// an unacked message comes back after the ack wait, which is always safe. Its CPU is
/// the caller's stage's: an ack hands a few bytes to the client, less work than reading
/// the CPU clock around it twice.
pub async fn ack(message: &jetstream::Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(error = %e, subject = %message.subject, "could not ack");
    }
}

/// Whether a stream configured as `current` already is what `wanted` asks for, in every
/// field ferry sets (the server fills in the rest).
fn satisfies(current: &stream::Config, wanted: &stream::Config) -> bool {
    current.subjects == wanted.subjects
        && current.storage == wanted.storage
        && current.duplicate_window == wanted.duplicate_window
        && current.max_age == wanted.max_age
        && current.discard == wanted.discard
        && current.num_replicas.max(1) == wanted.num_replicas.max(1)
}

/// Whether a stream lookup failed because the stream does not exist.
fn is_missing_stream(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e) if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted() -> stream::Config {
        stream::Config {
            name: "FERRY_MESSAGES".into(),
            subjects: vec!["ferry.msg.>".into()],
            storage: StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            max_age: Duration::from_secs(3600),
            discard: DiscardPolicy::Old,
            num_replicas: 1,
            ..Default::default()
        }
    }

    #[test]
    fn a_stream_as_wanted_is_left_alone_and_any_difference_is_an_update() {
        // What the server answers: our fields plus its own defaults.
        let served = stream::Config { max_messages: -1, max_bytes: -1, num_replicas: 1, ..wanted() };
        assert!(satisfies(&served, &wanted()));
        let changes: [fn(&mut stream::Config); 6] = [
            |c| c.subjects = vec!["ferry.other.>".into()],
            |c| c.storage = StorageType::Memory,
            |c| c.duplicate_window = Duration::from_secs(1),
            |c| c.max_age = Duration::ZERO,
            |c| c.discard = DiscardPolicy::New,
            |c| c.num_replicas = 3,
        ];
        for change in changes {
            let mut current = served.clone();
            change(&mut current);
            assert!(!satisfies(&current, &wanted()), "{current:?}");
        }
    }
}
