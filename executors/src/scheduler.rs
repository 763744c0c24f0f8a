//! The collaborative Block-STM scheduler (Gelashvili et al., 2022): workers take the
//! lowest pending execution or validation task; a transaction that reads a location an
//! unfinished lower one will write waits on it instead of spinning; validation failures
//! abort and re-run the transaction with a new incarnation.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};

use crate::mv_memory::{Incarnation, TxIdx};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    ReadyToExecute = 0,
    Executing = 1,
    Executed = 2,
    Aborting = 3,
}

/// A transaction's incarnation and status in one word, so that workers read and move
/// it with single atomic operations instead of a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word(u64);

impl Word {
    fn new(incarnation: Incarnation, status: Status) -> Self {
        Self((incarnation as u64) << 2 | status as u64)
    }
    fn incarnation(self) -> Incarnation {
        (self.0 >> 2) as Incarnation
    }
    fn status(self) -> Status {
        match self.0 & 3 {
            0 => Status::ReadyToExecute,
            1 => Status::Executing,
            2 => Status::Executed,
            _ => Status::Aborting,
        }
    }
}

/// A value on a cache line of its own: the counters every worker hits, and each
/// transaction's status word, must not share lines (two cores would trade them).
#[repr(align(64))]
#[derive(Default)]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A transaction's version: its index and incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version {
    pub idx: TxIdx,
    pub incarnation: Incarnation,
}

/// Work for a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Task {
    Execute(Version),
    Validate(Version),
}

/// When set, workers yield at random points to shake out races (tests only).
pub(crate) static CHAOS: AtomicBool = AtomicBool::new(false);

pub(crate) fn chaos_yield() {
    use std::hash::{BuildHasher, RandomState};
    let roll = RandomState::new().hash_one(std::thread::current().id()) % 4;
    for _ in 0..roll {
        std::thread::yield_now();
    }
}

pub(crate) struct Scheduler {
    size: usize,
    execution_idx: Padded<AtomicUsize>,
    validation_idx: Padded<AtomicUsize>,
    decrease_cnt: Padded<AtomicUsize>,
    active_tasks: Padded<AtomicUsize>,
    done: Padded<AtomicBool>,
    status: Vec<Padded<AtomicU64>>,
    dependents: Vec<Mutex<Vec<TxIdx>>>,
    /// Transactions to execute before the in-order sweep reaches them (long ones that
    /// would otherwise start last and run alone), and how many were handed out.
    heads: Vec<TxIdx>,
    heads_taken: Padded<AtomicUsize>,
}

