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
    overlay::{Overlay, info},
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
    /// The running transaction's nonce.
    pub nonce: u64,
    /// The sender whose balance and nonce this transaction sees mocked.
    pub mocked: Option<Address>,
    /// Set when the transaction read a mocked balance (BALANCE or SELFBALANCE).
    pub read_mocked_balance: bool,
    pub reads: Vec<ReadItem>,
    /// Per account whose storage this incarnation read: the transaction below that last
    /// cleared it, if any.
    pub cleared: Vec<(Address, Option<TxIdx>)>,
    /// The worker's own copies of code.
    pub codes: CodeCache,
}

/// One worker's copies of the code it has run, by hash. Each worker clones its own
/// `Bytecode` for every account it loads; were the copy shared, the two cores would
/// trade its reference count's cache line on every transaction. Code is named by its
/// hash, so the cache outlives batches.
#[derive(Default)]
pub(crate) struct CodeCache(rustc_hash::FxHashMap<B256, Bytecode>);

impl CodeCache {
    /// Kept to a bound: a worker meets few contracts, but a chain has many.
    const MAX: usize = 4096;

    /// Code by hash: the worker's copy, made from the batch's on first use.
    fn get(&mut self, batch: &Batch, hash: B256) -> Result<Bytecode, StateError> {
        if hash == KECCAK_EMPTY {
            return Ok(Bytecode::default());
        }
        if let Some(code) = self.0.get(&hash) {
            return Ok(code.clone());
        }
        let shared = batch.code(hash)?;
        // A copy analysed afresh; code that does not decode again (it cannot, unless the
        // source served something odd) is used as served.
        let bytes = revm::primitives::Bytes::copy_from_slice(shared.original_byte_slice());
        let own = match Bytecode::new_raw_checked(bytes) {
            Ok(own) if own.kind() == shared.kind() => own,
            _ => shared,
        };
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        self.0.insert(hash, own.clone());
        Ok(own)
    }
}

#[derive(Default)]
pub(crate) enum StateView {
    #[default]
    Idle,
    Sequential(Box<Overlay>),
    Parallel(Box<Speculation>),
    /// Sequential over an overlay, noting every location read: a worker of split
    /// execution, whose results are kept only if nothing it read changed.
    Recording(Box<Recording>),
}

/// An overlay and the locations read through it since the last take.
pub(crate) struct Recording {
    pub overlay: Overlay,
    pub reads: Vec<Location>,
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
    /// The account as revm wants it, with code from the worker's own copies.
    fn serve(&mut self, value: Option<AccountLite>) -> Result<Option<AccountInfo>, ViewError> {
        let Some(v) = value else { return Ok(None) };
        let code = if v.code_hash == KECCAK_EMPTY { None } else { Some(self.codes.get(&self.batch, v.code_hash)?) };
        Ok(Some(info(&v, code)))
    }

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, ViewError> {
        let batch = &*self.batch;
        if self.mocked == Some(address) {
            let nonce = self.nonce;
            let code_hash = batch.base.account(address)?.map_or(KECCAK_EMPTY, |i| i.code_hash);
            return self.serve(Some(AccountLite { balance: MOCK_BALANCE, nonce, code_hash }));
        }
        if batch.lazy.contains(&address) {
            let value = batch.lazy_value(address, self.idx).map_err(ViewError::Blocked)??;
            self.reads.push(ReadItem::Lazy(address, value));
            return self.serve(value);
        }
        let location = Location::Basic(address);
        match batch.mv.read(&location, self.idx) {
            Lookup::Blocked(writer) => Err(ViewError::Blocked(writer)),
            Lookup::Found(origin, Value::Basic(value)) => {
                self.reads.push(ReadItem::Plain(location, origin));
                self.serve(value)
            }
            Lookup::Found(..) => Err(ViewError::State(StateError(format!("{address} holds a lazy value")))),
            Lookup::Base => {
                let value = batch.base.account(address)?;
                self.reads.push(ReadItem::Plain(location, Origin::Base));
                self.serve(value)
            }
        }
    }

    fn storage(&mut self, address: Address, slot: U256) -> Result<U256, ViewError> {
        let location = Location::Storage(address, slot);
        let written = match self.batch.mv.read(&location, self.idx) {
            Lookup::Blocked(writer) => return Err(ViewError::Blocked(writer)),
            Lookup::Found(Origin::Tx(writer, incarnation), Value::Storage(value)) => Some((writer, incarnation, value)),
            Lookup::Found(..) => {
                return Err(ViewError::State(StateError(format!("slot {slot} of {address} is not storage"))));
            }
            Lookup::Base => None,
        };
        let cleared_by = self.cleared_by(address)?;
        match written {
            Some((writer, incarnation, value)) => {
                self.reads.push(ReadItem::Plain(location, Origin::Tx(writer, incarnation)));
                // Written, then cleared by a later transaction (the writer's own clearing
                // came before its writes).
                Ok(if cleared_by.is_some_and(|c| c > writer) { U256::ZERO } else { value })
            }
            None => {
                self.reads.push(ReadItem::Plain(location, Origin::Base));
                if cleared_by.is_some() { Ok(U256::ZERO) } else { Ok(self.batch.base.storage(address, slot)?) }
            }
        }
    }

    /// The last transaction below this one that cleared `address`'s storage. Read once
    /// per incarnation and recorded for validation: every slot of the account this
    /// incarnation reads is answered against the same clearing.
    fn cleared_by(&mut self, address: Address) -> Result<Option<TxIdx>, ViewError> {
        if let Some((_, seen)) = self.cleared.iter().find(|(a, _)| *a == address) {
            return Ok(*seen);
        }
        let location = Location::Cleared(address);
        let (origin, seen) = match self.batch.mv.read(&location, self.idx) {
            Lookup::Blocked(writer) => return Err(ViewError::Blocked(writer)),
            Lookup::Found(origin @ Origin::Tx(writer, _), _) => (origin, Some(writer)),
            Lookup::Found(Origin::Base, _) | Lookup::Base => (Origin::Base, None),
        };
        self.reads.push(ReadItem::Plain(location, origin));
        self.cleared.push((address, seen));
        Ok(seen)
    }
}

impl Database for StateView {
    type Error = ViewError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, ViewError> {
        match self {
            Self::Sequential(overlay) => Ok(overlay.basic(address)?),
            Self::Parallel(s) => s.basic(address),
            Self::Recording(r) => {
                r.reads.push(Location::Basic(address));
                Ok(r.overlay.basic(address)?)
            }
            Self::Idle => Err(ViewError::Idle),
        }
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, ViewError> {
        match self {
            Self::Sequential(overlay) => Ok(overlay.code_by_hash(code_hash)?),
            Self::Recording(r) => Ok(r.overlay.code_by_hash(code_hash)?),
            Self::Parallel(s) => Ok(s.codes.get(&s.batch, code_hash)?),
            Self::Idle => Err(ViewError::Idle),
        }
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, ViewError> {
        match self {
            Self::Sequential(overlay) => Ok(overlay.storage(address, index)?),
            Self::Recording(r) => {
                r.reads.push(Location::Storage(address, index));
                Ok(r.overlay.storage(address, index)?)
            }
            Self::Parallel(s) => s.storage(address, index),
            Self::Idle => Err(ViewError::Idle),
        }
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, ViewError> {
        match self {
            Self::Sequential(overlay) => Ok(overlay.base.block_hash(number)?),
            Self::Recording(r) => Ok(r.overlay.base.block_hash(number)?),
            Self::Parallel(s) => Ok(s.batch.base.block_hash(number)?),
            Self::Idle => Err(ViewError::Idle),
        }
    }
}
