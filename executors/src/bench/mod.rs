//! Workloads for tests and benchmarks (`cargo bench -p ferry-executors`, `ferry bench
//! executors`), built by really deploying ferry's contracts into in-memory state, and
//! the baseline they are measured against: plain revm, one transaction after another.

pub mod blocks;

use std::{sync::Arc, time::Instant};

use alloy::{
    signers::{SignerSync, local::PrivateKeySigner},
    sol_types::{SolCall, SolConstructor},
};
use ferry_messages::{
    Attestation, Message, QuorumCertificate,
    contracts::{Mailbox, TestRecipient, TestToken, Workbench},
};
use revm::{
    Context, DatabaseCommit, DatabaseRef, ExecuteEvm, MainBuilder, MainContext,
    bytecode::Bytecode,
    context::{BlockEnv, CfgEnv, TxEnv},
    database::CacheDB,
    primitives::{Address, B256, Bytes, TxKind, U256, hardfork::SpecId, keccak256},
    state::AccountInfo,
};

use crate::{BlockContext, Executor, ExecutorConfig, InMemoryState, StateError, StateSource, TxStatus};

/// The chain id of the in-memory chain.
pub const CHAIN_ID: u64 = 31338;
const GWEI: u128 = 1_000_000_000;

/// In-memory state with ferry's contracts deployed and funded accounts.
pub struct Fixture {
    /// The state.
    pub state: Arc<InMemoryState>,
    /// The block batches run in.
    pub ctx: BlockContext,
    /// Funded accounts (keys derived from their index).
    pub accounts: Vec<Address>,
    /// A TestToken every account holds 1e24 of.
    pub token: Address,
    /// The Workbench contract.
    pub workbench: Address,
    /// A Mailbox accepting messages from chain 31337 with `validators` (threshold 2).
    pub mailbox: Address,
    /// Recipients of deliveries.
    pub recipients: Vec<Address>,
    /// The validators' keys.
    pub validators: Vec<PrivateKeySigner>,
    /// The Mailbox it pretends messages come from.
    pub origin_mailbox: Address,
}

/// A transaction from `caller` to `to` (EIP-1559: max fee 2 gwei, tip 1 gwei).
pub fn call(caller: Address, nonce: u64, to: Address, data: Bytes, value: U256, gas_limit: u64) -> TxEnv {
    TxEnv {
        tx_type: 2,
        caller,
        gas_limit,
        gas_price: 2 * GWEI,
        gas_priority_fee: Some(GWEI),
        kind: TxKind::Call(to),
        value,
        data,
        nonce,
        chain_id: Some(CHAIN_ID),
        ..Default::default()
    }
}

fn create(caller: Address, nonce: u64, code: Bytes) -> TxEnv {
    TxEnv { kind: TxKind::Create, ..call(caller, nonce, Address::ZERO, code, U256::ZERO, 10_000_000) }
}

/// The block every fixture batch runs in (beneficiary 0xc0ffee..., base fee 1 gwei).
pub fn block_context() -> BlockContext {
    let block = BlockEnv {
        number: U256::from(100),
        beneficiary: Address::repeat_byte(0xc0),
        timestamp: U256::from(1_800_000_000u64),
        gas_limit: 30_000_000,
        basefee: GWEI as u64,
        prevrandao: Some(B256::repeat_byte(7)),
        ..Default::default()
    };
    BlockContext { block, chain_id: CHAIN_ID, spec: SpecId::PRAGUE }
}

/// The key of fixture account `i`.
pub fn account_key(i: usize) -> B256 {
    keccak256(format!("ferry executor account {i}"))
}

