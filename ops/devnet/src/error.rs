//! What can go wrong bringing up a devnet.

use std::path::PathBuf;

/// Errors of starting processes, deploying contracts and writing devnet files.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// A binary is nowhere to be found.
    #[error("{binary} not found: {hint}")]
    BinaryNotFound {
        /// The program looked for.
        binary: &'static str,
        /// Where it was looked for and how to install it.
        hint: String,
    },
    /// The OS refused to start a process.
    #[error("failed to start {binary} ({path}): {source}")]
    Spawn {
        /// The program.
        binary: &'static str,
        /// Its path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A process exited or stayed silent before it was ready.
    #[error("{binary} did not become ready: {reason}; its output: {log}")]
    NotReady {
        /// The program.
        binary: &'static str,
        /// What was waited for.
        reason: String,
        /// Where its output went.
        log: PathBuf,
    },
    /// A JSON-RPC or NATS call failed.
    #[error("{what}: {reason}")]
    Rpc {
        /// The call.
        what: String,
        /// The error.
        reason: String,
    },
    /// A deployment or configuration transaction reverted.
    #[error("transaction {what} reverted (tx {tx})")]
    Reverted {
        /// What the transaction was for.
        what: String,
        /// Its hash.
        tx: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file did not hold what was expected.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

impl DevnetError {
    pub(crate) fn rpc(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Rpc { what: what.into(), reason: reason.to_string() }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
