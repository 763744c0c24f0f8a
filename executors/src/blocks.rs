//! Real Ethereum blocks with the state they ran on, and what their headers say their
//! execution gives: the conformance suite's and the real-block benchmark's input.
//!
//! A data directory holds `blocks/<number>/` folders, each with `block.json` (the RPC
//! block, full transactions), `pre_state.json` (address to `{balance, nonce, code_hash,
//! storage}`: pevm's published format) and `bytecodes.json` (code hash to code), and a
//! `block_hashes.json` (number to hash, for BLOCKHASH); any of these files may be gzip'd
//! instead (`name.json.gz`). `ops/mainnet-data.py` makes one from pevm's repository;
//! `executors/tests/data/mainnet` is a compact one the repository carries.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use alloy::{
    consensus::{Eip658Value, Receipt, ReceiptEnvelope, ReceiptWithBloom, TxType, proofs::calculate_receipt_root},
    primitives::{Bloom, Log},
    rpc::types::Block,
};
use alloy_evm::FromRecoveredTx;
use alloy_hardforks::{EthereumChainHardforks, EthereumHardforks};
use revm::{
    bytecode::Bytecode,
    context::{BlockEnv, TxEnv},
    primitives::{
        Address, B256, Bytes, U256,
        eip4844::{BLOB_BASE_FEE_UPDATE_FRACTION_CANCUN, BLOB_BASE_FEE_UPDATE_FRACTION_PRAGUE},
        hardfork::SpecId,
        keccak256,
    },
};
use serde::Deserialize;

use crate::{BlockContext, InMemoryState, TxOutcome, TxStatus};

/// Ethereum mainnet's chain id.
pub const MAINNET_CHAIN_ID: u64 = 1;

/// Why a block could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BlockDataError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file is not what it should be.
    #[error("decoding {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: serde_json::Error,
    },
    /// The pre-state names code the data does not hold: the block cannot be run.
    #[error("block {number}: {missing} of its codes are missing (first: {first})")]
    MissingCode {
        /// The block.
        number: u64,
        /// How many code hashes have no code.
        missing: usize,
        /// One of them.
        first: B256,
    },
    /// A code does not hash to the hash it is filed under.
    #[error("code filed under {filed} hashes to {actual}")]
    CodeHash {
        /// The hash it is filed under.
        filed: B256,
        /// Its keccak256.
        actual: B256,
    },
    /// The block's own hash is not its header's hash.
    #[error("block {number}: header hashes to {actual}, the block says {claimed}")]
    HeaderHash {
        /// The block.
        number: u64,
        /// The hash the block carries.
        claimed: B256,
        /// The header's keccak256.
        actual: B256,
    },
}

/// One real block, ready to run: its header, its transactions as the EVM takes them,
/// and the state before it.
#[derive(Debug, Clone)]
pub struct RealBlock {
    /// The header, as the chain has it (its hash checked).
    pub header: alloy::consensus::Header,
    /// The block's hash.
    pub hash: B256,
    /// The block, chain and fork to run in.
    pub ctx: BlockContext,
    /// The transactions, in block order.
    pub txs: Vec<TxEnv>,
    /// Each transaction's type, for its receipt.
    pub tx_types: Vec<TxType>,
    /// The state before the block.
    pub state: Arc<InMemoryState>,
}

impl RealBlock {
    /// The total gas its transactions used.
    pub fn gas_used(&self) -> u64 {
        self.header.gas_used
    }
}

/// The fork mainnet runs at block `number` and `timestamp`.
pub fn mainnet_spec(number: u64, timestamp: u64) -> SpecId {
    let forks = EthereumChainHardforks::mainnet();
    let by_time = [
        (forks.is_osaka_active_at_timestamp(timestamp), SpecId::OSAKA),
        (forks.is_prague_active_at_timestamp(timestamp), SpecId::PRAGUE),
        (forks.is_cancun_active_at_timestamp(timestamp), SpecId::CANCUN),
        (forks.is_shanghai_active_at_timestamp(timestamp), SpecId::SHANGHAI),
    ];
    let by_number = [
        (forks.is_paris_active_at_block(number), SpecId::MERGE),
        (forks.is_london_active_at_block(number), SpecId::LONDON),
        (forks.is_berlin_active_at_block(number), SpecId::BERLIN),
        (forks.is_istanbul_active_at_block(number), SpecId::ISTANBUL),
        (forks.is_petersburg_active_at_block(number), SpecId::PETERSBURG),
        (forks.is_byzantium_active_at_block(number), SpecId::BYZANTIUM),
        (forks.is_spurious_dragon_active_at_block(number), SpecId::SPURIOUS_DRAGON),
        (forks.is_tangerine_whistle_active_at_block(number), SpecId::TANGERINE),
        (forks.is_homestead_active_at_block(number), SpecId::HOMESTEAD),
    ];
    by_time.into_iter().chain(by_number).find_map(|(active, spec)| active.then_some(spec)).unwrap_or(SpecId::FRONTIER)
}

