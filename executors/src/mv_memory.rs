//! Multi-version memory: for every location (an account's basic fields, a storage slot)
//! the values written by each transaction of the batch, by index and incarnation.

use std::sync::Mutex;

use dashmap::DashMap;
use revm::primitives::{Address, U256};
use rustc_hash::FxBuildHasher;
use smallvec::SmallVec;

pub(crate) type TxIdx = usize;
pub(crate) type Incarnation = usize;

/// A piece of state transactions read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Location {
    /// Balance, nonce and code hash of an account.
    Basic(Address),
    /// One storage slot.
    Storage(Address, U256),
}

/// Balance, nonce and code hash: the public [`AccountState`](crate::AccountState).
pub(crate) type AccountLite = crate::AccountState;

/// What a transaction wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// An account's fields (`None`: destroyed).
    Basic(Option<AccountLite>),
    /// A slot's value.
    Storage(U256),
    /// A change relative to whatever came before (lazy accounts: the beneficiary and
    /// senders with several transactions in the batch).
    Delta {
        add: U256,
        sub: U256,
        /// The nonce after, when the transaction set it.
        nonce: Option<u64>,
    },
}

#[derive(Debug, Clone)]
enum Entry {
    Data(Incarnation, Value),
    /// The writer is being re-executed: whoever reads this must wait for it.
    Estimate,
}

/// Where a read value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The state before the batch.
    Base,
    /// A lower transaction's incarnation.
    Tx(TxIdx, Incarnation),
}

/// One read, kept for validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadItem {
    /// A plain location and where its value came from.
    Plain(Location, Origin),
    /// A lazy account read in full: the value seen, re-derived on validation.
    Lazy(Address, Option<AccountLite>),
}

/// The result of looking a location up below a transaction.
pub(crate) enum Lookup {
    Found(Origin, Value),
    Base,
    Blocked(TxIdx),
}

/// A lazy account below a transaction: a starting point and the deltas on top.
#[derive(Default)]
pub(crate) struct LazySum {
    /// An absolute value written below, or `None` to start from the base state.
    pub start: Option<Option<AccountLite>>,
    pub add: U256,
    pub sub: U256,
    pub nonce: Option<u64>,
}

impl LazySum {
    /// Takes in the next value going down; true once an absolute value ends the walk.
    pub(crate) fn absorb(&mut self, value: &Value) -> bool {
        match value {
            Value::Delta { add, sub, nonce } => {
                self.add += *add;
                self.sub += *sub;
                if self.nonce.is_none() {
                    self.nonce = *nonce;
                }
                false
            }
            Value::Basic(info) => {
                self.start = Some(*info);
                true
            }
            Value::Storage(_) => false,
        }
    }
}

/// Per transaction: the locations its last incarnation wrote, and what it read.
#[derive(Debug, Default)]
pub(crate) struct Footprint {
    pub writes: Vec<Location>,
    pub reads: Vec<ReadItem>,
}

/// The versions of one location, sorted by writer. Most locations have one writer, so
/// the first lives inline.
#[derive(Debug, Default)]
struct Versions(SmallVec<[(TxIdx, Entry); 1]>);

impl Versions {
    /// The newest version below `idx`.
    fn below(&self, idx: TxIdx) -> Option<(TxIdx, &Entry)> {
        self.0.iter().rev().find(|(writer, _)| *writer < idx).map(|(w, e)| (*w, e))
    }

    /// Versions below `idx`, newest first.
    fn all_below(&self, idx: TxIdx) -> impl Iterator<Item = (TxIdx, &Entry)> {
        self.0.iter().rev().filter(move |(writer, _)| *writer < idx).map(|(w, e)| (*w, e))
    }

    fn get(&self, idx: TxIdx) -> Option<&Entry> {
        self.0.binary_search_by_key(&idx, |(w, _)| *w).ok().map(|at| &self.0[at].1)
    }

    fn insert(&mut self, idx: TxIdx, entry: Entry) {
        match self.0.binary_search_by_key(&idx, |(w, _)| *w) {
            Ok(at) => self.0[at].1 = entry,
            Err(at) => self.0.insert(at, (idx, entry)),
        }
    }

    fn remove(&mut self, idx: TxIdx) {
        if let Ok(at) = self.0.binary_search_by_key(&idx, |(w, _)| *w) {
            self.0.remove(at);
        }
    }
}

/// The multi-version store of one batch.
pub(crate) struct MvMemory {
    data: DashMap<Location, Versions, FxBuildHasher>,
    footprints: Vec<Mutex<Footprint>>,
}

