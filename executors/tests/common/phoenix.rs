//! Contracts for the lifecycle cases: a child that writes, copies or destroys itself,
//! and a factory that creates it (CREATE or CREATE2), creates and destroys it in one
//! transaction, or probes an account's code and calls it.
//!
//! They are assembled here from opcodes: Solidity marks SELFDESTRUCT deprecated, and
//! ferry's contract build refuses warnings.

#![allow(dead_code)]

use std::collections::HashMap;

use revm::primitives::{Address, B256, Bytes, U256, keccak256};

/// A tiny assembler: opcodes, pushes, and labels resolved to two-byte jump targets.
#[derive(Default)]
struct Asm {
    code: Vec<u8>,
    labels: HashMap<&'static str, usize>,
    fixups: Vec<(usize, &'static str)>,
}

mod op {
    pub const STOP: u8 = 0x00;
    pub const ADD: u8 = 0x01;
    pub const SUB: u8 = 0x03;
    pub const EQ: u8 = 0x14;
    pub const ISZERO: u8 = 0x15;
    pub const SHR: u8 = 0x1c;
    pub const CALLER: u8 = 0x33;
    pub const CALLDATALOAD: u8 = 0x35;
    pub const CALLDATASIZE: u8 = 0x36;
    pub const CALLDATACOPY: u8 = 0x37;
    pub const CODECOPY: u8 = 0x39;
    pub const EXTCODESIZE: u8 = 0x3b;
    pub const EXTCODEHASH: u8 = 0x3f;
    pub const POP: u8 = 0x50;
    pub const SLOAD: u8 = 0x54;
    pub const SSTORE: u8 = 0x55;
    pub const JUMPI: u8 = 0x57;
    pub const JUMPDEST: u8 = 0x5b;
    pub const GAS: u8 = 0x5a;
    pub const DUP1: u8 = 0x80;
    pub const DUP6: u8 = 0x85;
    pub const SWAP1: u8 = 0x90;
    pub const CREATE: u8 = 0xf0;
    pub const CALL: u8 = 0xf1;
    pub const RETURN: u8 = 0xf3;
    pub const CREATE2: u8 = 0xf5;
    pub const SELFDESTRUCT: u8 = 0xff;
}

impl Asm {
    fn op(&mut self, ops: &[u8]) -> &mut Self {
        self.code.extend_from_slice(ops);
        self
    }

    /// PUSHn of `value`'s shortest big-endian form (PUSH1 0 for zero).
    fn push(&mut self, value: U256) -> &mut Self {
        let bytes = value.to_be_bytes_trimmed_vec();
        let bytes = if bytes.is_empty() { vec![0] } else { bytes };
        self.code.push(0x5f + bytes.len() as u8);
        self.code.extend_from_slice(&bytes);
        self
    }

    fn push_n(&mut self, value: u64) -> &mut Self {
        self.push(U256::from(value))
    }

    fn push_label(&mut self, label: &'static str) -> &mut Self {
        self.code.push(0x61); // PUSH2
        self.fixups.push((self.code.len(), label));
        self.code.extend_from_slice(&[0, 0]);
        self
    }

    fn label(&mut self, label: &'static str) -> &mut Self {
        self.labels.insert(label, self.code.len());
        self.code.push(op::JUMPDEST);
        self
    }

    /// Jumps to `label` when `CALLDATASIZE == size`.
    fn on_size(&mut self, size: u64, label: &'static str) -> &mut Self {
        self.push_n(size).op(&[op::CALLDATASIZE, op::EQ]).push_label(label).op(&[op::JUMPI])
    }

