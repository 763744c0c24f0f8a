//! How the pool chooses a batch's mode, from what it can know before running it: the
//! batch's size and, per kind of transaction (contract and selector), the execution
//! time and the share re-executed in parallel runs, both learned from earlier batches.
//!
//! The parallel engine pays a fixed cost per batch (waking the workers, preparing the
//! multi-version memory) and a cost per transaction (scheduling, recording, validating).
//! A batch runs in parallel only when its predicted work covers both and few of its
//! transactions are expected to conflict; everything else runs sequentially, which
//! never loses.

use std::sync::Mutex;

use revm::{
    context::TxEnv,
    primitives::{Address, TxKind},
};
use rustc_hash::FxHashMap;

/// A kind of transaction: the contract and selector called. Plain transfers (no call
/// data) are one kind whoever they pay, and so are creations.
pub(crate) type Kind = (Address, [u8; 4]);

/// The kind of `tx`.
pub(crate) fn kind_of(tx: &TxEnv) -> Kind {
    match tx.kind {
        TxKind::Create => (Address::ZERO, [0xff; 4]),
        TxKind::Call(_) if tx.data.is_empty() => (Address::ZERO, [0; 4]),
        TxKind::Call(to) => (to, tx.data.get(..4).and_then(|s| s.try_into().ok()).unwrap_or([0; 4])),
    }
}

/// Below this much predicted sequential work a batch runs sequentially: waking a worker,
/// the two cores' shared caches and checking its results eat the gain (blocks of 80-200
/// transfers, 0.1-0.3 ms, lost 10-20% split).
const MIN_SPLIT_WORK_S: f64 = 300e-6;
/// Below this much predicted sequential work Block-STM is not considered: its fixed
/// cost per batch (tens of microseconds here) would eat the gain.
const MIN_PARALLEL_WORK_S: f64 = 300e-6;
/// Below this mean execution time per transaction Block-STM's own cost per transaction
/// (scheduling, the multi-version memory, validation: 1-2 us here) outweighs what it
/// gains over split execution, whose cost per transaction is a recorded read and a
/// lookup. Over 65 real blocks, Block-STM won where transactions cost 20 us and more
/// and seldom conflicted, split execution nearly everywhere else.
const MIN_PARALLEL_TX_COST_S: f64 = 20e-6;
/// Above this many predicted re-executions per transaction, counted or weighted by
/// cost, Block-STM is not chosen (real blocks that lose in it re-execute 0.9-1.7 times
/// per transaction; split execution beats it on those that re-execute more than about
/// half of the time).
const MAX_PARALLEL_CONFLICTS: f64 = 0.5;
/// Below this mean execution time per transaction split execution loses too: plain
/// transfers (1-1.5 us here) are bound by memory, which two cores share (two copies of
/// plain revm side by side gain nothing on them), and lost 10-20% split.
const MIN_SPLIT_TX_COST_S: f64 = 2e-6;
/// Above this predicted share run again (weighted by cost) split execution loses to
/// sequential: what runs again runs on the caller alone, after its own piece.
const MAX_RERUNS: f64 = 0.5;
/// How much longer a transaction's execution takes inside a parallel run than alone
/// (reads through the multi-version memory, a second core sharing the caches): 1.3-1.5x
/// on real blocks here, cheap and heavy alike. Costs learned in parallel are divided by
/// it, so that they predict sequential work like those learned sequentially; else a
/// kind once run in parallel would look dear enough to stay there.
const PARALLEL_TIME_INFLATION: f64 = 1.4;
/// Likewise in split execution, where each transaction runs as in sequential mode but
/// beside the other core: about 1.1x.
const SPLIT_TIME_INFLATION: f64 = 1.1;
/// Re-executions of one transaction counted at most (one pathological transaction must
/// not make its kind look hopeless).
const MAX_COUNTED_REEXECUTIONS: usize = 3;
/// What an unseen kind is assumed to cost until measured: a typical contract call.
const UNSEEN_COST_S: f64 = 10e-6;
/// A batch with more than this share of its transactions of unseen kinds runs
/// sequentially, which times each transaction as it is: a parallel run's times of
/// cheap kinds come out 2x and more too high (not the [`PARALLEL_TIME_INFLATION`] of
/// typical ones), and a block of cheap unseen kinds then stayed parallel, losing, for
/// the four or five batches its costs took to come down.
const MAX_UNSEEN_SHARE: f64 = 0.5;
/// Weight of a new measurement in a kind's running averages.
const LEARNING_RATE: f64 = 0.3;
/// A kind kept out of a mode for its conflicts (Block-STM's re-executions, split
/// execution's runs again) has them forgotten this much per sequential batch learned
/// from, so that it is tried in that mode again now and then.
const CONFLICT_DECAY: f64 = 0.97;
/// Kinds remembered at most (a chain has many; the pool meets some often).
const MAX_KINDS: usize = 1 << 16;
/// Sequential batches of kinds all measured before are learned from one in this many.
const LEARN_EVERY: usize = 4;
/// A transaction is started first when, taken in order, it would end this much past
/// the batch's even share of work per worker...
const HEAD_OVERRUN: f64 = 0.1;
/// ...costs at least this share of a worker's even share...
const MIN_HEAD_SHARE: f64 = 0.25;
/// ...and its kind re-executed at most this often in parallel runs (a head that has to
/// run again costs twice).
const MAX_HEAD_CONFLICTS: f64 = 0.1;