impl Fixture {
    /// Deploys the contracts with real creation transactions and funds `accounts`
    /// accounts with ether and TestToken.
    pub fn new(accounts: usize) -> Result<Self, crate::ExecutorError> {
        let keys: Vec<PrivateKeySigner> =
            (0..accounts.max(2)).filter_map(|i| PrivateKeySigner::from_bytes(&account_key(i)).ok()).collect();
        let accounts: Vec<Address> = keys.iter().map(|k| k.address()).collect();
        let mut state = InMemoryState::new();
        for a in &accounts {
            state.set_account(*a, U256::from(10u128.pow(24)), 0);
        }
        let deployer = accounts[0];
        let validators: Vec<PrivateKeySigner> =
            (0..3).filter_map(|i| PrivateKeySigner::from_bytes(&keccak256(format!("validator {i}"))).ok()).collect();
        let origin_mailbox = Address::repeat_byte(0xaa);
        let ctx = block_context();
        let executor =
            Executor::new(ExecutorConfig { workers: 1, min_parallel_batch: usize::MAX, record_access: false });
        let mut nonce = 0u64;
        let mut deploy = |state: &mut InMemoryState, code: Bytes| -> Result<Address, crate::ExecutorError> {
            let address = deployer.create(nonce);
            let out = executor.execute_sequential(
                Arc::new(state.clone()),
                ctx.clone(),
                vec![create(deployer, nonce, code)],
            )?;
            if out.outcomes[0].status != TxStatus::Success {
                return Err(crate::ExecutorError::Evm(format!("deployment failed: {:?}", out.outcomes[0].status)));
            }
            state.apply(&out.state());
            nonce += 1;
            Ok(address)
        };
        let token_code = [
            TestToken::BYTECODE.to_vec(),
            TestToken::constructorCall { name_: "T".into(), symbol_: "T".into(), owner_: deployer }.abi_encode(),
        ]
        .concat();
        let token = deploy(&mut state, token_code.into())?;
        let workbench = deploy(&mut state, Workbench::BYTECODE.clone())?;
        let set: Vec<Address> = validators.iter().map(|v| v.address()).collect();
        let mailbox_code = [
            Mailbox::BYTECODE.to_vec(),
            Mailbox::constructorCall { owner_: deployer, validators_: set, threshold_: 2 }.abi_encode(),
        ]
        .concat();
        let mailbox = deploy(&mut state, mailbox_code.into())?;
        let recipients: Vec<Address> =
            (0..64).map(|_| deploy(&mut state, TestRecipient::BYTECODE.clone())).collect::<Result<_, _>>()?;
        // Wiring and minting, one by one.
        let mut setup = vec![call(
            deployer,
            nonce,
            mailbox,
            Mailbox::enrollRemoteMailboxCall { domain: 31337, mailbox: origin_mailbox.into_word() }.abi_encode().into(),
            U256::ZERO,
            200_000,
        )];
        for (i, a) in accounts.iter().enumerate() {
            let data = TestToken::mintCall { to: *a, amount: U256::from(10u128.pow(24)) }.abi_encode();
            setup.push(call(deployer, nonce + 1 + i as u64, token, data.into(), U256::ZERO, 200_000));
        }
        let out = executor.execute_sequential(Arc::new(state.clone()), ctx.clone(), setup)?;
        if let Some(bad) = out.outcomes.iter().find(|o| o.status != TxStatus::Success) {
            return Err(crate::ExecutorError::Evm(format!("setup failed: {:?}", bad.status)));
        }
        state.apply(&out.state());
        Ok(Self {
            state: Arc::new(state),
            ctx,
            accounts,
            token,
            workbench,
            mailbox,
            recipients,
            validators,
            origin_mailbox,
        })
    }

    /// The next nonce of every account, as the fixture left them.
    pub fn nonces(&self) -> Vec<u64> {
        self.accounts.iter().map(|a| self.state.basic(*a).ok().flatten().map_or(0, |i| i.nonce)).collect()
    }

    /// A delivery of message `n` to recipient `n % recipients`, from `relayer`.
    pub fn delivery(&self, relayer: Address, nonce: u64, n: u32) -> TxEnv {
        let recipient = self.recipients[n as usize % self.recipients.len()];
        let message = Message {
            version: ferry_messages::VERSION,
            nonce: n,
            origin: 31337,
            sender: Address::repeat_byte(0x5e).into_word(),
            destination: CHAIN_ID as u32,
            recipient: recipient.into_word(),
            body: Bytes::from(n.to_be_bytes().to_vec()),
        };
        let attestation = Attestation {
            origin: 31337,
            origin_mailbox: self.origin_mailbox.into_word(),
            destination: CHAIN_ID as u32,
            block_hash: B256::repeat_byte(0xb1),
            id: message.id(),
        };
        let signatures =
            self.validators[..2].iter().filter_map(|v| v.sign_hash_sync(&attestation.signing_hash()).ok()).collect();
        let metadata = QuorumCertificate::ordered(&attestation, signatures).map(|qc| qc.metadata()).unwrap_or_default();
        let data = Mailbox::processCall { metadata: metadata.into(), message: message.encode().into() }.abi_encode();
        call(relayer, nonce, self.mailbox, data.into(), U256::ZERO, 500_000)
    }
}

