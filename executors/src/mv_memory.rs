//! Multi-version memory: for every location (an account's basic fields, a storage slot)
//! the values written by each transaction of the batch, by index and incarnation.

use std::{
    hash::BuildHasher,
    sync::{
        Mutex, RwLock,
        atomic::{AtomicU32, Ordering},
    },
};

use hashbrown::{HashTable, hash_table::Entry as Entry_};
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
    /// All of an account's storage, cleared by its destruction or creation: a slot read
    /// below a clearing and above the slot's last writer (or the base) is zero.
    Cleared(Address),
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
    /// The account's storage was cleared.
    Cleared,
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
            Value::Storage(_) | Value::Cleared => false,
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
pub(crate) struct Versions(SmallVec<[(TxIdx, Entry); 1]>);

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

/// Shards of the store: each takes a lock, so two workers meet on one only when their
/// locations hash together.
const SHARDS: usize = 256;

/// One shard, on cache lines of its own.
#[repr(align(64))]
#[derive(Default)]
struct Shard(RwLock<HashTable<(Location, Versions)>>);

/// A location with its hash, computed once for the shard, the table and the filter.
#[derive(Clone, Copy)]
struct Key<'a> {
    location: &'a Location,
    hash: u64,
}

impl<'a> Key<'a> {
    fn new(location: &'a Location) -> Self {
        Self { location, hash: FxBuildHasher.hash_one(location) }
    }
    fn shard(self) -> usize {
        (self.hash >> 32) as usize % SHARDS
    }
    fn slot(self, filter: usize) -> usize {
        (self.hash >> 44) as usize % filter
    }
}

fn hash_of(entry: &(Location, Versions)) -> u64 {
    FxBuildHasher.hash_one(entry.0)
}

/// The multi-version store of one batch. Kept by the pool and cleared between batches,
/// so that its tables are allocated once.
pub(crate) struct MvMemory {
    shards: Box<[Shard]>,
    /// Per bucket of location hashes: the lowest transaction that has written a location
    /// hashing there. A read at or below it cannot find a version, so it goes straight
    /// to the state before the batch: most reads, in batches with few conflicts. A
    /// writer lowers it before its version is visible, so the shortcut never misses one.
    lowest_writer: Box<[AtomicU32]>,
    footprints: Vec<Mutex<Footprint>>,
    /// Nothing written since the last clear.
    clean: bool,
}

impl Default for MvMemory {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            lowest_writer: Box::new([]),
            footprints: Vec::new(),
            clean: true,
        }
    }
}

impl MvMemory {
    /// Empties it, keeping its tables' room (done off the caller's path, after a batch).
    pub(crate) fn clear(&mut self) {
        for bucket in self.lowest_writer.iter_mut() {
            *bucket.get_mut() = u32::MAX;
        }
        for shard in self.shards.iter_mut() {
            shard.0.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        }
        for fp in &mut self.footprints {
            let fp = fp.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
            fp.writes.clear();
            fp.reads.clear();
        }
        self.clean = true;
    }

    /// Ready for a batch of `txs` transactions: empty, with room.
    pub(crate) fn prepare(&mut self, txs: usize) {
        if !self.clean {
            self.clear();
        }
        self.clean = false;
        // About 16 buckets per transaction keeps false "maybe written" answers rare.
        let filter = (txs * 16).next_power_of_two().clamp(1 << 12, 1 << 20);
        if self.lowest_writer.len() != filter {
            self.lowest_writer = (0..filter).map(|_| AtomicU32::new(u32::MAX)).collect();
        }
        for shard in self.shards.iter_mut() {
            let table = shard.0.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
            table.reserve((txs * 4).div_ceil(SHARDS), hash_of);
        }
        self.footprints.truncate(txs);
        self.footprints.resize_with(txs, Default::default);
    }