/// What the pool has learned of one kind.
#[derive(Debug, Clone, Copy)]
struct KindStats {
    /// Seconds per execution (running average).
    cost: f64,
    /// Re-executions per transaction in parallel runs (running average); `None` until
    /// the kind has run in parallel (a sequential run cannot tell).
    conflicts: Option<f64>,
    /// Share of its transactions that a worker of split execution ran and the caller
    /// had to run again (running average); `None` until the kind has run split.
    reruns: Option<f64>,
}

/// How a batch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One by one on the calling thread.
    Sequential,
    /// On the Block-STM engine.
    Parallel,
    /// Cut into pieces run sequentially side by side, checked in order (`split`).
    Split,
}

/// What the pool does with a batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Choice {
    /// How it runs.
    pub mode: Mode,
    /// Whether its run is timed to learn from (see [`Policy::sample`]).
    pub learn: bool,
    /// In a parallel run, the transactions to start first (see [`late_and_long`]).
    pub heads: Vec<usize>,
    /// In a split run, each transaction's predicted cost...
    pub costs: Vec<f64>,
    /// ...and where the batch is cut (see [`crate::split::cuts`]).
    pub cuts: Vec<usize>,
}

impl Choice {
    /// A sequential run, timed to learn from or not.
    fn sequential(learn: bool) -> Self {
        Self { mode: Mode::Sequential, learn, heads: Vec::new(), costs: Vec::new(), cuts: Vec::new() }
    }
}

/// The learned costs and conflicts, and the choice made from them.
#[derive(Debug, Default)]
pub(crate) struct Policy {
    kinds: Mutex<FxHashMap<Kind, KindStats>>,
    /// Sequential batches of known kinds so far (one in [`LEARN_EVERY`] is learned from).
    batches: std::sync::atomic::AtomicUsize,
}

impl Policy {
    /// What is known of each of `kinds` (an unseen one: a typical call, no conflicts
    /// known), and how many are of unseen kinds. A run of one kind is looked up once.
    fn stats(&self, kinds: &[Kind]) -> (Vec<KindStats>, usize) {
        let unknown = KindStats { cost: UNSEEN_COST_S, conflicts: None, reruns: None };
        let Ok(known) = self.kinds.lock() else { return (vec![unknown; kinds.len()], kinds.len()) };
        let (mut stats, mut unseen) = (Vec::with_capacity(kinds.len()), 0);
        let mut last: Option<(&Kind, KindStats, bool)> = None;
        for kind in kinds {
            let (found, new) = match last {
                Some((previous, found, new)) if previous == kind => (found, new),
                _ => known.get(kind).map_or((unknown, true), |found| (*found, false)),
            };
            unseen += usize::from(new);
            last = Some((kind, found, new));
            stats.push(found);
        }
        (stats, unseen)
    }

