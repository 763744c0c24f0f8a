//! ferry's executors: per-chain pools of revm workers that run ordered batches of
//! transactions in parallel with exactly the results of sequential execution.
//!
//! - [`Executor`]: a pool of worker threads (the caller among them), each owning one
//!   reused EVM. Big batches go to the Block-STM engine (multi-version memory,
//!   optimistic execution, validation of read sets, re-execution on conflict, waiting on
//!   known writers, an ordered settle that rolls along with the batch, long
//!   transactions that would otherwise run last started first); small ones, cheap ones
//!   and kinds measured to conflict run sequentially (`policy`).
//! - The beneficiary's fee and the balance and nonce of a sender with several
//!   transactions are applied lazily at commit, so they are not hot spots; a
//!   transaction that reads them explicitly still sees the exact value.
//! - [`StateSource`]: where state comes from — [`InMemoryState`], a chain forked over
//!   RPC ([`ForkedState`]), or either with the changes of not yet mined transactions
//!   laid over it ([`LayeredState`]).
//! - [`validation`]: comparing predictions with receipts and with sequential re-runs.
//! - [`blocks`]: real Ethereum blocks with their pre-state, and the checks their headers
//!   allow (gas, receipts root, logs bloom).

pub mod bench;
pub mod blocks;
pub mod clock;
mod commit;
mod crew;
mod error;
mod evm;
mod fork;
mod mv_memory;
mod overlay;
mod parallel;
mod policy;
mod pool;
pub mod recoveries;
mod scheduler;
mod split;
mod state;
mod types;
pub mod validation;
mod view;

pub use error::{ExecutorError, StateError};
pub use fork::{AccessPredictor, AccessSet, ForkedState, StateReads};
pub use pool::{Executor, ExecutorConfig};
pub use state::{InMemoryState, LayeredState, StateSource};
pub use types::{AccountDiff, AccountState, BatchOutcome, BlockContext, ExecutionMode, StateDiff, TxOutcome, TxStatus};

/// Makes workers yield at random points, to shake out races in tests.
#[doc(hidden)]
pub fn set_chaos(on: bool) {
    scheduler::CHAOS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// revm's types that appear in this crate's API.
pub use revm::{
    context::{BlockEnv, TxEnv},
    primitives::hardfork::SpecId,
};