/// The EVM's block environment for `header` on `spec`.
pub fn block_env(header: &alloy::consensus::Header, spec: SpecId) -> BlockEnv {
    let mut block = BlockEnv {
        number: U256::from(header.number),
        beneficiary: header.beneficiary,
        timestamp: U256::from(header.timestamp),
        gas_limit: header.gas_limit,
        basefee: header.base_fee_per_gas.unwrap_or_default(),
        difficulty: header.difficulty,
        // After the merge the mix hash field carries RANDAO (what DIFFICULTY reads).
        prevrandao: spec.is_enabled_in(SpecId::MERGE).then_some(header.mix_hash),
        blob_excess_gas_and_price: None,
        ..Default::default()
    };
    if let Some(excess) = header.excess_blob_gas {
        let fraction = if spec.is_enabled_in(SpecId::PRAGUE) {
            BLOB_BASE_FEE_UPDATE_FRACTION_PRAGUE
        } else {
            BLOB_BASE_FEE_UPDATE_FRACTION_CANCUN
        };
        block.set_blob_excess_gas_and_price(excess, fraction);
    }
    block
}

/// An account as pevm's `pre_state.json` writes it.
#[derive(Deserialize)]
struct PreAccount {
    balance: U256,
    nonce: u64,
    #[serde(default)]
    code_hash: Option<B256>,
    #[serde(default)]
    storage: BTreeMap<U256, U256>,
}

/// A JSON file, or its gzip'd twin (`name.json.gz`) when the plain one is absent.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, BlockDataError> {
    let (path, bytes) = match std::fs::read(path) {
        Ok(bytes) => (path.to_owned(), bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut name = path.as_os_str().to_owned();
            name.push(".gz");
            let gzipped = PathBuf::from(name);
            let bytes = gunzip(&gzipped).map_err(|source| BlockDataError::Io { path: gzipped.clone(), source })?;
            (gzipped, bytes)
        }
        Err(source) => return Err(BlockDataError::Io { path: path.to_owned(), source }),
    };
    serde_json::from_slice(&bytes).map_err(|source| BlockDataError::Json { path, source })
}

/// A gzip'd file's contents.
fn gunzip(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(std::fs::File::open(path)?), &mut bytes)?;
    Ok(bytes)
}

/// A data directory of real blocks.
#[derive(Debug, Clone)]
pub struct BlockData {
    dir: PathBuf,
    block_hashes: BTreeMap<u64, B256>,
}