/// A named batch.
pub struct Workload {
    /// One of `raw-transfer`, `erc20`, `heavy`, `hot-10`, `hot-30`, `hot-50`,
    /// `dependent-chain`, `mailbox-delivery`.
    pub name: &'static str,
    /// The transactions, in order.
    pub txs: Vec<TxEnv>,
}

/// Every benchmark workload with `size` transactions over `fixture` (which needs at
/// least `2 * size` accounts for the independent ones).
pub fn workloads(f: &Fixture, size: usize) -> Vec<Workload> {
    let nonces = f.nonces();
    let n = f.accounts.len();
    let pair = |i: usize| (f.accounts[i % n], nonces[i % n], f.accounts[(i + size) % n]);
    let erc20 = |i: usize, to: Address| {
        let (from, nonce, _) = pair(i);
        let data = TestToken::transferCall { to, value: U256::from(1000 + i) }.abi_encode();
        call(from, nonce, f.token, data.into(), U256::ZERO, 100_000)
    };
    let hot = |percent: usize| -> Vec<TxEnv> {
        let hot_receiver = Address::repeat_byte(0x40);
        (0..size).map(|i| erc20(i, if (i * 7919) % 100 < percent { hot_receiver } else { pair(i).2 })).collect()
    };
    let relayer = f.accounts[n - 1];
    vec![
        Workload {
            name: "raw-transfer",
            txs: (0..size)
                .map(|i| {
                    let (from, nonce, to) = pair(i);
                    call(from, nonce, to, Bytes::new(), U256::from(1 + i), 21_000)
                })
                .collect(),
        },
        Workload { name: "erc20", txs: (0..size).map(|i| erc20(i, pair(i).2)).collect() },
        Workload {
            name: "heavy",
            txs: (0..size)
                .map(|i| {
                    let (from, nonce, _) = pair(i);
                    let data =
                        Workbench::swapCall { id: U256::from(i), amountIn: U256::from(1_000_000 + i) }.abi_encode();
                    call(from, nonce, f.workbench, data.into(), U256::ZERO, 300_000)
                })
                .collect(),
        },
        Workload { name: "hot-10", txs: hot(10) },
        Workload { name: "hot-30", txs: hot(30) },
        Workload { name: "hot-50", txs: hot(50) },
        Workload {
            name: "dependent-chain",
            txs: (0..size)
                .map(|i| {
                    let (from, nonce, _) = pair(i);
                    let data = Workbench::copyCall { from: U256::from(i), to: U256::from(i + 1) }.abi_encode();
                    call(from, nonce, f.workbench, data.into(), U256::ZERO, 100_000)
                })
                .collect(),
        },
        Workload {
            name: "mailbox-delivery",
            txs: (0..size).map(|i| f.delivery(relayer, nonces[n - 1] + i as u64, i as u32)).collect(),
        },
    ]
}

/// A state source seen through revm's `DatabaseRef`, for the plain-revm baseline.
#[derive(Debug)]
pub struct SourceDb<S>(pub S);

impl<S: StateSource> DatabaseRef for SourceDb<S> {
    type Error = StateError;
    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        self.0.basic(address)
    }
    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, StateError> {
        self.0.code_by_hash(code_hash)
    }
    fn storage_ref(&self, address: Address, index: U256) -> Result<U256, StateError> {
        self.0.storage(address, index)
    }
    fn block_hash_ref(&self, number: u64) -> Result<B256, StateError> {
        self.0.block_hash(number)
    }
}

