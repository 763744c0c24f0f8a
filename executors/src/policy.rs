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

use crate::ExecutionMode;

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

/// Below this much predicted sequential work a batch runs sequentially: the parallel
/// engine's fixed cost per batch (tens of microseconds here) would eat the gain.
const MIN_PARALLEL_WORK_S: f64 = 300e-6;
/// Below this mean execution time per transaction the engine's own cost per
/// transaction is as large as what a second worker saves (real blocks of transfers and
/// token moves at 1-3 us a transaction lose in parallel or break even, 2 workers here).
const MIN_TX_COST_S: f64 = 3e-6;
/// How much longer a transaction's execution takes inside a parallel run than alone
/// (reads through the multi-version memory, a second core sharing the caches): 1.3-1.5x
/// on real blocks here, cheap and heavy alike. Costs learned in parallel are divided by
/// it, so that they predict sequential work like those learned sequentially; else a
/// kind once run in parallel would look dear enough to stay there.
const PARALLEL_TIME_INFLATION: f64 = 1.4;
/// Above this many predicted re-executions per transaction, counted or weighted by
/// cost, a parallel run loses (real blocks that lose in parallel re-execute 0.9-1.7
/// times per transaction, those that win 0.8 or fewer).
const MAX_CONFLICTS: f64 = 0.8;
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
/// A kind kept out of parallel runs for its conflicts has them forgotten this much per
/// sequential batch learned from, so that it is tried in parallel again now and then.
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
}

/// What the pool does with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    /// How it runs.
    pub mode: ExecutionMode,
    /// Whether its run is timed to learn from (see [`Policy::sample`]).
    pub learn: bool,
    /// In a parallel run, the transactions to start first (see [`late_and_long`]).
    pub heads: Vec<usize>,
}