    /// The mode `txs` (of `kinds`) should run in, on `workers` workers, batches under
    /// `min_batch` transactions running sequentially; and whether to learn from it.
    pub(crate) fn choose(&self, txs: &[TxEnv], kinds: &[Kind], workers: usize, min_batch: usize) -> Choice {
        if workers < 2 || kinds.len() < min_batch.max(2) {
            return Choice::sequential(true);
        }
        let (stats, unseen) = self.stats(kinds);
        let work_s = work_of(&stats);
        let mostly_unseen = unseen as f64 > MAX_UNSEEN_SHARE * kinds.len() as f64;
        if mostly_unseen || work_s < MIN_SPLIT_WORK_S {
            return Choice::sequential(unseen > 0 || self.sample());
        }
        let mean_s = work_s / kinds.len() as f64;
        // Block-STM where it is strongest: dear transactions that seldom conflict
        // (its cost per transaction is a small share of theirs, and it runs a long one
        // beside the rest). Conflicts are read off the batch only then: for a batch of
        // cheap transfers that costs a few percent of running it.
        if work_s >= MIN_PARALLEL_WORK_S && mean_s >= MIN_PARALLEL_TX_COST_S {
            let conflicts = conflicts_of(txs, kinds, &stats);
            tracing::trace!(txs = kinds.len(), work_s, conflicts, "Block-STM considered");
            if conflicts <= MAX_PARALLEL_CONFLICTS {
                // A parallel run always teaches its conflicts.
                return Choice {
                    mode: Mode::Parallel,
                    learn: true,
                    heads: heads_of(&stats, workers),
                    costs: Vec::new(),
                    cuts: Vec::new(),
                };
            }
        }
        // Split execution for the rest, unless much of the workers' share would run
        // again.
        if mean_s < MIN_SPLIT_TX_COST_S {
            return Choice::sequential(self.sample());
        }
        let costs: Vec<f64> = stats.iter().map(|s| s.cost).collect();
        let cuts = crate::split::cuts(&costs, workers);
        let reruns = reruns_of(txs, kinds, &stats, &cuts);
        tracing::trace!(txs = kinds.len(), work_s, reruns, "split considered");
        if reruns <= MAX_RERUNS {
            return Choice { mode: Mode::Split, learn: true, heads: Vec::new(), costs, cuts };
        }
        Choice::sequential(unseen > 0 || self.sample())
    }

    /// Whether this sequential batch of known kinds is one to time and learn from: one
    /// in [`LEARN_EVERY`]. Timing each transaction and taking the times in costs a few
    /// percent of a batch of cheap transactions, and costs of known kinds move slowly.
    pub(crate) fn sample(&self) -> bool {
        self.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed).is_multiple_of(LEARN_EVERY)
    }

    /// Takes in a batch's measurements: each transaction's kind, execution seconds and,
    /// for a parallel run, how many times it was executed again. Each kind's averages
    /// move once per batch, by the batch's mean for that kind.
    pub(crate) fn learn(&self, kinds: &[Kind], seconds: &[f64], reexecutions: Option<&[usize]>) {
        let inflation = if reexecutions.is_some() { PARALLEL_TIME_INFLATION } else { 1.0 };
        self.learn_costs(
            kinds,
            seconds,
            inflation,
            |stats, again| {
                stats.conflicts = match (again.map(|(again, count)| again / count), stats.conflicts) {
                    (Some(again), None) => Some(again),
                    (Some(again), Some(known)) => Some(known + LEARNING_RATE * (again - known)),
                    (None, known) => known.map(|c| c * CONFLICT_DECAY),
                };
                if again.is_none() {
                    stats.reruns = stats.reruns.map(|r| r * CONFLICT_DECAY);
                }
            },
            reexecutions,
        );
    }

    /// Each kind's averages moved by one batch: costs by the batch's mean for the kind
    /// (divided by `inflation`), then `rest` with the kind's re-executions and count
    /// when `reexecutions` are given.
    fn learn_costs(
        &self,
        kinds: &[Kind],
        seconds: &[f64],
        inflation: f64,
        rest: impl Fn(&mut KindStats, Option<(f64, f64)>),
        reexecutions: Option<&[usize]>,
    ) {
        /// A kind's sums over one batch: transactions, seconds, re-executions.
        type Sums = (f64, f64, f64);
        let mut batch: FxHashMap<Kind, Sums> = FxHashMap::default();
        for (i, (kind, cost)) in kinds.iter().zip(seconds).enumerate() {
            let sums = batch.entry(*kind).or_default();
            sums.0 += 1.0;
            sums.1 += cost;
            sums.2 += reexecutions.and_then(|r| r.get(i)).map_or(0, |r| (*r).min(MAX_COUNTED_REEXECUTIONS)) as f64;
        }
        let Ok(mut known) = self.kinds.lock() else { return };
        if known.len() > MAX_KINDS {
            known.clear();
        }
        for (kind, (count, cost, again)) in batch {
            let cost = cost / count / inflation;
            // A kind's first measurement is taken whole: one batch is the best guess there is.
            let stats = known.entry(kind).or_insert(KindStats { cost, conflicts: None, reruns: None });
            stats.cost += LEARNING_RATE * (cost - stats.cost);
            rest(stats, reexecutions.map(|_| (again, count)));
        }
    }
}

