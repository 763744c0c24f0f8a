//! The checkpoint store: final headers, the finality cursor and the halted state of
//! each chain, in redb. Each change is one write transaction.

use std::{path::Path, sync::Arc};

use alloy::{
    consensus::{Header, Sealed},
    rlp::{Decodable, Encodable},
};
use redb::{Database, ReadableDatabase, TableDefinition};

use crate::{SafetyFault, SealedHeader, StoreError};

/// (chain id, block number) -> RLP of a final header.
const HEADERS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("light_client_final_headers");
/// chain id -> number and hash of the newest final header (the finality cursor).
const CURSOR: TableDefinition<u64, (u64, [u8; 32])> = TableDefinition::new("light_client_cursor");
/// chain id -> JSON of the safety fault that halted it.
const HALTED: TableDefinition<u64, &str> = TableDefinition::new("light_client_halted");

/// What a store remembers of one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Final headers, oldest first; the last is the cursor.
    pub finals: Vec<SealedHeader>,
    /// Why the chain is halted, if it is.
    pub halted: Option<SafetyFault>,
}

/// Light-client state in a redb file, shareable with the rest of a process's store.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    db: Arc<Database>,
}

impl CheckpointStore {
    /// Opens (or creates) a redb file of its own.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self { db: Arc::new(Database::create(path)?) })
    }

    /// Uses an already open database (the process's one store file).
    pub fn with_database(db: Arc<Database>) -> Self {
        Self { db }
    }

    /// The chain's final headers (up to `history`, newest last) and halted state, or
    /// `None` if nothing was ever stored for it. Every header is re-hashed and its link
    /// to the one before checked, so a corrupt file is refused rather than trusted.
    pub fn load(&self, chain_id: u64, history: usize) -> Result<Option<Checkpoint>, StoreError> {
        let txn = self.db.begin_read()?;
        let cursor = match txn.open_table(CURSOR) {
            Ok(table) => table.get(chain_id)?.map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let Some((cursor, cursor_hash)) = cursor else { return Ok(None) };
        let headers = txn.open_table(HEADERS)?;
        let mut finals = Vec::new();
        for entry in headers.range((chain_id, 0)..=(chain_id, cursor))?.rev().take(history.max(1)) {
            let (_, rlp) = entry?;
            finals.push(decode(rlp.value())?);
        }
        finals.reverse();
        for pair in finals.windows(2) {
            if pair[1].parent_hash != pair[0].hash() || pair[1].number != pair[0].number + 1 {
                return Err(StoreError::Corrupt {
                    what: "final header chain",
                    reason: format!("header {} does not link to {}", pair[1].number, pair[0].number),
                });
            }
        }
        if finals.last().map(|h| (h.number, h.hash().0)) != Some((cursor, cursor_hash)) {
            return Err(StoreError::Corrupt {
                what: "finality cursor",
                reason: format!("the stored header at {cursor} is not the cursor's"),
            });
        }
        let halted = match txn.open_table(HALTED) {
            Ok(table) => table
                .get(chain_id)?
                .map(|v| serde_json::from_str(v.value()))
                .transpose()
                .map_err(|e| StoreError::Corrupt { what: "halted state", reason: e.to_string() })?,
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(Some(Checkpoint { finals, halted }))
    }

    /// Records newly final headers and moves the cursor to the last, dropping stored
    /// headers more than `keep` below it, in one transaction.
    pub fn commit_finalized(&self, chain_id: u64, headers: &[SealedHeader], keep: u64) -> Result<(), StoreError> {
        let Some(last) = headers.last() else { return Ok(()) };
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(HEADERS)?;
            for header in headers {
                let mut rlp = Vec::with_capacity(header.length());
                header.inner().encode(&mut rlp);
                table.insert((chain_id, header.number), rlp.as_slice())?;
            }
            if let Some(oldest_kept) = last.number.checked_sub(keep) {
                table.retain_in((chain_id, 0)..(chain_id, oldest_kept), |_, _| false)?;
            }
            txn.open_table(CURSOR)?.insert(chain_id, (last.number, last.hash().0))?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Records that a chain is halted.
    pub fn halt(&self, fault: &SafetyFault) -> Result<(), StoreError> {
        let json = serde_json::to_string(fault)
            .map_err(|e| StoreError::Corrupt { what: "halted state", reason: e.to_string() })?;
        let txn = self.db.begin_write()?;
        txn.open_table(HALTED)?.insert(fault.chain_id, json.as_str())?;
        txn.commit()?;
        Ok(())
    }

    /// Clears a halt (an operator's decision after investigating the fault).
    pub fn clear_halt(&self, chain_id: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(HALTED)?.remove(chain_id)?;
        txn.commit()?;
        Ok(())
    }
}

fn decode(rlp: &[u8]) -> Result<SealedHeader, StoreError> {
    let header = Header::decode(&mut &rlp[..])
        .map_err(|e| StoreError::Corrupt { what: "final header", reason: e.to_string() })?;
    let hash = header.hash_slow();
    Ok(Sealed::new_unchecked(header, hash))
}