impl Scheduler {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            size,
            execution_idx: Padded::default(),
            validation_idx: Padded::default(),
            decrease_cnt: Padded::default(),
            active_tasks: Padded::default(),
            done: Padded(AtomicBool::new(size == 0)),
            status: (0..size).map(|_| Padded(AtomicU64::new(Word::new(0, Status::ReadyToExecute).0))).collect(),
            dependents: (0..size).map(|_| Mutex::new(Vec::new())).collect(),
            heads: Vec::new(),
            heads_taken: Padded::default(),
        }
    }

    /// Has `heads` executed first, in that order, ahead of the in-order sweep. Any
    /// order of execution gives the same results (validation sees to that); this one
    /// only changes when each transaction starts.
    pub(crate) fn set_heads(&mut self, heads: Vec<TxIdx>) {
        self.heads = heads.into_iter().filter(|idx| *idx < self.size).collect();
    }

    pub(crate) fn done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Stops every worker (a fatal error).
    pub(crate) fn halt(&self) {
        self.done.store(true, Ordering::Release);
    }

    fn word(&self, idx: TxIdx) -> Word {
        Word(self.status[idx].load(Ordering::SeqCst))
    }

    /// Sets a status only its owner moves (the worker running or aborting `idx`).
    fn set(&self, idx: TxIdx, word: Word) {
        self.status[idx].store(word.0, Ordering::SeqCst);
    }

    /// Moves `idx` from `from` to `to` if nobody moved it first.
    fn transition(&self, idx: TxIdx, from: Word, to: Word) -> bool {
        self.status[idx].compare_exchange(from.0, to.0, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    fn decrease_execution_idx(&self, target: TxIdx) {
        self.execution_idx.fetch_min(target, Ordering::SeqCst);
        self.decrease_cnt.fetch_add(1, Ordering::SeqCst);
    }

    fn decrease_validation_idx(&self, target: TxIdx) {
        self.validation_idx.fetch_min(target, Ordering::SeqCst);
        self.decrease_cnt.fetch_add(1, Ordering::SeqCst);
    }

    fn check_done(&self) {
        let observed = self.decrease_cnt.load(Ordering::SeqCst);
        if self.execution_idx.load(Ordering::SeqCst).min(self.validation_idx.load(Ordering::SeqCst)) >= self.size
            && self.active_tasks.load(Ordering::SeqCst) == 0
            && observed == self.decrease_cnt.load(Ordering::SeqCst)
        {
            self.done.store(true, Ordering::Release);
        }
    }

    fn try_incarnate(&self, idx: TxIdx) -> Option<Version> {
        if idx < self.size {
            let word = self.word(idx);
            if word.status() == Status::ReadyToExecute
                && self.transition(idx, word, Word::new(word.incarnation(), Status::Executing))
            {
                return Some(Version { idx, incarnation: word.incarnation() });
            }
        }
        self.active_tasks.fetch_sub(1, Ordering::SeqCst);
        None
    }

    fn next_version_to_execute(&self) -> Option<Version> {
        if self.execution_idx.load(Ordering::SeqCst) >= self.size {
            self.check_done();
            return None;
        }
        self.active_tasks.fetch_add(1, Ordering::SeqCst);
        let idx = self.execution_idx.fetch_add(1, Ordering::SeqCst);
        self.try_incarnate(idx)
    }

    fn next_version_to_validate(&self) -> Option<Version> {
        if self.validation_idx.load(Ordering::SeqCst) >= self.size {
            self.check_done();
            return None;
        }
        self.active_tasks.fetch_add(1, Ordering::SeqCst);
        let idx = self.validation_idx.fetch_add(1, Ordering::SeqCst);
        if idx < self.size {
            let word = self.word(idx);
            if word.status() == Status::Executed {
                return Some(Version { idx, incarnation: word.incarnation() });
            }
        }
        self.active_tasks.fetch_sub(1, Ordering::SeqCst);
        None
    }

    /// A head not yet handed out, if the sweep has not taken it meanwhile.
    fn next_head(&self) -> Option<Version> {
        if self.heads_taken.load(Ordering::Relaxed) >= self.heads.len() {
            return None;
        }
        let idx = *self.heads.get(self.heads_taken.fetch_add(1, Ordering::SeqCst))?;
        self.active_tasks.fetch_add(1, Ordering::SeqCst);
        self.try_incarnate(idx)
    }

    /// The next task: a head first, then validations when they lag behind executions.
    pub(crate) fn next_task(&self) -> Option<Task> {
        if CHAOS.load(Ordering::Relaxed) {
            chaos_yield();
        }
        if let Some(version) = self.next_head() {
            return Some(Task::Execute(version));
        }
        if self.validation_idx.load(Ordering::SeqCst) < self.execution_idx.load(Ordering::SeqCst) {
            self.next_version_to_validate().map(Task::Validate)
        } else {
            self.next_version_to_execute().map(Task::Execute)
        }
    }

    /// `idx` read an estimate of `blocking`: park it until `blocking` finishes. False if
    /// `blocking` finished meanwhile (then re-run `idx` at once).
    pub(crate) fn add_dependency(&self, idx: TxIdx, blocking: TxIdx) -> bool {
        let mut dependents = self.dependents[blocking].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.word(blocking).status() == Status::Executed {
            return false;
        }
        self.set(idx, Word::new(self.word(idx).incarnation(), Status::Aborting));
        dependents.push(idx);
        self.active_tasks.fetch_sub(1, Ordering::SeqCst);
        true
    }

    fn set_ready(&self, idx: TxIdx) {
        self.set(idx, Word::new(self.word(idx).incarnation() + 1, Status::ReadyToExecute));
    }

    pub(crate) fn finish_execution(&self, idx: TxIdx, incarnation: Incarnation, wrote_new: bool) -> Option<Task> {
        self.set(idx, Word::new(incarnation, Status::Executed));
        let dependents =
            std::mem::take(&mut *self.dependents[idx].lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        if let Some(min) = dependents.iter().min().copied() {
            for dep in dependents {
                self.set_ready(dep);
            }
            self.decrease_execution_idx(min);
        }
        if self.validation_idx.load(Ordering::SeqCst) > idx {
            if wrote_new {
                self.decrease_validation_idx(idx);
            } else {
                return Some(Task::Validate(Version { idx, incarnation }));
            }
        }
        self.active_tasks.fetch_sub(1, Ordering::SeqCst);
        None
    }

    /// Whether validation has been handed out past `idx` (its latest execution has been
    /// or is being validated).
    pub(crate) fn validated_past(&self, idx: TxIdx) -> bool {
        self.validation_idx.load(Ordering::SeqCst) > idx
    }

    /// How many times `idx` has been executed again after its first execution.
    pub(crate) fn incarnation(&self, idx: TxIdx) -> Incarnation {
        self.word(idx).incarnation()
    }

    /// Whether `idx`'s latest incarnation has finished executing (and not been aborted).
    pub(crate) fn is_executed(&self, idx: TxIdx) -> bool {
        self.word(idx).status() == Status::Executed
    }

    pub(crate) fn try_validation_abort(&self, idx: TxIdx, incarnation: Incarnation) -> bool {
        self.transition(idx, Word::new(incarnation, Status::Executed), Word::new(incarnation, Status::Aborting))
    }

    pub(crate) fn finish_validation(&self, idx: TxIdx, aborted: bool) -> Option<Task> {
        if aborted {
            self.set_ready(idx);
            self.decrease_validation_idx(idx + 1);
            if self.execution_idx.load(Ordering::SeqCst) > idx {
                return self.try_incarnate(idx).map(Task::Execute);
            }
        }
        self.active_tasks.fetch_sub(1, Ordering::SeqCst);
        None
    }
}