impl Policy {
    /// Takes in what a split run found: per transaction of `kinds`, how long it took
    /// (when timed) and whether a worker ran it and the caller ran it again (`Some(true)`), kept it
    /// (`Some(false)`), or no worker ran it (`None`: that teaches nothing of reruns). A
    /// sender's later transactions are left out of reruns: [`reruns_of`] counts them
    /// from the batch itself.
    pub(crate) fn learn_split(
        &self,
        txs: &[TxEnv],
        kinds: &[Kind],
        ran_again: &[Option<bool>],
        seconds: Option<&[f64]>,
    ) {
        if let Some(seconds) = seconds {
            self.learn_costs(kinds, seconds, SPLIT_TIME_INFLATION, |_, _| {}, None);
        }
        let mut batch: FxHashMap<Kind, (f64, f64)> = FxHashMap::default();
        let mut senders: rustc_hash::FxHashSet<Address> = Default::default();
        for ((tx, kind), again) in txs.iter().zip(kinds).zip(ran_again) {
            let repeated = !senders.insert(tx.caller);
            if let (false, Some(again)) = (repeated, again) {
                let sums = batch.entry(*kind).or_default();
                sums.0 += 1.0;
                sums.1 += f64::from(u8::from(*again));
            }
        }
        let Ok(mut known) = self.kinds.lock() else { return };
        for (kind, (count, again)) in batch {
            if let Some(stats) = known.get_mut(&kind) {
                let share = again / count;
                stats.reruns = Some(stats.reruns.map_or(share, |known| known + LEARNING_RATE * (share - known)));
            }
        }
    }
}

/// Seconds of sequential work the kinds' `stats` predict.
fn work_of(stats: &[KindStats]) -> f64 {
    stats.iter().map(|s| s.cost).sum()
}

/// Predicted re-executions per transaction of `txs` (of `kinds`, known as `stats`): for
/// plain transfers read off the batch, for calls as learned (not yet seen in parallel:
/// assumed not to conflict, so that the kind is tried). The greater of the count per
/// transaction and the count weighted by predicted cost: what a re-execution wastes is
/// its transaction's cost (a block of nine whose one long call runs twice loses by half
/// in parallel, while its count per transaction looks calm), and many cheap ones running
/// again wait on each other as well (a block of 1,100 whose cheap token moves conflict
/// lost in parallel once weighing alone called it calm).
fn conflicts_of(txs: &[TxEnv], kinds: &[Kind], stats: &[KindStats]) -> f64 {
    let transfers = transfer_conflicts(txs, kinds);
    let (mut again, mut weighted, mut work) = (0.0, 0.0, 0.0);
    for (transfer, stats) in transfers.iter().zip(stats) {
        let conflicts = transfer.or(stats.conflicts).unwrap_or(0.0);
        again += conflicts;
        weighted += stats.cost * conflicts;
        work += stats.cost;
    }
    let per_tx = again / kinds.len().max(1) as f64;
    if work > 0.0 { per_tx.max(weighted / work) } else { per_tx }
}

/// Predicted share of the workers' work that split execution would run again when
/// `txs` (of `kinds`, known as `stats`) are cut at `cuts`, weighted by cost: a
/// transaction whose sender sent one in an earlier piece (its nonce and balance come
/// from that one, and from then on the sender's later ones in its piece follow it), a
/// transfer paying or paid by an account a transfer of an earlier piece paid (in the
/// same piece it reads what its worker wrote: no conflict), and the rest as
/// learned (unseen in split runs: none, so that the kind is tried). At least the share
/// of transactions whose sender sent an earlier one anywhere in the batch: the pieces
/// move while the batch runs (each side takes over what the other has not started),
/// and a chain of one sender's transactions split anywhere runs again from there (a
/// payout block of 650 transfers from one sender among ten other calls lost 15-20%).
fn reruns_of(txs: &[TxEnv], kinds: &[Kind], stats: &[KindStats], cuts: &[usize]) -> f64 {
    let piece_of = |i: usize| cuts.partition_point(|cut| *cut <= i);
    let transfers = transfer_conflicts_across(txs, kinds, piece_of);
    // Per sender: the piece it first sends in.
    let mut first_sent: FxHashMap<Address, usize> = FxHashMap::default();
    let (mut again, mut work, mut repeated) = (0.0, 0.0, 0usize);
    for (i, ((tx, transfer), stats)) in txs.iter().zip(&transfers).zip(stats).enumerate() {
        let piece = piece_of(i);
        let sent = match first_sent.entry(tx.caller) {
            std::collections::hash_map::Entry::Occupied(seen) => {
                repeated += 1;
                *seen.get()
            }
            std::collections::hash_map::Entry::Vacant(new) => *new.insert(piece),
        };
        if piece == 0 {
            continue;
        }
        let reruns = if sent < piece { 1.0 } else { transfer.or(stats.reruns).unwrap_or(0.0) };
        again += stats.cost * reruns;
        work += stats.cost;
    }
    let weighted = if work > 0.0 { again / work } else { 0.0 };
    weighted.max(repeated as f64 / txs.len().max(1) as f64)
}