impl Choice {
    /// A sequential run, timed to learn from or not.
    fn sequential(learn: bool) -> Self {
        Self { mode: ExecutionMode::Sequential, learn, heads: Vec::new() }
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
        let unknown = KindStats { cost: UNSEEN_COST_S, conflicts: None };
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
        // Conflicts only once the work would pay: reading them off a batch of cheap
        // transfers costs as much as a few percent of running it.
        let worth_it = !mostly_unseen && work_s >= MIN_PARALLEL_WORK_S && work_s / kinds.len() as f64 >= MIN_TX_COST_S;
        let conflicts = worth_it.then(|| conflicts_of(txs, kinds, &stats));
        let pays = conflicts.is_some_and(|c| c <= MAX_CONFLICTS);
        tracing::trace!(txs = kinds.len(), work_s, ?conflicts, pays, "mode chosen");
        match pays {
            // A parallel run always teaches its conflicts.
            true => Choice { mode: ExecutionMode::Parallel, learn: true, heads: heads_of(&stats, workers) },
            false => Choice::sequential(unseen > 0 || self.sample()),
        }
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
        let inflation = if reexecutions.is_some() { PARALLEL_TIME_INFLATION } else { 1.0 };
        for (kind, (count, cost, again)) in batch {
            let (cost, again) = (cost / count / inflation, reexecutions.map(|_| again / count));
            // A kind's first measurement is taken whole: one batch is the best guess there is.
            let stats = known.entry(kind).or_insert(KindStats { cost, conflicts: None });
            stats.cost += LEARNING_RATE * (cost - stats.cost);
            stats.conflicts = match (again, stats.conflicts) {
                (Some(again), None) => Some(again),
                (Some(again), Some(known)) => Some(known + LEARNING_RATE * (again - known)),
                (None, known) => known.map(|c| c * CONFLICT_DECAY),
            };
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
    let transfer = (Address::ZERO, [0; 4]);
    let mut paid: rustc_hash::FxHashSet<Address> = Default::default();
    txs.iter()
        .zip(kinds)
        .map(|(tx, kind)| {
            let TxKind::Call(to) = tx.kind else { return None };
            if *kind != transfer {
                return None;
            }
            let conflict = paid.contains(&to) || paid.contains(&tx.caller);
            paid.insert(to);
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

    /// `n` transactions of `kind` (to distinct recipients) and their kinds.
    fn batch(n: usize, kind: Kind) -> (Vec<TxEnv>, Vec<Kind>) {
        let data: revm::primitives::Bytes =
            if kind.0 == Address::ZERO { Default::default() } else { kind.1.to_vec().into() };
        let txs = (0..n)
            .map(|i| TxEnv {
                caller: Address::with_last_byte(i as u8),
                kind: TxKind::Call(if kind.0 == Address::ZERO { Address::repeat_byte(i as u8) } else { kind.0 }),
                data: data.clone(),
                ..Default::default()
            })
            .collect();
        (txs, kinds(n, kind))
    }

    fn choose(policy: &Policy, (txs, kinds): &(Vec<TxEnv>, Vec<Kind>), workers: usize) -> ExecutionMode {
        policy.choose(txs, kinds, workers, 4).mode
    }

    #[test]
    fn sequential_batches_of_known_kinds_are_learned_from_one_in_four() {
        let policy = Policy::default();
        let transfer = (Address::ZERO, [0; 4]);
        let batch = batch(1000, transfer);
        let learned = |policy: &Policy| (0..8).filter(|_| policy.choose(&batch.0, &batch.1, 2, 4).learn).count();
        assert_eq!(learned(&policy), 8, "unseen kinds: every batch");
        policy.learn(&batch.1, &vec![1e-6; 1000], None);
        assert_eq!(learned(&policy), 2, "known kinds: one in four");
        let small = self::batch(3, transfer);
        assert!(policy.choose(&small.0, &small.1, 2, 4).learn && policy.choose(&small.0, &small.1, 2, 4).learn);
    }

    #[test]
    fn small_cheap_or_conflicting_batches_run_sequentially() {
        let policy = Policy::default();
        let call = (Address::repeat_byte(1), [1, 2, 3, 4]);
        // Unseen kinds are timed sequentially first, then tried in parallel when the
        // batch is big enough.
        assert_eq!(choose(&policy, &batch(100, call), 2), ExecutionMode::Sequential, "unseen");
        policy.learn(&kinds(100, call), &vec![10e-6; 100], None);
        assert_eq!(choose(&policy, &batch(100, call), 2), ExecutionMode::Parallel);
        assert_eq!(choose(&policy, &batch(3, call), 2), ExecutionMode::Sequential, "too small");
        assert_eq!(choose(&policy, &batch(100, call), 1), ExecutionMode::Sequential, "one worker");
        assert_eq!(choose(&policy, &batch(20, call), 2), ExecutionMode::Sequential, "too little work");

        // Cheap transfers: the engine's cost per transaction outweighs the gain.
        let transfer = (Address::ZERO, [0; 4]);
        policy.learn(&kinds(1000, transfer), &vec![1e-6; 1000], None);
        assert_eq!(choose(&policy, &batch(1000, transfer), 2), ExecutionMode::Sequential);

        // A kind that conflicted in parallel runs sequentially, then is tried again.
        policy.learn(&kinds(100, call), &vec![20e-6; 100], Some(&vec![2; 100]));
        assert_eq!(choose(&policy, &batch(100, call), 2), ExecutionMode::Sequential);
        let mut tries = 0;
        while choose(&policy, &batch(100, call), 2) == ExecutionMode::Sequential {
            policy.learn(&kinds(100, call), &vec![20e-6; 100], None);
            tries += 1;
            assert!(tries < 50, "a conflicting kind is never tried in parallel again");
        }
        assert!(tries > 5, "a conflicting kind is not tried again at once");
    }

    #[test]
    fn a_batch_mostly_of_unseen_kinds_is_timed_sequentially_first() {
        let policy = Policy::default();
        let (known, new) = ((Address::repeat_byte(1), [1; 4]), (Address::repeat_byte(2), [2; 4]));
        policy.learn(&kinds(1, known), &[4e-6], None);
        let mixed = |known_txs: usize| {
            let (a, b) = (batch(known_txs, known), batch(100 - known_txs, new));
            ([a.0, b.0].concat(), [a.1, b.1].concat())
        };
        let first = policy.choose(&mixed(40).0, &mixed(40).1, 2, 4);
        assert_eq!((first.mode, first.learn), (ExecutionMode::Sequential, true), "60 of 100 unseen");
        assert_eq!(choose(&policy, &mixed(60), 2), ExecutionMode::Parallel, "40 of 100 unseen");
        // Timed alone, the new kind turns out cheap: the batch stays sequential.
        policy.learn(&kinds(60, new), &vec![1e-6; 60], None);
        assert_eq!(choose(&policy, &mixed(40), 2), ExecutionMode::Sequential, "learned cheap");
    }

    #[test]
    fn conflicts_count_per_transaction_and_by_what_they_cost() {
        let (long, short) = ((Address::repeat_byte(1), [1; 4]), (Address::repeat_byte(2), [2; 4]));
        let (a, b) = (batch(1, long), batch(8, short));
        let block = ([a.0, b.0].concat(), [a.1, b.1].concat());
        // One long call that runs again, eight short calm ones: 1 in 9 by count.
        let policy = Policy::default();
        policy.learn(&kinds(1, long), &[1.4e-3], Some(&[1]));
        policy.learn(&kinds(8, short), &[28e-6; 8], Some(&[0; 8]));
        assert_eq!(choose(&policy, &block, 2), ExecutionMode::Sequential);
        // The short ones conflicting and the long one calm: most of the work is calm,
        // but eight of nine run again, and counted per transaction that is too many.
        let policy = Policy::default();
        policy.learn(&kinds(1, long), &[1.4e-3], Some(&[0]));
        policy.learn(&kinds(8, short), &[28e-6; 8], Some(&[1; 8]));
        assert_eq!(choose(&policy, &block, 2), ExecutionMode::Sequential);
        // Calm both ways: parallel.
        policy.learn(&kinds(8, short), &[28e-6; 8], Some(&[0; 8]));
        policy.learn(&kinds(8, short), &[28e-6; 8], Some(&[0; 8]));
        policy.learn(&kinds(8, short), &[28e-6; 8], Some(&[0; 8]));
        assert_eq!(choose(&policy, &block, 2), ExecutionMode::Parallel);
    }

    #[test]
    fn conflicts_are_learned_from_parallel_runs_only() {
        let policy = Policy::default();
        let call = (Address::repeat_byte(1), [1; 4]);
        let batch = batch(100, call);
        // A sequential run measures cost but cannot tell conflicts: none are assumed.
        policy.learn(&batch.1, &vec![20e-6; 100], None);
        assert_eq!(choose(&policy, &batch, 2), ExecutionMode::Parallel);
        // The first parallel run is taken whole: each ran once more.
        policy.learn(&batch.1, &vec![20e-6; 100], Some(&vec![1; 100]));
        assert_eq!(conflicts_of(&batch.0, &batch.1, &policy.stats(&batch.1).0), 1.0);
        assert_eq!(choose(&policy, &batch, 2), ExecutionMode::Sequential);
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
        let all = ([cheap.0.clone(), long.0.clone()].concat(), [cheap.1.clone(), long.1.clone()].concat());
        policy.learn(&cheap.1[..1], &[14e-6], Some(&[0]));
        let unseen = policy.choose(&all.0, &all.1, 2, 4);
        assert_eq!(unseen.mode, ExecutionMode::Parallel, "a few unseen kinds are tried in parallel");
        assert!(unseen.heads.is_empty(), "unseen kinds are not started first");
        policy.learn(&long.1, &[300e-6], Some(&[0]));
        assert_eq!(policy.choose(&all.0, &all.1, 2, 4).heads, vec![40]);
        // A long kind that conflicts would likely run twice: left in order.
        policy.learn(&long.1, &[300e-6], Some(&[3]));
        assert!(policy.choose(&all.0, &all.1, 2, 4).heads.is_empty());
    }

    #[test]
    fn times_taken_in_parallel_are_put_in_sequential_terms() {
        let call = (Address::repeat_byte(1), [1; 4]);
        let batch = batch(100, call);
        let policy = Policy::default();
        policy.learn(&batch.1, &vec![14e-6; 100], Some(&vec![0; 100]));
        let work = work_of(&policy.stats(&batch.1).0);
        assert!((work - 100.0 * 14e-6 / PARALLEL_TIME_INFLATION).abs() < 1e-12, "{work}");
        // 4 us a transaction inside a parallel run is under 3 us alone: not worth it.
        let cheap = Policy::default();
        cheap.learn(&batch.1, &vec![4e-6; 100], Some(&vec![0; 100]));
        assert_eq!(choose(&cheap, &batch, 2), ExecutionMode::Sequential);
        cheap.learn(&batch.1, &vec![5e-6; 100], None);
        assert_eq!(choose(&cheap, &batch, 2), ExecutionMode::Parallel, "5 us alone is");
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
