//! The collaborative Block-STM scheduler (Gelashvili et al., 2022): workers take the
//! lowest pending execution or validation task; a transaction that reads a location an
//! unfinished lower one will write waits on it instead of spinning; validation failures
//! abort and re-run the transaction with a new incarnation.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use crate::mv_memory::{Incarnation, TxIdx};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    ReadyToExecute,
    Executing,
    Executed,
    Aborting,
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

fn chaos_yield() {
    use std::hash::{BuildHasher, RandomState};
    let roll = RandomState::new().hash_one(std::thread::current().id()) % 4;
    for _ in 0..roll {
        std::thread::yield_now();
    }
}

pub(crate) struct Scheduler {
    size: usize,
    execution_idx: AtomicUsize,
    validation_idx: AtomicUsize,
    decrease_cnt: AtomicUsize,
    active_tasks: AtomicUsize,
    done: AtomicBool,
    status: Vec<Mutex<(Incarnation, Status)>>,
    dependents: Vec<Mutex<Vec<TxIdx>>>,
}

impl Scheduler {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            size,
            execution_idx: AtomicUsize::new(0),
            validation_idx: AtomicUsize::new(0),
            decrease_cnt: AtomicUsize::new(0),
            active_tasks: AtomicUsize::new(0),
            done: AtomicBool::new(size == 0),
            status: (0..size).map(|_| Mutex::new((0, Status::ReadyToExecute))).collect(),
            dependents: (0..size).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    pub(crate) fn done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Stops every worker (a fatal error).
    pub(crate) fn halt(&self) {
        self.done.store(true, Ordering::Release);
    }

    fn status(&self, idx: TxIdx) -> std::sync::MutexGuard<'_, (Incarnation, Status)> {
        // A poisoned lock means a worker panicked mid-update; its data is still the
        // last consistent write, and the batch result is checked at commit anyway.
        self.status[idx].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
            let mut status = self.status(idx);
            if status.1 == Status::ReadyToExecute {
                status.1 = Status::Executing;
                return Some(Version { idx, incarnation: status.0 });
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
            let status = *self.status(idx);
            if status.1 == Status::Executed {
                return Some(Version { idx, incarnation: status.0 });
            }
        }
        self.active_tasks.fetch_sub(1, Ordering::SeqCst);
        None
    }

    /// The next task, validations first when they lag behind executions.
    pub(crate) fn next_task(&self) -> Option<Task> {
        if CHAOS.load(Ordering::Relaxed) {
            chaos_yield();
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
        if self.status(blocking).1 == Status::Executed {
            return false;
        }
        self.status(idx).1 = Status::Aborting;
        dependents.push(idx);
        self.active_tasks.fetch_sub(1, Ordering::SeqCst);
        true
    }

    fn set_ready(&self, idx: TxIdx) {
        let mut status = self.status(idx);
        *status = (status.0 + 1, Status::ReadyToExecute);
    }

    pub(crate) fn finish_execution(&self, idx: TxIdx, incarnation: Incarnation, wrote_new: bool) -> Option<Task> {
        self.status(idx).1 = Status::Executed;
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

    /// Whether `idx`'s latest incarnation has finished executing (and not been aborted).
    pub(crate) fn is_executed(&self, idx: TxIdx) -> bool {
        self.status(idx).1 == Status::Executed
    }

    pub(crate) fn try_validation_abort(&self, idx: TxIdx, incarnation: Incarnation) -> bool {
        let mut status = self.status(idx);
        if *status == (incarnation, Status::Executed) {
            status.1 = Status::Aborting;
            return true;
        }
        false
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
