//! Split execution: the batch cut into consecutive pieces, one per worker. The calling
//! thread runs the first piece sequentially on committed state. Each other worker runs
//! its piece sequentially too, but on the state before the batch, noting every location
//! each transaction reads. The caller then takes the workers' results in batch order and
//! keeps a transaction's result when nothing it read was committed by anyone outside its
//! piece (nor by a transaction of its piece that had to run again); it runs the others
//! again itself, on committed state. Neither side idles while the other has work it
//! could share: the caller takes over a piece's transactions that its worker has not
//! started, and a worker done with its piece carves a new one off the end of what the
//! caller has not yet run.
//!
//! A transaction's execution is a function of what it reads, so a result kept is the
//! one sequential execution gives, and re-running the others makes the whole exactly
//! sequential. The cost per transaction is sequential execution's plus a recorded read
//! and, on the caller, a lookup per read: far below the multi-version engine's, which
//! is what cheap transactions need. Conflicts cost a re-run on the caller, so a batch
//! that conflicts throughout runs at about sequential speed, not below it.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};

use revm::{context::TxEnv, primitives::U256};
use rustc_hash::FxHashSet;

use crate::{
    AccessSet, BlockContext, ExecutorError, StateSource, TxOutcome, TxStatus,
    commit::{self, Committed},
    evm::{self, WorkerEvm},
    mv_memory::Location,
    view::{Recording, StateView},
};

/// What stamps the writes of a transaction the caller ran again: they are stale to
/// every later worker's read.
const RERUN: u32 = u32::MAX;
/// A piece's `next` once the caller has taken the rest of it.
const TAKEN: usize = usize::MAX;
/// With this few transactions left in a piece, the caller takes them all rather than
/// share them with the worker.
const MIN_SHARED: usize = 4;
/// A worker carves no piece of fewer transactions than this off the caller's range.
const MIN_CARVED: usize = 2;
/// After this many of a piece's results run again, three in four or more, the worker
/// is stopped.
const STOP_AFTER: usize = 8;

/// One batch in split execution, shared by the caller and the workers.
pub(crate) struct Split {
    pub base: Arc<dyn StateSource>,
    pub ctx: BlockContext,
    pub txs: Vec<TxEnv>,
    /// Report what each transaction touched.
    pub record: bool,
    /// Time each transaction (for the pool to learn costs from).
    pub timed: bool,
    /// Expected cost of the transactions before each index (`costs` summed).
    prefix: Vec<f64>,
    /// The caller's own range: the next transaction it runs (low half) and where its
    /// range ends (high half). The caller claims each of its transactions by moving the
    /// low half; a worker carves a piece off its end by lowering the high half. One
    /// word, so that the two never both take a transaction.
    own: AtomicU64,
    /// The workers' pieces, in the order made (the first few handed out with the batch,
    /// then those carved off the caller's range).
    pieces: Mutex<Vec<Arc<Piece>>>,
    /// Set once the caller is done: workers stop.
    finished: AtomicBool,
}

/// The transactions `start..end`, run by one worker.
pub(crate) struct Piece {
    start: usize,
    end: usize,
    /// What its results' writes are stamped with when committed.
    tag: u32,
    /// The next transaction the worker may start, or [`TAKEN`]: a worker claims each
    /// one before it runs it, so that the caller can take over the rest at any point.
    next: AtomicUsize,
    /// Each transaction's result, once its worker has one.
    results: Box<[Mutex<Option<Speculated>>]>,
}

/// A worker's result for one transaction, run on the state before the batch and the
/// earlier transactions of its piece.
struct Speculated {
    /// `None` if the run failed (the caller runs it again and meets the error itself).
    outcome: Option<TxOutcome>,
    fee: U256,
    reads: Vec<Location>,
    access: Option<AccessSet>,
    /// How long the worker took to run it.
    seconds: f64,
}

impl Split {
    /// A batch of `txs` expected to cost `costs` each, cut at `cuts` (ascending, each
    /// inside the batch): the caller's range runs to the first cut, the piece of worker
    /// `w` from cut `w` to the next.
    pub(crate) fn new(
        base: Arc<dyn StateSource>,
        ctx: BlockContext,
        txs: Vec<TxEnv>,
        costs: &[f64],
        cuts: &[usize],
    ) -> Self {
        let n = txs.len();
        let mut prefix = Vec::with_capacity(n + 1);
        prefix.push(0.0);
        for cost in costs.iter().chain(std::iter::repeat(&1.0)).take(n) {
            prefix.push(prefix.last().copied().unwrap_or(0.0) + cost.max(0.0));
        }
        let pieces = cuts
            .iter()
            .zip(cuts.iter().skip(1).chain(std::iter::once(&n)))
            .enumerate()
            .map(|(w, (&start, &end))| Arc::new(Piece::new(start, end, w as u32 + 1)))
            .collect();
        let end = cuts.first().copied().unwrap_or(n);
        Self {
            base,
            ctx,
            txs,
            record: false,
            timed: false,
            prefix,
            own: AtomicU64::new(pack(0, end)),
            pieces: Mutex::new(pieces),
            finished: AtomicBool::new(false),
        }
    }

