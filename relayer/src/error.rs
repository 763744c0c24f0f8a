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
        source: config::ConfigError,
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