/// Plain revm: one mainnet EVM, each transaction executed and committed into a
/// `CacheDB` in order. Returns the seconds it took and the gas used.
pub fn plain_revm(state: Arc<InMemoryState>, ctx: &BlockContext, txs: &[TxEnv]) -> (f64, u64) {
    let mut cfg = CfgEnv::new_with_spec(ctx.spec);
    cfg.chain_id = ctx.chain_id;
    let db = CacheDB::new(SourceDb(state));
    let mut evm = Context::mainnet().with_cfg(cfg).with_block(ctx.block.clone()).with_db(db).build_mainnet();
    let start = Instant::now();
    let mut gas = 0;
    for tx in txs {
        if let Ok(out) = evm.transact(tx.clone()) {
            gas += out.result.tx_gas_used();
            evm.ctx.journaled_state.database.commit(out.state);
        }
    }
    (start.elapsed().as_secs_f64(), gas)
}

/// One workload's figures: sequential revm and the parallel pool measured in the same
/// run, alternating.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkloadReport {
    /// The workload.
    pub name: &'static str,
    /// Transactions in the batch.
    pub txs: usize,
    /// Gas the batch used.
    pub gas: u64,
    /// Plain revm, one after another (median seconds).
    pub sequential_s: f64,
    /// The parallel engine, forced (median seconds).
    pub parallel_s: f64,
    /// Plain revm's time over the parallel engine's, per round (both measured in the
    /// same round), the median over the rounds.
    pub speedup: f64,
    /// Split execution, forced (median seconds).
    pub split_s: f64,
    /// Plain revm's time over split execution's, per round, the median over the rounds.
    pub split_speedup: f64,
    /// The pool as the relayer runs it (median seconds): the mode it predicts pays
    /// (Block-STM, split execution or sequential), from what it learned of the kinds.
    pub pool_s: f64,
    /// Plain revm's time over the pool's, per round, the median over the rounds.
    pub pool_speedup: f64,
    /// The pool in sequential mode (median seconds), to compare with plain revm.
    pub sequential_mode_s: f64,
    /// Executions beyond one per transaction, per transaction.
    pub reexecutions_per_tx: f64,
    /// Sum of per-transaction times over the longest read-after-write path (the
    /// beneficiary and senders excluded: they are accounted lazily).
    pub available_parallelism: f64,
    /// Million gas per second, parallel.
    pub mgas_per_s: f64,
    /// The machine's ceiling in the same run: how much more work `workers` copies of
    /// plain revm do at once, each on its own copy of the state, than one alone (the
    /// speedup no engine can beat here).
    pub ceiling: f64,
    /// `speedup / ceiling`: how much of the machine's bound the forced parallel engine
    /// reaches.
    pub speedup_of_ceiling: f64,
    /// `split_speedup / ceiling`, likewise for split execution.
    pub split_of_ceiling: f64,
    /// `pool_speedup / ceiling`, likewise for the pool.
    pub pool_of_ceiling: f64,
    /// The mode the pool chose the last time.
    pub pool_mode: &'static str,
}

/// All workloads.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Worker threads of the pool.
    pub workers: usize,
    /// One entry per workload.
    pub workloads: Vec<WorkloadReport>,
}