impl BlockData {
    /// Opens `dir`, reading its block hashes.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, BlockDataError> {
        let dir = dir.into();
        let hashes: BTreeMap<String, B256> = read_json(&dir.join("block_hashes.json"))?;
        let block_hashes = hashes.into_iter().filter_map(|(n, h)| Some((n.parse().ok()?, h))).collect();
        Ok(Self { dir, block_hashes })
    }

    /// The block numbers it holds, ascending.
    pub fn numbers(&self) -> Result<Vec<u64>, BlockDataError> {
        let path = self.dir.join("blocks");
        let entries = std::fs::read_dir(&path).map_err(|source| BlockDataError::Io { path: path.clone(), source })?;
        let mut numbers: Vec<u64> =
            entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect::<Vec<_>>();
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// Block `number`, with its pre-state and codes, its header's hash checked.
    pub fn load(&self, number: u64) -> Result<RealBlock, BlockDataError> {
        let dir = self.block_dir(number);
        let block: Block = read_json(&dir.join("block.json"))?;
        let header = block.header.inner.clone();
        let actual = header.hash_slow();
        if actual != block.header.hash {
            return Err(BlockDataError::HeaderHash { number, claimed: block.header.hash, actual });
        }
        let spec = mainnet_spec(header.number, header.timestamp);
        let ctx = BlockContext { block: block_env(&header, spec), chain_id: MAINNET_CHAIN_ID, spec };
        let transactions = block.transactions.into_transactions_vec();
        let txs = transactions.iter().map(|tx| TxEnv::from_recovered_tx(tx.inner.inner(), tx.inner.signer())).collect();
        let tx_types = transactions.iter().map(|tx| tx.inner.tx_type()).collect();
        let state = self.pre_state(number, &dir)?;
        Ok(RealBlock { header, hash: block.header.hash, ctx, txs, tx_types, state: Arc::new(state) })
    }

    fn block_dir(&self, number: u64) -> PathBuf {
        self.dir.join("blocks").join(number.to_string())
    }

    /// The state before block `number`: accounts, storage, codes (each checked against
    /// its hash) and the chain's block hashes.
    fn pre_state(&self, number: u64, dir: &Path) -> Result<InMemoryState, BlockDataError> {
        let accounts: BTreeMap<Address, PreAccount> = read_json(&dir.join("pre_state.json"))?;
        let codes: BTreeMap<B256, Bytes> = read_json(&dir.join("bytecodes.json"))?;
        for (filed, code) in &codes {
            let actual = keccak256(code);
            if actual != *filed {
                return Err(BlockDataError::CodeHash { filed: *filed, actual });
            }
        }
        let missing: std::collections::BTreeSet<B256> = accounts
            .values()
            .filter_map(|a| a.code_hash)
            .filter(|h| *h != revm::primitives::KECCAK_EMPTY && !codes.contains_key(h))
            .collect();
        if let Some(first) = missing.first() {
            return Err(BlockDataError::MissingCode { number, missing: missing.len(), first: *first });
        }
        let mut state = InMemoryState::new();
        for (address, account) in accounts {
            state.set_account(address, account.balance, account.nonce);
            if let Some(code) = account.code_hash.and_then(|h| codes.get(&h)) {
                state.set_code(address, Bytecode::new_raw(code.clone()));
            }
            for (slot, value) in account.storage {
                state.set_storage(address, slot, value);
            }
        }
        for (n, hash) in &self.block_hashes {
            state.set_block_hash(*n, *hash);
        }
        Ok(state)
    }
}

/// What a block's execution must give, read off its header, against what it gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCheck {
    /// Total gas used: (header, executed).
    pub gas: (u64, u64),
    /// The receipts root, from Byzantium on (before it receipts carry state roots):
    /// (header, executed).
    pub receipts_root: Option<(B256, B256)>,
    /// The logs bloom: (header, executed).
    pub logs_bloom: (Bloom, Bloom),
}

impl HeaderCheck {
    /// Compares `outcomes` (one per transaction, in order) with `block`'s header.
    pub fn new(block: &RealBlock, outcomes: &[TxOutcome]) -> Self {
        let receipts = receipts(&block.tx_types, outcomes);
        let gas = receipts.last().map_or(0, |r| r.cumulative_gas_used());
        let bloom = receipts.iter().fold(Bloom::ZERO, |acc, r| acc | r.logs_bloom());
        let receipts_root = block
            .ctx
            .spec
            .is_enabled_in(SpecId::BYZANTIUM)
            .then(|| (block.header.receipts_root, calculate_receipt_root(&receipts)));
        Self { gas: (block.header.gas_used, gas), receipts_root, logs_bloom: (block.header.logs_bloom, bloom) }
    }

    /// What differs, in words; empty when everything matches.
    pub fn mismatches(&self) -> Vec<String> {
        let mut wrong = Vec::new();
        if self.gas.0 != self.gas.1 {
            wrong.push(format!("gas used {} where the header says {}", self.gas.1, self.gas.0));
        }
        if let Some((want, got)) = self.receipts_root
            && want != got
        {
            wrong.push(format!("receipts root {got} where the header says {want}"));
        }
        if self.logs_bloom.0 != self.logs_bloom.1 {
            wrong.push("logs bloom differs from the header's".to_string());
        }
        wrong
    }
}

/// The receipts of `outcomes`, as the chain builds them.
pub fn receipts(types: &[TxType], outcomes: &[TxOutcome]) -> Vec<ReceiptEnvelope<Log>> {
    let mut cumulative = 0;
    types
        .iter()
        .zip(outcomes)
        .map(|(ty, outcome)| {
            cumulative += outcome.gas_used;
            let receipt = Receipt {
                status: Eip658Value::Eip658(outcome.status == TxStatus::Success),
                cumulative_gas_used: cumulative,
                logs: outcome.logs.clone(),
            };
            ReceiptEnvelope::from_typed(*ty, ReceiptWithBloom::from(receipt))
        })
        .collect()
}