    /// How many pieces there are so far (those handed out with the batch first).
    pub(crate) fn pieces(&self) -> usize {
        self.pieces.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Piece `which` of those made so far.
    fn piece(&self, which: usize) -> Option<Arc<Piece>> {
        self.pieces.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(which).cloned()
    }

    /// The caller claims transaction `i`, the next of its own range; false once its
    /// range ends at `i`.
    fn claim_own(&self, i: usize) -> bool {
        let mut word = self.own.load(Ordering::Acquire);
        loop {
            let (_, end) = unpack(word);
            if i >= end {
                return false;
            }
            match self.own.compare_exchange_weak(word, pack(i + 1, end), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => word = now,
            }
        }
    }

    /// A new piece carved off the end of the caller's range, shared so that both
    /// finish together; `None` once too little is left.
    fn carve(&self) -> Option<Arc<Piece>> {
        let mut word = self.own.load(Ordering::Acquire);
        loop {
            if self.finished.load(Ordering::Acquire) {
                return None;
            }
            let (next, end) = unpack(word);
            // (start - next) + CHECK_SHARE * (end - start) = end - start, in costs.
            let target = (self.prefix[end] * (1.0 - CHECK_SHARE) + self.prefix[next]) / (2.0 - CHECK_SHARE);
            let start = self.prefix[..end].partition_point(|p| *p < target).max(next + 1);
            if start + MIN_CARVED > end {
                return None;
            }
            // Published under the lock the caller takes to find it: a caller that sees
            // its range end here finds the piece, however late this thread runs on.
            let mut pieces = self.pieces.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match self.own.compare_exchange(word, pack(next, start), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    let piece = Arc::new(Piece::new(start, end, pieces.len() as u32 + 1));
                    pieces.push(Arc::clone(&piece));
                    return Some(piece);
                }
                Err(now) => word = now,
            }
        }
    }

    /// The piece that starts at `start` (a carved one is published before the caller's
    /// range is seen to end there).
    fn piece_at(&self, start: usize) -> Result<Arc<Piece>, ExecutorError> {
        let pieces = self.pieces.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pieces
            .iter()
            .find(|p| p.start == start)
            .cloned()
            .ok_or_else(|| ExecutorError::Evm(format!("split batch: no piece starts at transaction {start}")))
    }
}

fn pack(next: usize, end: usize) -> u64 {
    (end as u64) << 32 | next as u64
}

fn unpack(word: u64) -> (usize, usize) {
    ((word & u64::from(u32::MAX)) as usize, (word >> 32) as usize)
}

