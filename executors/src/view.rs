//! The EVM's database: in sequential mode the committed overlay, in parallel mode the
//! multi-version memory of the batch (recording every read for validation).

use std::sync::Arc;

use revm::{
    Database,
    bytecode::Bytecode,
    primitives::{Address, B256, KECCAK_EMPTY, U256},
    state::AccountInfo,
};

use crate::{
    StateError,
    mv_memory::{AccountLite, Location, Lookup, Origin, ReadItem, TxIdx, Value},
    overlay::{Overlay, info, lite},
    parallel::Batch,
};

/// A balance big enough that no transaction runs out of it, shown to a lazily accounted
/// sender's own transactions in place of its real balance, which is settled at commit.
pub(crate) const MOCK_BALANCE: U256 = U256::from_limbs([0, 0, 0, 1 << 32]);

/// Why a read could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ViewError {
    /// A lower transaction will write this location and has not yet: wait for it.
    #[error("blocked on transaction {0}")]
    Blocked(TxIdx),
    /// The state source failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The view was used outside a batch.
    #[error("no batch attached")]
    Idle,
}

impl revm::database_interface::DBErrorMarker for ViewError {}

/// One incarnation's reads in the parallel engine.
pub(crate) struct Speculation {
    pub batch: Arc<Batch>,
    pub idx: TxIdx,
    /// The sender whose balance and nonce this transaction sees mocked.
    pub mocked: Option<Address>,
    /// Set when the transaction read a mocked balance (BALANCE or SELFBALANCE).
    pub read_mocked_balance: bool,
    pub reads: Vec<ReadItem>,
    /// Accounts served, as served: writes compare against them.
    pub served: Vec<(Address, Option<AccountLite>)>,
}

#[derive(Default)]
pub(crate) enum StateView {
    #[default]
    Idle,
    Sequential(Box<Overlay>),
    Parallel(Box<Speculation>),
}

impl StateView {
    /// Called by the BALANCE and SELFBALANCE instructions.
    pub(crate) fn note_balance_read(&mut self, address: Address) {
        if let Self::Parallel(s) = self
            && s.mocked == Some(address)
        {
            s.read_mocked_balance = true;
        }
    }
}

impl Speculation {
    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, ViewError> {
        let batch = &*self.batch;
        if self.mocked == Some(address) {
            let base = batch.base.basic(address)?;
            let nonce = batch.txs[self.idx].nonce;
            let code_hash = base.as_ref().map_or(KECCAK_EMPTY, |i| i.code_hash);
            let mock = AccountLite { balance: MOCK_BALANCE, nonce, code_hash };
            self.served.push((address, Some(mock)));
            return Ok(Some(info(&mock, base.and_then(|i| i.code))));
        }
        if batch.lazy.contains(&address) {
            let value = batch.lazy_value(address, self.idx).map_err(ViewError::Blocked)??;
            self.reads.push(ReadItem::Lazy(address, value));
            self.served.push((address, value));
            return Ok(value.map(|v| info(&v, batch.code(v.code_hash).ok())));
        }
        let location = Location::Basic(address);
        match batch.mv.read(&location, self.idx) {
            Lookup::Blocked(writer) => Err(ViewError::Blocked(writer)),
            Lookup::Found(origin, Value::Basic(value)) => {
                self.reads.push(ReadItem::Plain(location, origin));
                self.served.push((address, value));
                Ok(value.map(|v| info(&v, batch.code(v.code_hash).ok())))
            }
            Lookup::Found(..) => Err(ViewError::State(StateError(format!("{address} holds a lazy value")))),
            Lookup::Base => {
                let value = batch.base.basic(address)?;
                self.reads.push(ReadItem::Plain(location, Origin::Base));
                self.served.push((address, value.as_ref().map(lite)));
                Ok(value)
            }
        }
    }

    fn storage(&mut self, address: Address, slot: U256) -> Result<U256, ViewError> {
        let location = Location::Storage(address, slot);
        match self.batch.mv.read(&location, self.idx) {
            Lookup::Blocked(writer) => Err(ViewError::Blocked(writer)),
            Lookup::Found(origin, Value::Storage(value)) => {
                self.reads.push(ReadItem::Plain(location, origin));
                Ok(value)
            }
            Lookup::Found(..) => Err(ViewError::State(StateError(format!("slot {slot} of {address} is not storage")))),
            Lookup::Base => {
                let value = self.batch.base.storage(address, slot)?;
                self.reads.push(ReadItem::Plain(location, Origin::Base));
                Ok(value)
            }
        }
    }
}

impl Database for StateView {
    type Error = ViewError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, ViewError> {
        match self {
            Self::Sequential(overlay) => Ok(overlay.basic_recorded(address)?),
            Self::Parallel(s) => s.basic(address),
            Self::Idle => Err(ViewError::Idle),
        }
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, ViewError> {
        match self {
            Self::Sequential(overlay) => Ok(overlay.code_by_hash(code_hash)?),
            Self::Parallel(s) => Ok(s.batch.code(code_hash)?),
            Self::Idle => Err(ViewError::Idle),
        }
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, ViewError> {
        match self {
            Self::Sequential(overlay) => Ok(overlay.storage(address, index)?),
            Self::Parallel(s) => s.storage(address, index),
            Self::Idle => Err(ViewError::Idle),
        }
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, ViewError> {
        match self {
            Self::Sequential(overlay) => Ok(overlay.base.block_hash(number)?),
            Self::Parallel(s) => Ok(s.batch.base.block_hash(number)?),
            Self::Idle => Err(ViewError::Idle),
        }
    }
}
