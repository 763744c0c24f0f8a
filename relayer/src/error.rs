//! Errors of the relayer library.

use std::path::PathBuf;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or the environment does not parse into a [`Config`](crate::Config).
    #[error("{path}: {source}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the key path.
        source: Box<config::ConfigError>,
    },
    /// A secret file cannot be read or does not hold a key.
    #[error("{key}: {reason}")]
    Secret {
        /// The key path of the setting.
        key: String,
        /// What is wrong (never the secret itself).
        reason: String,
    },
    /// Writing a configuration failed.
    #[error("{path}: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file cannot be opened (another process holds it, or it is not a redb file).
    #[error("store {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb said.
        reason: String,
    },
    /// redb refused an operation.
    #[error("store: {0}")]
    Database(String),
    /// A record that does not decode.
    #[error("store holds a corrupt record: {0}")]
    Corrupt(String),
}

macro_rules! database_errors {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(e: $error) -> Self {
                Self::Database(e.to_string())
            }
        }
    )*};
}
database_errors!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// Why talking to NATS failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// No connection.
    #[error("connecting to NATS: {0}")]
    Connect(String),
    /// A stream or consumer cannot be created or found.
    #[error("JetStream setup: {0}")]
    Setup(String),
    /// A publish was not acknowledged.
    #[error("publishing: {0}")]
    Publish(String),
    /// Pulling from a consumer failed.
    #[error("fetching: {0}")]
    Fetch(String),
}

/// Why a ferry process cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration cannot run this role.
    #[error("configuration: {0}")]
    Config(String),
    /// A key setting is unusable.
    #[error(transparent)]
    Key(#[from] ConfigError),
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// NATS is unreachable or refuses the streams.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The HTTP address cannot be bound.
    #[error("HTTP server: {0}")]
    Http(String),
}