/// Spins, yielding now and then.
fn pause(spins: u32) {
    if spins % 64 == 63 {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// What checking and committing a worker's result costs the caller, as a share of
/// running the transaction: a lookup per read and the commit.
const CHECK_SHARE: f64 = 0.1;

/// Where a batch is cut for `workers` workers when its transactions are expected to
/// cost `costs` each: the caller also checks and commits everyone else's results, so
/// its own piece is the shorter, to finish together.
pub(crate) fn cuts(costs: &[f64], workers: usize) -> Vec<usize> {
    let total: f64 = costs.iter().sum();
    if workers < 2 || costs.len() < 2 || total <= 0.0 {
        return Vec::new();
    }
    let others = (workers - 1) as f64;
    // own + CHECK_SHARE * (total - own) = (total - own) / others
    let own = total * (1.0 / others - CHECK_SHARE) / (1.0 - CHECK_SHARE + 1.0 / others);
    let each = (total - own) / others;
    let mut cuts = Vec::with_capacity(workers - 1);
    let (mut sum, mut target) = (0.0, own);
    for (i, cost) in costs.iter().enumerate() {
        if cuts.len() == workers - 1 {
            break;
        }
        if i > 0 && sum >= target {
            cuts.push(i);
            target += each;
        }
        sum += cost;
    }
    cuts
}

/// A worker's part: runs its piece on the state before the batch, publishing each
/// result, until the piece ends or the caller takes the rest; then carves new pieces off
/// the caller's range while there is room.
pub(crate) fn work(evm: &mut WorkerEvm, split: &Split, which: usize) {
    evm::prepare(evm, &split.ctx);
    let mut piece = split.piece(which);
    while let Some(current) = piece {
        run_piece(evm, split, &current);
        piece = split.carve();
    }
    evm.ctx.journaled_state.database = StateView::Idle;
}

fn run_piece(evm: &mut WorkerEvm, split: &Split, piece: &Piece) {
    let overlay = commit::overlay(Arc::clone(&split.base), piece.end - piece.start);
    evm.ctx.journaled_state.database = StateView::Recording(Box::new(Recording { overlay, reads: Vec::new() }));
    let mut i = piece.start;
    while i < piece.end {
        if crate::scheduler::CHAOS.load(Ordering::Relaxed) {
            crate::scheduler::chaos_yield();
        }
        match piece.next.compare_exchange(i, i + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {}
            // The caller took the transactions from `i` up to `ahead` itself: go on
            // from there (what this worker committed so far still stands).
            Err(ahead) if ahead != TAKEN && ahead > i => {
                i = ahead;
                continue;
            }
            Err(_) => break,
        }
        let claim = Claim { piece, i, published: false };
        let started = split.timed.then(std::time::Instant::now);
        let run = evm::run(evm, split.txs[i].clone());
        let access = split.record.then(|| commit::access_of(&run.state));
        let outcome = commit::speculative_outcome(run.result, &run.state, split.ctx.spec).ok();
        evm::recycle(evm, run.state);
        let StateView::Recording(recording) = &mut evm.ctx.journaled_state.database else { break };
        let reads = std::mem::replace(&mut recording.reads, Vec::with_capacity(16));
        if let Some(outcome) = &outcome
            && !matches!(outcome.status, TxStatus::Invalid { .. })
        {
            recording.overlay.apply(&outcome.state);
        }
        let seconds = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        claim.publish(Speculated { outcome, fee: run.fee, reads, access, seconds });
        i += 1;
    }
}

/// A transaction a worker has claimed. Left without its result published (the EVM
/// panicked), it publishes a failed one in its place and leaves the rest of the piece to
/// the caller, which would otherwise wait for it forever.
struct Claim<'a> {
    piece: &'a Piece,
    i: usize,
    published: bool,
}

impl Claim<'_> {
    fn publish(mut self, result: Speculated) {
        self.piece.put(self.i, result);
        self.published = true;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.published {
            let failed = Speculated { outcome: None, fee: U256::ZERO, reads: Vec::new(), access: None, seconds: 0.0 };
            self.piece.put(self.i, failed);
            self.piece.next.store(TAKEN, Ordering::Release);
        }
    }
}

/// The caller's part: runs its own range, then takes each worker's results in order,
/// keeping or re-running each. Returns the batch's outcomes and, per transaction,
/// whether a worker ran it and it ran again (`None`: no worker ran it).
pub(crate) fn run(evm: &mut WorkerEvm, split: &Split) -> Result<(Committed, Vec<Option<bool>>), ExecutorError> {
    evm::prepare(evm, &split.ctx);
    let mut overlay = commit::overlay(Arc::clone(&split.base), split.txs.len());
    overlay.tracking = true;
    evm.ctx.journaled_state.database = StateView::Sequential(Box::new(overlay));
    let result = take_all(evm, split);
    evm.ctx.journaled_state.database = StateView::Idle;
    // Whatever happened, no worker may go on.
    split.finished.store(true, Ordering::Release);
    if let Ok(pieces) = split.pieces.lock() {
        for piece in pieces.iter() {
            piece.next.store(TAKEN, Ordering::Release);
        }
    }
    result
}

