//! Why a delivery round stopped. The round is retried with backoff; what it had taken
//! from JetStream is unacked and comes back, so nothing is lost.

use alloy::{primitives::B256, transports::TransportError};
use ferry_executors::{ExecutorError, StateError};

use crate::{BusError, StoreError};

/// Why a delivery round stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliverError {
    /// The relayer key or the chain's settings cannot be used.
    #[error("configuration: {0}")]
    Config(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The destination's node failed or refused a call.
    #[error("rpc {method}: {source}")]
    Rpc {
        /// The JSON-RPC method.
        method: &'static str,
        /// What the transport or the node said.
        source: TransportError,
    },
    /// The node answered something that does not decode.
    #[error("rpc {method}: {reason}")]
    Malformed {
        /// The JSON-RPC method.
        method: &'static str,
        /// What is wrong with the answer.
        reason: String,
    },
    /// A mined transaction's receipt names no block.
    #[error("receipt {0} without a block")]
    ReceiptWithoutBlock(B256),
    /// The forked state could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The executor could not run a batch.
    #[error(transparent)]
    Execute(#[from] ExecutorError),
    /// The runtime that runs the executors' state reads could not be built.
    #[error("state-read runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// An origin's GasPaymaster could not be read.
    #[error("reading payments on {origin}: {reason}")]
    Payment {
        /// The origin chain.
        origin: String,
        /// What failed.
        reason: String,
    },
    /// The blocking task that ran the executor died.
    #[error("executor task: {0}")]
    Task(#[from] tokio::task::JoinError),
}
