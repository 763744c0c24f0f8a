//! The ferry relayer service: configuration, and (as the pipeline lands) watchers,
//! validators, the NATS publisher and consumer, the submitter and the store.
//!
//! - [`Config`]: the one TOML file a `ferry` process runs from, every key overridable
//!   by `FERRY__SECTION__KEY` environment variables.

mod config;
mod error;

pub use config::{ChainConfig, Config, HttpConfig, NatsConfig, RelayerConfig, Secret, ValidatorsConfig};
pub use error::ConfigError;