fn take_all(evm: &mut WorkerEvm, split: &Split) -> Result<(Committed, Vec<Option<bool>>), ExecutorError> {
    let n = split.txs.len();
    // Every transaction's execution time, whoever ran it, when timed: the pool learns
    // costs from them.
    let mut committed = Committed { outcomes: Vec::with_capacity(n), access: Vec::new(), seconds: vec![0.0; n] };
    let mut ran_again = vec![None; n];
    let t0 = std::time::Instant::now();
    let mut i = 0;
    while split.claim_own(i) {
        if crate::scheduler::CHAOS.load(Ordering::Relaxed) {
            crate::scheduler::chaos_yield();
        }
        run_own(evm, split, i..i + 1, &mut committed, 0, 0)?;
        i += 1;
    }
    let (t_own, own) = (t0.elapsed(), i);
    let mut mined = 0;
    // Locations a transaction re-run had written when its worker ran it: the piece's
    // later transactions may have read those values.
    let mut poisoned: FxHashSet<Location> = FxHashSet::default();
    while i < n {
        let piece = split.piece_at(i)?;
        let tag = piece.tag;
        set_piece(evm, tag)?;
        poisoned.clear();
        let (mut stopped, mut taken, mut again) = (None, 0usize, 0usize);
        while i < piece.end {
            match piece.take(i, stopped) {
                Took::Result(Speculated { outcome: Some(outcome), fee, reads, access, seconds })
                    if fresh(evm, &reads, tag, &poisoned)? =>
                {
                    if let Some(access) = access {
                        committed.access.push(access);
                    }
                    committed.seconds[i] = seconds;
                    committed.outcomes.push(commit::commit_to_view(evm, &split.ctx, outcome, fee)?);
                    ran_again[i] = Some(false);
                    taken += 1;
                    i += 1;
                }
                Took::Result(Speculated { outcome, reads, .. }) => {
                    if tracing::enabled!(tracing::Level::TRACE) {
                        let stale: Vec<&Location> = reads
                            .iter()
                            .filter(|r| !fresh(evm, std::slice::from_ref(r), tag, &poisoned).unwrap_or(false))
                            .take(3)
                            .collect();
                        tracing::trace!(tx = i, ?stale, failed = outcome.is_none(), "split: run again");
                    }
                    run_own(evm, split, i..i + 1, &mut committed, RERUN, tag)?;
                    if let Some(outcome) = outcome {
                        poison(evm, &outcome, &mut poisoned)?;
                    }
                    ran_again[i] = Some(true);
                    (taken, again) = (taken + 1, again + 1);
                    // Mostly run again: the worker's work is lost and it slows this
                    // core down (they share caches). Stop it; the rest runs here.
                    if stopped.is_none() && again >= STOP_AFTER && again * 4 >= taken * 3 {
                        stopped = Some(piece.next.swap(TAKEN, Ordering::AcqRel));
                    }
                    i += 1;
                }
                Took::Mine(until) => {
                    mined += until - i;
                    run_own(evm, split, i..until, &mut committed, RERUN, tag)?;
                    i = until;
                }
            }
        }
    }
    tracing::debug!(?t_own, own, total = ?t0.elapsed(), mined, pieces = split.pieces(), "split caller");
    Ok((committed, ran_again))
}

/// Runs `range` on committed state, timed, stamping what it writes with `stamp` (its
/// own range's tag, or one no worker's results carry), then goes back to `tag`.
fn run_own(
    evm: &mut WorkerEvm,
    split: &Split,
    range: std::ops::Range<usize>,
    committed: &mut Committed,
    stamp: u32,
    tag: u32,
) -> Result<(), ExecutorError> {
    set_piece(evm, stamp)?;
    for i in range {
        let started = split.timed.then(std::time::Instant::now);
        let access = split.record.then_some(&mut committed.access);
        committed.outcomes.push(commit::step(evm, &split.ctx, split.txs[i].clone(), access)?);
        committed.seconds[i] = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    }
    set_piece(evm, tag)
}

/// Whether every location in `reads` still holds what the worker read.
fn fresh(evm: &WorkerEvm, reads: &[Location], tag: u32, poisoned: &FxHashSet<Location>) -> Result<bool, ExecutorError> {
    let StateView::Sequential(overlay) = &evm.ctx.journaled_state.database else {
        return Err(ExecutorError::Evm("sequential view detached".into()));
    };
    Ok(reads.iter().all(|read| !overlay.stale(read, tag) && (poisoned.is_empty() || !poisoned.contains(read))))
}

/// Adds to `poisoned` what the worker's run of a transaction run again wrote that
/// committed state no longer holds: the piece's later transactions read those values.
fn poison(evm: &WorkerEvm, speculated: &TxOutcome, poisoned: &mut FxHashSet<Location>) -> Result<(), ExecutorError> {
    let StateView::Sequential(overlay) = &evm.ctx.journaled_state.database else {
        return Err(ExecutorError::Evm("sequential view detached".into()));
    };
    for (address, account) in speculated.state.iter() {
        // Storage it cleared reads differently if the run again did not: every reader
        // of the account's storage loads the account.
        if account.clears_storage() || overlay.basic(*address)?.map(|a| crate::overlay::lite(&a)) != account.info {
            poisoned.insert(Location::Basic(*address));
        }
        for (slot, value) in &account.storage {
            if overlay.storage(*address, *slot)? != *value {
                poisoned.insert(Location::Storage(*address, *slot));
            }
        }
    }
    Ok(())
}