    fn finish(mut self) -> Vec<u8> {
        for (at, label) in std::mem::take(&mut self.fixups) {
            let target = self.labels[label] as u16;
            self.code[at..at + 2].copy_from_slice(&target.to_be_bytes());
        }
        self.code
    }
}

/// The child's runtime code, by calldata:
/// - empty: SELFDESTRUCT to the caller;
/// - 32 bytes `slot`: `storage[slot + 1] = storage[slot]` (a read made visible);
/// - 64 bytes `slot, value`: `storage[slot] = value`.
pub fn child_runtime() -> Vec<u8> {
    use op::*;
    let mut a = Asm::default();
    a.op(&[CALLDATASIZE, ISZERO]).push_label("destroy").op(&[JUMPI]);
    a.on_size(32, "copy");
    a.push_n(32).op(&[CALLDATALOAD]).push_n(0).op(&[CALLDATALOAD, SSTORE, STOP]);
    a.label("copy");
    a.push_n(0).op(&[CALLDATALOAD, SLOAD]).push_n(0).op(&[CALLDATALOAD]).push_n(1).op(&[ADD, SSTORE, STOP]);
    a.label("destroy");
    a.op(&[CALLER, SELFDESTRUCT]);
    a.finish()
}

/// Init code deploying `runtime`, writing `storage` in the constructor first.
pub fn init_code(runtime: &[u8], storage: &[(u64, u64)]) -> Vec<u8> {
    use op::*;
    let mut a = Asm::default();
    for (slot, value) in storage {
        a.push_n(*value).push_n(*slot).op(&[SSTORE]);
    }
    // PUSH2 length, PUSH2 offset, PUSH1 0, CODECOPY, PUSH2 length, PUSH1 0, RETURN.
    let prefix = a.code.len() + 3 + 3 + 2 + 1 + 3 + 2 + 1;
    let len = (runtime.len() as u16).to_be_bytes();
    let offset = (prefix as u16).to_be_bytes();
    a.op(&[0x61, len[0], len[1], 0x61, offset[0], offset[1]]).push_n(0).op(&[CODECOPY]);
    a.op(&[0x61, len[0], len[1]]).push_n(0).op(&[RETURN]);
    assert_eq!(a.code.len(), prefix);
    let mut code = a.finish();
    code.extend_from_slice(runtime);
    code
}

/// The factory's runtime code. The first calldata byte is the mode:
/// - 0, `salt`, init code: CREATE2; `storage[0]` = the address (0 on failure);
/// - 1, init code: CREATE, likewise;
/// - 2, `salt`, init code: CREATE2, then call the new account with no data (a child
///   destroys itself in the transaction that created it);
/// - 3, `target` (20 bytes), call data: `storage[1]` = EXTCODESIZE(target),
///   `storage[2]` = EXTCODEHASH(target), then call target with the call data.
pub fn factory_runtime() -> Vec<u8> {
    use op::*;
    let mut a = Asm::default();
    // mode = calldata[0]
    a.push_n(0).op(&[CALLDATALOAD]).push_n(248).op(&[SHR]);
    a.op(&[DUP1]).push_n(1).op(&[EQ]).push_label("create").op(&[JUMPI]);
    a.op(&[DUP1]).push_n(3).op(&[EQ]).push_label("probe").op(&[JUMPI]);
    // Modes 0 and 2: the init code (calldata[33..]) to memory 0, CREATE2 with the salt.
    a.push_n(33).op(&[CALLDATASIZE, SUB]).push_n(33).push_n(0).op(&[CALLDATACOPY]);
    a.push_n(1).op(&[CALLDATALOAD]);
    a.push_n(33).op(&[CALLDATASIZE, SUB]).push_n(0).push_n(0).op(&[CREATE2]);
    a.op(&[DUP1]).push_n(0).op(&[SSTORE]);
    // [mode, address]: mode 2 calls the address with no data.
    a.op(&[SWAP1]).push_n(2).op(&[EQ]).push_label("call_new").op(&[JUMPI, STOP]);
    a.label("call_new");
    a.push_n(0).push_n(0).push_n(0).push_n(0).push_n(0).op(&[DUP6, GAS, CALL, STOP]);
    // Mode 1: the init code (calldata[1..]) to memory 0, CREATE.
    a.label("create");
    a.push_n(1).op(&[CALLDATASIZE, SUB]).push_n(1).push_n(0).op(&[CALLDATACOPY]);
    a.push_n(1).op(&[CALLDATASIZE, SUB]).push_n(0).push_n(0).op(&[CREATE]);
    a.push_n(0).op(&[SSTORE, STOP]);
    // Mode 3: target = calldata[1..21]; its code size and hash, then a call with
    // calldata[21..].
    a.label("probe");
    a.push_n(1).op(&[CALLDATALOAD]).push_n(96).op(&[SHR]);
    a.op(&[DUP1, EXTCODESIZE]).push_n(1).op(&[SSTORE]);
    a.op(&[DUP1, EXTCODEHASH]).push_n(2).op(&[SSTORE]);
    a.push_n(21).op(&[CALLDATASIZE, SUB]).push_n(21).push_n(0).op(&[CALLDATACOPY]);
    a.push_n(0).push_n(0).push_n(21).op(&[CALLDATASIZE, SUB]).push_n(0).push_n(0);
    a.op(&[DUP6, GAS, CALL, POP, STOP]);
    a.finish()
}

/// Calldata for the factory's CREATE2 (mode 0, or 2 to destroy at once).
pub fn create2_call(mode: u8, salt: B256, init: &[u8]) -> Bytes {
    [&[mode][..], salt.as_slice(), init].concat().into()
}

/// Calldata for the factory's CREATE.
pub fn create_call(init: &[u8]) -> Bytes {
    [&[1u8][..], init].concat().into()
}

/// Calldata for the factory's probe of `target`, then a call into it with `data`.
pub fn probe_call(target: Address, data: &[u8]) -> Bytes {
    [&[3u8][..], target.as_slice(), data].concat().into()
}

/// The child's write of `value` at `slot`.
pub fn write(slot: u64, value: u64) -> Bytes {
    [U256::from(slot).to_be_bytes::<32>(), U256::from(value).to_be_bytes::<32>()].concat().into()
}

/// The child's copy of `slot` into `slot + 1`.
pub fn copy(slot: u64) -> Bytes {
    U256::from(slot).to_be_bytes::<32>().to_vec().into()
}

/// Where the factory's CREATE2 of `init` with `salt` lands.
pub fn create2_address(factory: Address, salt: B256, init: &[u8]) -> Address {
    factory.create2(salt, keccak256(init))
}