/// Measures every workload of `size` transactions, `rounds` times each.
pub fn measure(workers: usize, size: usize, rounds: usize) -> Result<Report, crate::ExecutorError> {
    let fixture = Fixture::new(size * 2 + 2)?;
    // Copies of the state for the ceiling: each thread reads its own.
    let copies: Vec<Fixture> = (1..workers).map(|_| Fixture::new(size * 2 + 2)).collect::<Result<_, _>>()?;
    let executor = Executor::new(ExecutorConfig { workers, min_parallel_batch: 1, record_access: false });
    let mut reports = Vec::new();
    for workload in workloads(&fixture, size) {
        let mut seq = Vec::new();
        let mut par = Vec::new();
        let mut pool = Vec::new();
        let mut split = Vec::new();
        let mut pool_mode = crate::ExecutionMode::Sequential;
        let mut mode = Vec::new();
        let mut reexecutions = 0;
        let mut gas = 0;
        let mut together = Vec::new();
        let copy_txs: Vec<Vec<TxEnv>> = copies
            .iter()
            .map(|c| {
                workloads(c, size).into_iter().find(|w| w.name == workload.name).map(|w| w.txs).unwrap_or_default()
            })
            .collect();
        let runs: Vec<PlainRun<'_>> = std::iter::once((&fixture.state, &fixture.ctx, &workload.txs[..]))
            .chain(copies.iter().zip(&copy_txs).map(|(c, txs)| (&c.state, &c.ctx, &txs[..])))
            .collect();
        for round in 0..rounds.max(1) {
            // Each run on a quiet pool (a parallel batch hands its freeing to a worker,
            // which would run inside the next measurement); each gets its own copy of the
            // batch, made and dropped outside the clock.
            for run in turned(round, 6) {
                executor.wait_idle();
                match run {
                    0 => together.push(plain_revm_at_once(&runs)),
                    1 => {
                        let (s, g) = plain_revm(Arc::clone(&fixture.state), &fixture.ctx, &workload.txs);
                        seq.push(s);
                        gas = g;
                    }
                    2 => {
                        let (seconds, out) = timed(&workload.txs, |txs| {
                            executor.execute_parallel(fixture.state.clone(), fixture.ctx.clone(), txs)
                        });
                        par.push(seconds);
                        reexecutions += out?.reexecutions;
                    }
                    3 => {
                        let (seconds, out) = timed(&workload.txs, |txs| {
                            executor.execute_sequential(fixture.state.clone(), fixture.ctx.clone(), txs)
                        });
                        mode.push(seconds);
                        out?;
                    }
                    4 => {
                        let (seconds, out) = timed(&workload.txs, |txs| {
                            executor.execute_split(fixture.state.clone(), fixture.ctx.clone(), txs)
                        });
                        split.push(seconds);
                        out?;
                    }
                    _ => {
                        // The pool as the relayer uses it: it picks the mode per kind of batch.
                        let (seconds, out) = timed(&workload.txs, |txs| {
                            executor.execute(fixture.state.clone(), fixture.ctx.clone(), txs)
                        });
                        pool.push(seconds);
                        pool_mode = out?.mode;
                    }
                }
            }
        }
        let (speedup, pool_speedup, split_speedup) =
            (paired_speedup(&seq, &par), paired_speedup(&seq, &pool), paired_speedup(&seq, &split));
        let ceiling = workers as f64 * paired_speedup(&seq, &together);
        let (sequential_s, parallel_s, sequential_mode_s) = (median(seq), median(par), median(mode));
        let (pool_s, split_s) = (median(pool), median(split));
        reports.push(WorkloadReport {
            name: workload.name,
            txs: workload.txs.len(),
            gas,
            sequential_s,
            parallel_s,
            speedup,
            split_s,
            split_speedup,
            pool_s,
            pool_speedup,
            sequential_mode_s,
            reexecutions_per_tx: reexecutions as f64 / (rounds.max(1) * workload.txs.len().max(1)) as f64,
            available_parallelism: available_parallelism(&fixture.state, &fixture.ctx, &workload.txs),
            mgas_per_s: gas as f64 / parallel_s / 1e6,
            ceiling,
            speedup_of_ceiling: speedup / ceiling,
            split_of_ceiling: split_speedup / ceiling,
            pool_of_ceiling: pool_speedup / ceiling,
            pool_mode: pool_mode.as_str(),
        });
    }
    Ok(Report { workers, workloads: reports })
}

/// A batch for plain revm: the state, the block and the transactions.
pub type PlainRun<'a> = (&'a Arc<InMemoryState>, &'a BlockContext, &'a [TxEnv]);

/// Plain revm on each of `runs` at the same moment, one thread each: the seconds until
/// the last one finished.
pub fn plain_revm_at_once(runs: &[PlainRun<'_>]) -> f64 {
    let barrier = std::sync::Barrier::new(runs.len());
    std::thread::scope(|scope| {
        let Some(((state, ctx, txs), others)) = runs.split_first() else { return 0.0 };
        let others: Vec<_> = others
            .iter()
            .map(|&(state, ctx, txs)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    plain_revm(Arc::clone(state), ctx, txs).0
                })
            })
            .collect();
        barrier.wait();
        let mine = plain_revm(Arc::clone(state), ctx, txs).0;
        others.into_iter().filter_map(|h| h.join().ok()).fold(mine, f64::max)
    })
}

/// Seconds `run` takes on its own copy of `txs`, made outside the clock, and what it
/// returned (so that the caller drops it outside the clock too).
pub fn timed<R>(txs: &[TxEnv], run: impl FnOnce(Vec<TxEnv>) -> R) -> (f64, R) {
    let txs = txs.to_vec();
    let start = Instant::now();
    let out = run(txs);
    (start.elapsed().as_secs_f64(), out)
}

