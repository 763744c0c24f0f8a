//! The executors' errors.

/// A state source failed (RPC down, missing data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state source: {0}")]
pub struct StateError(pub String);

impl revm::database_interface::DBErrorMarker for StateError {}

/// Why a batch could not be executed at all. (A transaction that fails is an outcome,
/// not an error.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutorError {
    /// The state source failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A worker thread is gone.
    #[error("executor worker {0} stopped")]
    WorkerGone(usize),
    /// The EVM reported an internal error (not a transaction's fault).
    #[error("evm: {0}")]
    Evm(String),
}