fn set_piece(evm: &mut WorkerEvm, tag: u32) -> Result<(), ExecutorError> {
    let StateView::Sequential(overlay) = &mut evm.ctx.journaled_state.database else {
        return Err(ExecutorError::Evm("sequential view detached".into()));
    };
    overlay.piece = tag;
    Ok(())
}

/// What the caller gets for the next transaction of a piece.
// A return value, matched at once: boxing the result would cost an allocation per
// transaction for nothing.
#[allow(clippy::large_enum_variant)]
enum Took {
    /// The worker's result.
    Result(Speculated),
    /// The worker had not started it: the caller runs it and those up to `until` itself
    /// (the worker goes on from there, or, at the piece's end, stops).
    Mine(usize),
}

impl Piece {
    /// Transaction `i`'s result from the worker, waiting while the worker runs it. If
    /// the worker has not started it, the caller takes over the nearer part of what is
    /// left (the worker skips to the rest), or all of it when little is left or the
    /// worker was stopped at `stopped`.
    fn take(&self, i: usize, stopped: Option<usize>) -> Took {
        let mut spins = 0u32;
        loop {
            if let Some(done) = self.results[i - self.start].lock().unwrap_or_else(PoisonError::into_inner).take() {
                return Took::Result(done);
            }
            match stopped {
                Some(limit) if i >= limit => return Took::Mine(self.end),
                Some(_) => {}
                // The worker left the piece (see `Claim`): the rest is the caller's.
                None if self.next.load(Ordering::Acquire) == TAKEN => return Took::Mine(self.end),
                None if self.next.load(Ordering::Acquire) == i => {
                    let left = self.end - i;
                    // Shared so that both finish together: the caller also checks
                    // the worker's results.
                    let own = ((left as f64) * (1.0 - CHECK_SHARE) / (2.0 - CHECK_SHARE)).ceil() as usize;
                    let (until, next) = if left <= MIN_SHARED { (self.end, TAKEN) } else { (i + own, i + own) };
                    if self.next.compare_exchange(i, next, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                        return Took::Mine(until);
                    }
                }
                None => {}
            }
            spins = spins.wrapping_add(1);
            pause(spins);
        }
    }
}

impl Piece {
    fn new(start: usize, end: usize, tag: u32) -> Self {
        Self {
            start,
            end,
            tag,
            next: AtomicUsize::new(start),
            results: (start..end).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// Publishes transaction `i`'s result.
    fn put(&self, i: usize, result: Speculated) {
        *self.results[i - self.start].lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_takes_the_nearer_part_of_what_a_worker_has_not_started() {
        let piece = Piece::new(0, 100, 1);
        assert!(matches!(piece.take(0, None), Took::Mine(48)));
        // The worker, about to claim 0, skips to 48.
        assert_eq!(piece.next.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire), Err(48));
        // Little left: all of it.
        let piece = Piece::new(0, 4, 1);
        assert!(matches!(piece.take(0, None), Took::Mine(4)));
        assert_eq!(piece.next.load(Ordering::Acquire), TAKEN);
    }

    #[test]
    fn a_worker_that_leaves_a_claimed_transaction_hands_the_rest_to_the_caller() {
        let piece = Piece::new(10, 20, 1);
        assert!(piece.next.compare_exchange(10, 11, Ordering::AcqRel, Ordering::Acquire).is_ok());
        // As when the EVM panics mid-transaction: the claim is dropped unpublished.
        drop(Claim { piece: &piece, i: 10, published: false });
        assert!(matches!(piece.take(10, None), Took::Result(Speculated { outcome: None, .. })));
        assert!(matches!(piece.take(11, None), Took::Mine(20)));
    }

    #[test]
    fn the_callers_piece_is_the_shortest_and_pieces_follow_costs() {
        assert_eq!(cuts(&[1.0; 100], 2), vec![48]);
        assert_eq!(cuts(&[1.0; 100], 3), vec![29, 65]);
        assert!(cuts(&[1.0; 1], 2).is_empty());
        assert!(cuts(&[1.0; 100], 1).is_empty());
        // A dear transaction early: the caller's piece ends soon after it.
        let mut costs = vec![1.0; 100];
        costs[3] = 60.0;
        assert_eq!(cuts(&costs, 2), vec![17]);
    }
}