impl MvMemory {
    pub(crate) fn new(txs: usize) -> Self {
        Self {
            data: DashMap::with_capacity_and_hasher(txs * 4, FxBuildHasher),
            footprints: (0..txs).map(|_| Mutex::new(Footprint::default())).collect(),
        }
    }

    /// Marks `location` as about to be written by `idx` (predicted writers, lazy accounts).
    pub(crate) fn seed_estimate(&self, location: Location, idx: TxIdx) {
        self.data.entry(location).or_default().insert(idx, Entry::Estimate);
        if let Ok(mut fp) = self.footprints[idx].lock()
            && !fp.writes.contains(&location)
        {
            fp.writes.push(location);
        }
    }

    /// The newest value below `idx`.
    pub(crate) fn read(&self, location: &Location, idx: TxIdx) -> Lookup {
        let Some(entries) = self.data.get(location) else { return Lookup::Base };
        match entries.below(idx) {
            None => Lookup::Base,
            Some((writer, Entry::Estimate)) => Lookup::Blocked(writer),
            Some((writer, Entry::Data(inc, value))) => Lookup::Found(Origin::Tx(writer, *inc), value.clone()),
        }
    }

    /// The entry `idx` itself wrote at `location`: `Err` for an estimate.
    pub(crate) fn entry_at(&self, location: &Location, idx: TxIdx) -> Option<Result<Value, ()>> {
        let entries = self.data.get(location)?;
        match entries.get(idx)? {
            Entry::Estimate => Some(Err(())),
            Entry::Data(_, value) => Some(Ok(value.clone())),
        }
    }

    /// A lazy account below `idx`: deltas summed down to an absolute value or the base.
    pub(crate) fn read_lazy(&self, address: Address, idx: TxIdx) -> Result<LazySum, TxIdx> {
        let mut sum = LazySum::default();
        let Some(entries) = self.data.get(&Location::Basic(address)) else { return Ok(sum) };
        for (writer, entry) in entries.all_below(idx) {
            match entry {
                Entry::Estimate => return Err(writer),
                Entry::Data(_, value) if sum.absorb(value) => break,
                Entry::Data(..) => {}
            }
        }
        Ok(sum)
    }

    /// Stores an incarnation's writes and reads; says whether it wrote a location its
    /// previous incarnation did not (then higher transactions need validating again).
    pub(crate) fn record(
        &self,
        idx: TxIdx,
        incarnation: Incarnation,
        writes: Vec<(Location, Value)>,
        reads: &mut Vec<ReadItem>,
    ) -> bool {
        let Ok(mut fp) = self.footprints[idx].lock() else { return true };
        let mut wrote_new = false;
        for (location, value) in &writes {
            if !fp.writes.contains(location) {
                wrote_new = true;
            }
            self.data.entry(*location).or_default().insert(idx, Entry::Data(incarnation, value.clone()));
        }
        for old in fp.writes.iter().filter(|old| !writes.iter().any(|(l, _)| l == *old)) {
            if let Some(mut entries) = self.data.get_mut(old) {
                entries.remove(idx);
            }
        }
        fp.writes.clear();
        fp.writes.extend(writes.into_iter().map(|(l, _)| l));
        // Swap buffers: the worker keeps the old allocation for its next run.
        std::mem::swap(&mut fp.reads, reads);
        reads.clear();
        wrote_new
    }

    /// Whether everything `idx` read would still read the same. `lazy_value` re-derives
    /// a lazy account's full value.
    pub(crate) fn validate(&self, idx: TxIdx, lazy_value: impl Fn(Address) -> Option<Option<AccountLite>>) -> bool {
        let Ok(fp) = self.footprints[idx].lock() else { return false };
        fp.reads.iter().all(|read| match read {
            ReadItem::Plain(location, origin) => match self.read(location, idx) {
                Lookup::Found(now, _) => now == *origin,
                Lookup::Base => *origin == Origin::Base,
                Lookup::Blocked(_) => false,
            },
            ReadItem::Lazy(address, seen) => lazy_value(*address).is_some_and(|now| now == *seen),
        })
    }

    /// An aborted incarnation's writes become estimates, so readers wait for the rerun.
    pub(crate) fn convert_writes_to_estimates(&self, idx: TxIdx) {
        let Ok(fp) = self.footprints[idx].lock() else { return };
        for location in &fp.writes {
            if let Some(mut entries) = self.data.get_mut(location) {
                entries.insert(idx, Entry::Estimate);
            }
        }
    }
}