/// The order of round `round`'s `runs` measurements, turned by one each round, so that
/// no run always follows the same other: whichever comes first finds the caches holding
/// another run's tables, and none always does.
pub fn turned(round: usize, runs: usize) -> impl Iterator<Item = usize> {
    (0..runs).map(move |i| (i + round) % runs.max(1))
}

/// The median over rounds of `baseline[r] / runs[r]`: a speedup taken from pairs
/// measured in the same round, which share the host's speed of that moment (it drifts
/// between rounds by more than the differences measured).
pub fn paired_speedup(baseline: &[f64], runs: &[f64]) -> f64 {
    median(baseline.iter().zip(runs).map(|(b, r)| b / r).collect())
}

/// The median of `xs` (NaN if empty).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Sum of per-transaction times over the longest read-after-write dependency path.
pub fn available_parallelism(state: &Arc<InMemoryState>, ctx: &BlockContext, txs: &[TxEnv]) -> f64 {
    use std::collections::HashMap;
    let mut cfg = CfgEnv::new_with_spec(ctx.spec);
    cfg.chain_id = ctx.chain_id;
    let db = CacheDB::new(SourceDb(Arc::clone(state)));
    let mut evm = Context::mainnet().with_cfg(cfg).with_block(ctx.block.clone()).with_db(db).build_mainnet();
    let lazy: Vec<Address> = txs.iter().map(|t| t.caller).chain([ctx.block.beneficiary]).collect();
    let mut ready: HashMap<(Address, Option<U256>), f64> = HashMap::new();
    let (mut total, mut longest) = (0.0, 0.0f64);
    for tx in txs {
        let start = Instant::now();
        let Ok(out) = evm.transact(tx.clone()) else { continue };
        let t = start.elapsed().as_secs_f64();
        total += t;
        let mut reads = Vec::new();
        let mut writes = Vec::new();
        for (address, account) in &out.state {
            if lazy.contains(address) {
                continue;
            }
            reads.push((*address, None));
            if account.is_touched() && (account.is_created() || account.info.balance != account.original_info().balance)
            {
                writes.push((*address, None));
            }
            for (slot, value) in &account.storage {
                reads.push((*address, Some(*slot)));
                if value.is_changed() {
                    writes.push((*address, Some(*slot)));
                }
            }
        }
        let start_at = reads.iter().filter_map(|k| ready.get(k)).fold(0.0f64, |a, b| a.max(*b));
        let finish = start_at + t;
        for key in writes {
            let entry = ready.entry(key).or_insert(0.0);
            *entry = entry.max(finish);
        }
        longest = longest.max(finish);
        evm.ctx.journaled_state.database.commit(out.state);
    }
    if longest > 0.0 { total / longest } else { 1.0 }
}

impl std::fmt::Display for Report {
    /// The report as a table, one workload a line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<18} {:>11} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:<10} {:>12} {:>9} {:>9} {:>8} {:>8} {:>8} {:>10} {:>8}",
            "workload",
            "gas",
            "seq ms",
            "par ms",
            "speedup",
            "split",
            "pool ms",
            "pool",
            "pool mode",
            "seq-mode ms",
            "reexec/tx",
            "avail par",
            "Mgas/s",
            "ceiling",
            "par/ceil",
            "split/ceil",
            "pool/ceil"
        )?;
        for w in &self.workloads {
            writeln!(
                f,
                "{:<18} {:>11} {:>9.2} {:>9.2} {:>7.2}x {:>7.2}x {:>9.2} {:>7.2}x {:<10} {:>12.2} {:>9.3} {:>9.2} {:>8.0} {:>7.2}x {:>8.2} {:>10.2} {:>9.2}",
                w.name,
                w.gas,
                w.sequential_s * 1e3,
                w.parallel_s * 1e3,
                w.speedup,
                w.split_speedup,
                w.pool_s * 1e3,
                w.pool_speedup,
                w.pool_mode,
                w.sequential_mode_s * 1e3,
                w.reexecutions_per_tx,
                w.available_parallelism,
                w.mgas_per_s,
                w.ceiling,
                w.speedup_of_ceiling,
                w.split_of_ceiling,
                w.pool_of_ceiling
            )?;
        }
        Ok(())
    }
}