/// The transactions of a parallel batch (of kinds known as `stats`) to start first on
/// `workers` workers: long ones that, started in order, would still run alone when the
/// rest is done (a block's one big call near its end), of kinds known not to conflict
/// (an unseen kind is not).
fn heads_of(stats: &[KindStats], workers: usize) -> Vec<usize> {
    let costs: Vec<(f64, bool)> =
        stats.iter().map(|s| (s.cost, s.conflicts.is_some_and(|c| c <= MAX_HEAD_CONFLICTS))).collect();
    late_and_long(&costs, workers)
}

/// Of transactions with predicted `(cost, calm)`, those that started in order on
/// `workers` workers (each taking the next when free) would end past the even share of
/// work by more than [`HEAD_OVERRUN`] and cost at least [`MIN_HEAD_SHARE`] of it, calm
/// ones only; the longest overrun first, at most `workers - 1`.
fn late_and_long(costs: &[(f64, bool)], workers: usize) -> Vec<usize> {
    if workers < 2 {
        return Vec::new();
    }
    let share = costs.iter().map(|(cost, _)| cost).sum::<f64>() / workers as f64;
    let mut free = vec![0.0f64; workers];
    let mut late = Vec::new();
    for (idx, (cost, calm)) in costs.iter().enumerate() {
        let Some((worker, start)) = free.iter().copied().enumerate().min_by(|a, b| a.1.total_cmp(&b.1)) else {
            break;
        };
        free[worker] = start + cost;
        let overrun = start + cost - share * (1.0 + HEAD_OVERRUN);
        if *calm && overrun > 0.0 && *cost >= share * MIN_HEAD_SHARE {
            late.push((idx, overrun));
        }
    }
    late.sort_by(|a, b| b.1.total_cmp(&a.1));
    late.into_iter().take(workers - 1).map(|(idx, _)| idx).collect()
}

/// Per transaction: for a plain transfer, 1 if it pays or is paid by an account an
/// earlier transfer of the batch paid (a conflict on that balance), else 0; `None` for
/// other transactions. (Senders of several transactions are accounted lazily and do
/// not conflict on their own balance.)
fn transfer_conflicts(txs: &[TxEnv], kinds: &[Kind]) -> Vec<Option<f64>> {
    transfer_conflicts_across(txs, kinds, |i| i)
}

