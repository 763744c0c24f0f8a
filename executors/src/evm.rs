//! One reusable EVM per worker, run through a handler that defers the beneficiary's fee
//! (credited at commit, in order) so that fee payment is not a hot spot.

use std::cell::Cell;

use revm::{
    Context, MainBuilder, MainContext,
    context::{
        Block, CfgEnv, ContextTr, JournalTr, Transaction, TxEnv,
        result::{EVMError, ExecutionResult, HaltReason},
    },
    handler::{FrameResult, Handler, MainnetContext, MainnetEvm},
    interpreter::{
        InstructionContext, InstructionExecResult,
        instructions::{Instruction, host},
        interpreter::EthInterpreter,
    },
    primitives::{Address, U256, hardfork::SpecId},
    state::EvmState,
};

use crate::{BlockContext, view::StateView};

/// The EVM a worker owns.
pub(crate) type WorkerEvm = MainnetEvm<MainnetContext<StateView>>;

/// The EVM's error type.
pub(crate) type EvmError = EVMError<crate::view::ViewError>;

const BALANCE: u8 = 0x31;
const SELFBALANCE: u8 = 0x47;

/// A new EVM over an idle view, with balance reads of lazily accounted senders watched.
pub(crate) fn build(spec: SpecId) -> WorkerEvm {
    let cfg = CfgEnv::new_with_spec(spec);
    let mut evm = Context::mainnet().with_cfg(cfg).with_db(StateView::default()).build_mainnet();
    let gas = *evm.instruction.gas_table();
    evm.instruction.insert_instruction(BALANCE, Instruction::new(watched_balance), gas[BALANCE as usize]);
    evm.instruction.insert_instruction(SELFBALANCE, Instruction::new(watched_selfbalance), gas[SELFBALANCE as usize]);
    evm
}

/// Points the EVM at a block and chain, rebuilding it if the fork changed.
pub(crate) fn prepare(evm: &mut WorkerEvm, ctx: &BlockContext) {
    if evm.ctx.cfg.spec != ctx.spec {
        let view = std::mem::take(evm.ctx.db_mut());
        *evm = build(ctx.spec);
        *evm.ctx.db_mut() = view;
    }
    evm.ctx.cfg.chain_id = ctx.chain_id;
    evm.ctx.block = ctx.block.clone();
}

/// BALANCE, noting when it reads an account whose balance the view only pretends to know.
fn watched_balance(
    context: InstructionContext<'_, MainnetContext<StateView>, EthInterpreter>,
) -> InstructionExecResult {
    if let Ok(word) = context.interpreter.stack.peek(0) {
        context.host.db_mut().note_balance_read(Address::from_word(word.into()));
    }
    host::balance(context)
}

/// SELFBALANCE, likewise (a delegated EOA running its own code).
fn watched_selfbalance(
    context: InstructionContext<'_, MainnetContext<StateView>, EthInterpreter>,
) -> InstructionExecResult {
    let target = context.interpreter.input.target_address;
    context.host.db_mut().note_balance_read(target);
    host::selfbalance(context)
}

/// What running one transaction gives: the result (or an invalid-transaction error),
/// the state it touched, and the fee the beneficiary is owed.
pub(crate) struct Run {
    pub result: Result<ExecutionResult, EvmError>,
    pub state: EvmState,
    pub fee: U256,
}

/// Runs `tx` without crediting the beneficiary and without committing.
pub(crate) fn run(evm: &mut WorkerEvm, tx: TxEnv) -> Run {
    evm.ctx.tx = tx;
    run_current(evm)
}

/// Runs the transaction the EVM holds, likewise.
pub(crate) fn run_current(evm: &mut WorkerEvm) -> Run {
    let mut handler = DeferredFee::default();
    let result = handler.run(evm);
    // Always: it clears the journal, which keeps accounts loaded even after an error.
    let state = evm.ctx.journal_mut().finalize();
    Run { result, state, fee: handler.fee.get() }
}

/// Spent state maps bigger than this many accounts are dropped, not reused: clearing
/// one costs in proportion to its capacity, and a rare transaction that touched hundreds
/// would make every later one pay for it.
const RECYCLED_ACCOUNTS: usize = 64;

/// Hands a transaction's spent state map back to the journal, emptied, so that the next
/// transaction fills it in place rather than growing a new one from nothing (two or three
/// allocations per transaction, a tenth of a cheap transfer's cost).
pub(crate) fn recycle(evm: &mut WorkerEvm, mut state: EvmState) {
    let journal = &mut evm.ctx.journaled_state.inner.state;
    if state.capacity() <= RECYCLED_ACCOUNTS && journal.capacity() == 0 {
        state.clear();
        *journal = state;
    }
}

/// The mainnet handler, except that the beneficiary's reward is recorded, not paid.
#[derive(Default)]
struct DeferredFee {
    fee: Cell<U256>,
}

impl Handler for DeferredFee {
    type Evm = WorkerEvm;
    type Error = EvmError;
    type HaltReason = HaltReason;

    fn reward_beneficiary(&self, evm: &mut WorkerEvm, exec_result: &mut FrameResult) -> Result<(), EvmError> {
        let ctx = &evm.ctx;
        let basefee = ctx.block.basefee() as u128;
        let price = ctx.tx.effective_gas_price(basefee);
        let spec: SpecId = ctx.cfg.spec;
        let coinbase_price = if spec.is_enabled_in(SpecId::LONDON) { price.saturating_sub(basefee) } else { price };
        let gas = exec_result.gas();
        let used = gas.used().saturating_sub(gas.reservoir());
        self.fee.set(U256::from(coinbase_price) * U256::from(used));
        Ok(())
    }
}
