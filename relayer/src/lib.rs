//! The ferry relayer service: configuration, chain watchers, validators, the NATS
//! JetStream publisher and consumers, the submitter, the redb store, metrics and HTTP.
//!
//! - [`Config`]: the one TOML file a `ferry` process runs from, every key overridable
//!   by `FERRY__SECTION__KEY` environment variables; [`Config::check`] lists every
//!   problem with its key path.
//! - [`Service`]: a running process in one [`Role`] (watch and sign, relay, or both),
//!   its tasks sharing one [`Context`]; a message's way through them is in
//!   docs/architecture.md.
//! - [`MessageRecord`] and its transitions ([`lifecycle`]): the only code that moves a
//!   message from one [`Stage`] to the next.
//! - [`Store`]: persists message records, scan cursors and nonces.
//! - [`guard`]: value safety in the validators: the accountant's books per token route
//!   and the governor's delay for large transfers.
//! - Each chain's RPC endpoints (`endpoints`): fall-over reads, broadcast sends, probed
//!   health, and a quorum of endpoints behind every header the light client takes.
//! - [`Metrics`]: the Prometheus metrics, served on `/metrics`; [`cpu`]: the process's CPU
//!   by pipeline stage, among them.

mod backoff;
mod bus;
mod check;
mod collector;
mod config;
mod context;
pub mod cpu;
mod deliver;
mod endpoints;
mod error;
pub mod guard;
mod http;
pub mod lifecycle;
pub mod metrics;
mod receipts;
mod rpc;
mod service;
pub mod store;
mod watcher;

pub use bus::{ATTESTATION_STREAM, Bus};
pub use check::Problem;
pub use config::{
    ChainConfig, Config, GovernorRoute, HttpConfig, NatsConfig, PolicyConfig, RelayerConfig, RuleSwitches, RulesPreset,
    Secret, ValidatorsConfig,
};
pub use context::Context;
pub use error::{BusError, ConfigError, ServiceError, StoreError};
pub use lifecycle::{IllegalTransition, MessageRecord, Stage, StageEntry, Transition};
pub use metrics::Metrics;
pub use service::{Role, Service};
pub use store::Store;