/// [`transfer_conflicts`] where transaction `i` runs in piece `piece_of(i)` (ascending):
/// a payment made earlier in the same piece is read as its worker wrote it, so only a
/// payment in an earlier piece conflicts.
fn transfer_conflicts_across(txs: &[TxEnv], kinds: &[Kind], piece_of: impl Fn(usize) -> usize) -> Vec<Option<f64>> {
    let transfer = (Address::ZERO, [0; 4]);
    // Per account a transfer paid: the piece of the first such transfer.
    let mut paid: FxHashMap<Address, usize> = FxHashMap::default();
    txs.iter()
        .zip(kinds)
        .enumerate()
        .map(|(i, (tx, kind))| {
            let TxKind::Call(to) = tx.kind else { return None };
            if *kind != transfer {
                return None;
            }
            let piece = piece_of(i);
            let conflict = [to, tx.caller].iter().filter_map(|a| paid.get(a)).any(|p| *p < piece);
            paid.entry(to).or_insert(piece);
            Some(f64::from(u8::from(conflict)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(n: usize, kind: Kind) -> Vec<Kind> {
        vec![kind; n]
    }

    /// `n` transactions of `kind` from distinct senders (to distinct recipients), and
    /// their kinds.
    fn batch(n: usize, kind: Kind) -> (Vec<TxEnv>, Vec<Kind>) {
        let data: revm::primitives::Bytes =
            if kind.0 == Address::ZERO { Default::default() } else { kind.1.to_vec().into() };
        let numbered = |i: usize, byte: u8| {
            let mut a = [byte; 20];
            a[12..].copy_from_slice(&(i as u64).to_be_bytes());
            Address::from(a)
        };
        let txs = (0..n)
            .map(|i| TxEnv {
                caller: numbered(i, 0),
                kind: TxKind::Call(if kind.0 == Address::ZERO { numbered(i, 0xee) } else { kind.0 }),
                data: data.clone(),
                ..Default::default()
            })
            .collect();
        (txs, kinds(n, kind))
    }

    fn choose(policy: &Policy, (txs, kinds): &(Vec<TxEnv>, Vec<Kind>), workers: usize) -> Mode {
        policy.choose(txs, kinds, workers, 4).mode
    }

    #[test]
    fn sequential_batches_of_known_kinds_are_learned_from_one_in_four() {
        let policy = Policy::default();
        let transfer = (Address::ZERO, [0; 4]);
        // 100 us of transfers: too little work for anything but sequential.
        let batch = batch(100, transfer);
        let learned = |policy: &Policy| (0..8).filter(|_| policy.choose(&batch.0, &batch.1, 2, 4).learn).count();
        assert_eq!(learned(&policy), 8, "unseen kinds: every batch");
        policy.learn(&batch.1, &vec![1e-6; 100], None);
        assert_eq!(choose(&policy, &batch, 2), Mode::Sequential);
        assert_eq!(learned(&policy), 2, "known kinds: one in four");
        let small = self::batch(3, transfer);
        assert!(policy.choose(&small.0, &small.1, 2, 4).learn && policy.choose(&small.0, &small.1, 2, 4).learn);
    }

    #[test]
    fn each_batch_runs_in_the_mode_its_kinds_predict_pays() {
        let policy = Policy::default();
        let call = (Address::repeat_byte(1), [1, 2, 3, 4]);
        // Unseen kinds are timed sequentially first.
        assert_eq!(choose(&policy, &batch(100, call), 2), Mode::Sequential, "unseen");
        // Calls of 10 us: Block-STM's own cost per transaction is too large a share.
        policy.learn(&kinds(100, call), &vec![10e-6; 100], None);
        assert_eq!(choose(&policy, &batch(100, call), 2), Mode::Split);
        assert_eq!(choose(&policy, &batch(3, call), 2), Mode::Sequential, "too small");
        assert_eq!(choose(&policy, &batch(100, call), 1), Mode::Sequential, "one worker");
        assert_eq!(choose(&policy, &batch(10, call), 2), Mode::Sequential, "too little work");
        // Dear calls that do not conflict: Block-STM.
        let dear = (Address::repeat_byte(2), [1, 2, 3, 4]);
        policy.learn(&kinds(100, dear), &vec![30e-6; 100], None);
        assert_eq!(choose(&policy, &batch(100, dear), 2), Mode::Parallel);
        // Once they conflict in Block-STM: split.
        policy.learn(&kinds(100, dear), &vec![30e-6; 100], Some(&vec![2; 100]));
        assert_eq!(choose(&policy, &batch(100, dear), 2), Mode::Split);
        // Plain transfers of 1 us are bound by memory: sequential. Dearer ones between
        // distinct accounts split; a payout (one sender) does not.
        let transfer = (Address::ZERO, [0; 4]);
        policy.learn(&kinds(1000, transfer), &vec![1e-6; 1000], None);
        assert_eq!(choose(&policy, &batch(1000, transfer), 2), Mode::Sequential);
        policy.learn(&kinds(1000, transfer), &vec![5e-6; 1000], None);
        policy.learn(&kinds(1000, transfer), &vec![5e-6; 1000], None);
        assert_eq!(choose(&policy, &batch(1000, transfer), 2), Mode::Split);
        let (mut payout, kinds) = batch(1000, transfer);
        payout.iter_mut().for_each(|tx| tx.caller = Address::repeat_byte(7));
        assert_eq!(choose(&policy, &(payout, kinds), 2), Mode::Sequential, "one sender");
    }

    #[test]
    fn kinds_run_again_in_split_runs_go_sequential_and_are_tried_again_later() {
        let policy = Policy::default();
        let call = (Address::repeat_byte(1), [1; 4]);
        let batch = batch(100, call);
        policy.learn(&batch.1, &vec![10e-6; 100], None);
        assert_eq!(choose(&policy, &batch, 2), Mode::Split);
        // The caller's own transactions teach nothing; the workers' all ran again.
        let ran_again: Vec<Option<bool>> = (0..100).map(|i| (i >= 50).then_some(true)).collect();
        policy.learn_split(&batch.0, &batch.1, &ran_again, Some(&[11e-6; 100]));
        assert_eq!(choose(&policy, &batch, 2), Mode::Sequential);
        let mut tries = 0;
        while choose(&policy, &batch, 2) == Mode::Sequential {
            policy.learn(&batch.1, &vec![10e-6; 100], None);
            tries += 1;
            assert!(tries < 50, "a kind that ran again is never tried split again");
        }
        assert!(tries > 5, "a kind that ran again is not tried again at once");
        // Kept: it stays split.
        policy.learn_split(&batch.0, &batch.1, &[Some(false); 100], Some(&[11e-6; 100]));
        assert_eq!(choose(&policy, &batch, 2), Mode::Split);
    }

    #[test]
    fn a_senders_later_transactions_and_transfers_to_the_same_account_predict_reruns() {
        let stats = vec![KindStats { cost: 1.0, conflicts: None, reruns: None }; 6];
        let (a, b, c) = (Address::repeat_byte(0xa), Address::repeat_byte(0xb), Address::repeat_byte(0xc));
        let call = |from| TxEnv { caller: from, kind: TxKind::Call(c), data: vec![1; 4].into(), ..Default::default() };
        // Cut after two: a's second and third follow its first, from another piece; b's
        // second follows its first in the same piece.
        let txs = vec![call(a), call(c), call(a), call(b), call(a), call(b)];
        let kinds: Vec<Kind> = txs.iter().map(kind_of).collect();
        assert_eq!(reruns_of(&txs, &kinds, &stats, &[2]), 0.5, "a's second and third of four");
        assert_eq!(reruns_of(&txs, &kinds, &stats, &[1]), 0.5, "three repeats of six, whatever the cut");
        assert_eq!(reruns_of(&txs[..4], &kinds[..4], &stats[..4], &[3]), 0.25, "one repeat of four");
        let transfer = |from, to| TxEnv { caller: from, kind: TxKind::Call(to), ..Default::default() };
        let txs = vec![transfer(a, c), transfer(b, c), transfer(c, a), transfer(Address::ZERO, b)];
        let kinds: Vec<Kind> = txs.iter().map(kind_of).collect();
        assert_eq!(reruns_of(&txs, &kinds, &stats[..4], &[1]), 2.0 / 3.0, "c paid before the cut, then paying");
        assert_eq!(reruns_of(&txs, &kinds, &stats[..4], &[2]), 0.5, "c paid twice before the cut, then paying");
        assert_eq!(reruns_of(&txs, &kinds, &stats[..4], &[3]), 0.0, "b paid in no earlier piece");
    }

    #[test]
    fn a_batch_mostly_of_unseen_kinds_is_timed_sequentially_first() {
        let policy = Policy::default();
        let (known, new) = ((Address::repeat_byte(1), [1; 4]), (Address::repeat_byte(2), [2; 4]));
        policy.learn(&kinds(1, known), &[2e-6], None);
        let mixed = |known_txs: usize| {
            let (a, mut b) = (batch(known_txs, known), batch(100 - known_txs, new));
            b.0.iter_mut().for_each(|tx| tx.caller.0[0] = 0xbb);
            ([a.0, b.0].concat(), [a.1, b.1].concat())
        };
        let first = policy.choose(&mixed(40).0, &mixed(40).1, 2, 4);
        assert_eq!((first.mode, first.learn), (Mode::Sequential, true), "60 of 100 unseen");
        assert_eq!(choose(&policy, &mixed(60), 2), Mode::Split, "40 of 100 unseen");
        // Timed alone, the new kind turns out cheap: too little work to share.
        policy.learn(&kinds(60, new), &vec![1e-6; 60], None);
        assert_eq!(choose(&policy, &mixed(40), 2), Mode::Sequential, "learned cheap");
    }

    #[test]
    fn conflicts_count_per_transaction_and_by_what_they_cost() {
        let (long, short) = ((Address::repeat_byte(1), [1; 4]), (Address::repeat_byte(2), [2; 4]));
        let (a, b) = (batch(1, long), batch(8, short));
        let mut block = ([a.0, b.0].concat(), [a.1, b.1].concat());
        block.0[0].caller = Address::repeat_byte(0xaa);
        // One long call that runs again, eight short calm ones: 1 in 9 by count, most
        // of the work by cost.
        let policy = Policy::default();
        policy.learn(&kinds(1, long), &[1.4e-3], Some(&[1]));
        policy.learn(&kinds(8, short), &[28e-6; 8], Some(&[0; 8]));
        assert_eq!(choose(&policy, &block, 2), Mode::Split);
        // The short ones conflicting and the long one calm: most of the work is calm,
        // but eight of nine run again, and counted per transaction that is too many.
        let policy = Policy::default();
        policy.learn(&kinds(1, long), &[1.4e-3], Some(&[0]));
        policy.learn(&kinds(8, short), &[28e-6; 8], Some(&[1; 8]));
        assert_eq!(choose(&policy, &block, 2), Mode::Split);
        // Calm both ways: Block-STM.
        for _ in 0..5 {
            policy.learn(&kinds(8, short), &[28e-6; 8], Some(&[0; 8]));
        }
        assert_eq!(choose(&policy, &block, 2), Mode::Parallel);
    }

    #[test]
    fn conflicts_are_learned_from_parallel_runs_only() {
        let policy = Policy::default();
        let call = (Address::repeat_byte(1), [1; 4]);
        let batch = batch(100, call);
        // A sequential run measures cost but cannot tell conflicts: none are assumed.
        policy.learn(&batch.1, &vec![30e-6; 100], None);
        assert_eq!(choose(&policy, &batch, 2), Mode::Parallel);
        // The first parallel run is taken whole: each ran once more.
        policy.learn(&batch.1, &vec![30e-6; 100], Some(&vec![1; 100]));
        assert_eq!(conflicts_of(&batch.0, &batch.1, &policy.stats(&batch.1).0), 1.0);
        assert_eq!(choose(&policy, &batch, 2), Mode::Split);
    }

    #[test]
    fn a_long_calm_transaction_near_the_end_is_started_first() {
        let cheap = (0.1, true);
        // Ten cheap ones, a long one (a third of the work) near the end, two more.
        let mut costs = vec![cheap; 10];
        costs.push((0.6, true));
        costs.extend([cheap; 2]);
        assert_eq!(late_and_long(&costs, 2), vec![10]);
        assert!(late_and_long(&costs, 1).is_empty(), "one worker has no one to hand it to");
        // At the start it runs beside the rest anyway.
        let mut first = vec![(0.6, true)];
        first.extend([cheap; 12]);
        assert!(late_and_long(&first, 2).is_empty());
        // Of a kind that conflicts it would likely run twice: left in order.
        costs[10].1 = false;
        assert!(late_and_long(&costs, 2).is_empty());
        // Even work has no straggler.
        assert!(late_and_long(&[cheap; 40], 2).is_empty());
    }

    #[test]
    fn heads_come_from_learned_costs_and_conflicts() {
        let policy = Policy::default();
        let (cheap, long) = (batch(40, (Address::repeat_byte(1), [1; 4])), batch(1, (Address::repeat_byte(2), [2; 4])));
        let mut all = ([cheap.0.clone(), long.0.clone()].concat(), [cheap.1.clone(), long.1.clone()].concat());
        all.0[40].caller = Address::repeat_byte(0xaa);
        policy.learn(&cheap.1[..1], &[56e-6], Some(&[0]));
        let unseen = policy.choose(&all.0, &all.1, 2, 4);
        assert_eq!(unseen.mode, Mode::Parallel, "a few unseen kinds are tried in parallel");
        assert!(unseen.heads.is_empty(), "unseen kinds are not started first");
        policy.learn(&long.1, &[400e-6], Some(&[0]));
        assert_eq!(policy.choose(&all.0, &all.1, 2, 4).heads, vec![40]);
        // A long kind that conflicts would likely run twice: left in order.
        policy.learn(&long.1, &[400e-6], Some(&[3]));
        let choice = policy.choose(&all.0, &all.1, 2, 4);
        assert_eq!(choice.mode, Mode::Parallel);
        assert!(choice.heads.is_empty());
    }

    #[test]
    fn times_taken_in_parallel_are_put_in_sequential_terms() {
        let call = (Address::repeat_byte(1), [1; 4]);
        let batch = batch(100, call);
        let policy = Policy::default();
        policy.learn(&batch.1, &vec![14e-6; 100], Some(&vec![0; 100]));
        let work = work_of(&policy.stats(&batch.1).0);
        assert!((work - 100.0 * 14e-6 / PARALLEL_TIME_INFLATION).abs() < 1e-12, "{work}");
        // 21 us a transaction inside a parallel run is 15 us alone: too cheap for
        // Block-STM, as 21 us alone is not.
        let inside = Policy::default();
        inside.learn(&batch.1, &vec![21e-6; 100], Some(&vec![0; 100]));
        assert_eq!(choose(&inside, &batch, 2), Mode::Split);
        let alone = Policy::default();
        alone.learn(&batch.1, &vec![21e-6; 100], None);
        assert_eq!(choose(&alone, &batch, 2), Mode::Parallel, "21 us alone is");
    }

    #[test]
    fn transfers_conflict_when_they_pay_an_account_an_earlier_one_paid() {
        let (a, b, c) = (Address::repeat_byte(0xa), Address::repeat_byte(0xb), Address::repeat_byte(0xc));
        let transfer = |from, to| TxEnv { caller: from, kind: TxKind::Call(to), ..Default::default() };
        let txs = vec![transfer(a, b), transfer(c, b), transfer(b, a), transfer(a, c)];
        let kinds: Vec<Kind> = txs.iter().map(kind_of).collect();
        let conflicts: Vec<Option<f64>> = transfer_conflicts(&txs, &kinds);
        assert_eq!(conflicts, vec![Some(0.0), Some(1.0), Some(1.0), Some(1.0)]);
        let call = TxEnv { caller: a, kind: TxKind::Call(b), data: vec![1, 2, 3, 4].into(), ..Default::default() };
        assert_eq!(
            transfer_conflicts(std::slice::from_ref(&call), &[kind_of(&call)]),
            vec![None],
            "calls are learned per kind"
        );
    }
}