    fn shard(&self, key: Key<'_>) -> std::sync::RwLockReadGuard<'_, HashTable<(Location, Versions)>> {
        self.shards[key.shard()].0.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn shard_mut(&self, key: Key<'_>) -> std::sync::RwLockWriteGuard<'_, HashTable<(Location, Versions)>> {
        self.shards[key.shard()].0.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a transaction below `idx` may have written `key` (false: it surely has not).
    fn maybe_written_below(&self, key: Key<'_>, idx: TxIdx) -> bool {
        let bucket = &self.lowest_writer[key.slot(self.lowest_writer.len())];
        (bucket.load(Ordering::SeqCst) as usize) < idx
    }

    /// Marks `idx` as a writer of `key` before its version is stored.
    fn note_writer(&self, key: Key<'_>, idx: TxIdx) {
        let bucket = &self.lowest_writer[key.slot(self.lowest_writer.len())];
        bucket.fetch_min(idx as u32, Ordering::SeqCst);
    }

    /// Stores `entry` as `idx`'s version of `key`.
    fn put(&self, key: Key<'_>, idx: TxIdx, entry: Entry) {
        self.note_writer(key, idx);
        let mut table = self.shard_mut(key);
        match table.entry(key.hash, |(l, _)| l == key.location, hash_of) {
            Entry_::Occupied(mut found) => found.get_mut().1.insert(idx, entry),
            Entry_::Vacant(vacant) => {
                let mut versions = Versions::default();
                versions.insert(idx, entry);
                vacant.insert((*key.location, versions));
            }
        }
    }

    /// Runs `f` on the versions of `location`, if any transaction wrote it.
    fn with<R>(&self, key: Key<'_>, f: impl FnOnce(&Versions) -> R) -> Option<R> {
        let table = self.shard(key);
        table.find(key.hash, |(l, _)| l == key.location).map(|(_, versions)| f(versions))
    }

    /// Marks `location` as about to be written by `idx` (predicted writers, lazy accounts).
    pub(crate) fn seed_estimate(&self, location: Location, idx: TxIdx) {
        self.put(Key::new(&location), idx, Entry::Estimate);
        if let Ok(mut fp) = self.footprints[idx].lock()
            && !fp.writes.contains(&location)
        {
            fp.writes.push(location);
        }
    }

    /// The newest value below `idx`.
    pub(crate) fn read(&self, location: &Location, idx: TxIdx) -> Lookup {
        let key = Key::new(location);
        if !self.maybe_written_below(key, idx) {
            return Lookup::Base;
        }
        self.with(key, |versions| match versions.below(idx) {
            None => Lookup::Base,
            Some((writer, Entry::Estimate)) => Lookup::Blocked(writer),
            Some((writer, Entry::Data(inc, value))) => Lookup::Found(Origin::Tx(writer, *inc), value.clone()),
        })
        .unwrap_or(Lookup::Base)
    }

    /// The entry `idx` itself wrote at `location`: `Err` for an estimate.
    pub(crate) fn entry_at(&self, location: &Location, idx: TxIdx) -> Option<Result<Value, ()>> {
        self.with(Key::new(location), |versions| match versions.get(idx)? {
            Entry::Estimate => Some(Err(())),
            Entry::Data(_, value) => Some(Ok(value.clone())),
        })
        .flatten()
    }

    /// A lazy account below `idx`: deltas summed down to an absolute value or the base.
    pub(crate) fn read_lazy(&self, address: Address, idx: TxIdx) -> Result<LazySum, TxIdx> {
        let location = Location::Basic(address);
        let key = Key::new(&location);
        if !self.maybe_written_below(key, idx) {
            return Ok(LazySum::default());
        }
        self.with(key, |versions| {
            let mut sum = LazySum::default();
            for (writer, entry) in versions.all_below(idx) {
                match entry {
                    Entry::Estimate => return Err(writer),
                    Entry::Data(_, value) if sum.absorb(value) => break,
                    Entry::Data(..) => {}
                }
            }
            Ok(sum)
        })
        .unwrap_or_else(|| Ok(LazySum::default()))
    }

    /// Stores an incarnation's writes and reads (taking both buffers' contents); says
    /// whether it wrote a location its previous incarnation did not (then higher
    /// transactions need validating again).
    pub(crate) fn record(
        &self,
        idx: TxIdx,
        incarnation: Incarnation,
        writes: &mut Vec<(Location, Value)>,
        reads: &mut Vec<ReadItem>,
    ) -> bool {
        let Ok(mut fp) = self.footprints[idx].lock() else { return true };
        let mut wrote_new = false;
        for (location, value) in writes.iter() {
            if !fp.writes.contains(location) {
                wrote_new = true;
            }
            self.put(Key::new(location), idx, Entry::Data(incarnation, value.clone()));
        }
        for old in fp.writes.iter().filter(|old| !writes.iter().any(|(l, _)| l == *old)) {
            let key = Key::new(old);
            let mut table = self.shard_mut(key);
            if let Some((_, versions)) = table.find_mut(key.hash, |(l, _)| l == old) {
                versions.remove(idx);
            }
        }
        fp.writes.clear();
        fp.writes.extend(writes.drain(..).map(|(l, _)| l));
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
            let key = Key::new(location);
            let mut table = self.shard_mut(key);
            if let Some((_, versions)) = table.find_mut(key.hash, |(l, _)| l == location) {
                versions.insert(idx, Entry::Estimate);
            }
        }
    }
}
