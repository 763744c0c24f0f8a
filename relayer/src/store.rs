//! The relayer's store: one redb file per process holding each message's record with
//! its stage history, the scan cursor of each origin chain, the submitter's nonces, and
//! the accountant's books and the transfers the validators hold (`crate::guard`), and
//! (through the shared database) the light clients' checkpoints. Every change is made
//! inside one write transaction. The store persists records; how they change is the
//! lifecycle's ([`crate::lifecycle`]).

use std::{
    collections::BTreeMap,
    path::Path,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use alloy::primitives::{Address, B256};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{
    StoreError, cpu,
    guard::{Books, Flow, Held, Ledger},
    lifecycle::{MessageRecord, Stage},
};

/// A message's local sequence number (the order this store first saw it) -> its
/// [`MessageRecord`] (MessagePack; JSON in stores written before).
///
/// Keyed by arrival, not by id: messages that arrive together move through their stages
/// together, so a round's writes land on a few neighbouring B-tree pages. Keyed by id
/// (a hash), each write dirtied a page of its own, about four times the CPU a write.
const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("message_records");
/// Message id -> its sequence number in [`RECORDS`].
const SEQUENCES: TableDefinition<[u8; 32], u64> = TableDefinition::new("message_sequences");
/// (current stage, destination, sequence number) -> when it entered that stage (ms): the
/// index behind listings and the pending gauges.
const STAGES: TableDefinition<(u8, u32, u64), u64> = TableDefinition::new("message_stages");
/// Stores written before [`RECORDS`]: message id -> record, and (stage, destination, id)
/// -> when. Moved into the tables above when such a store is opened.
const LEGACY_MESSAGES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("messages");
const LEGACY_BY_STAGE: TableDefinition<(u8, u32, [u8; 32]), u64> = TableDefinition::new("messages_by_stage");
/// Origin chain id -> the last final block whose `Dispatch` logs were turned into records.
const CURSORS: TableDefinition<u64, u64> = TableDefinition::new("scan_cursors");
/// (chain id, account) -> the next nonce the submitter will use.
const NONCES: TableDefinition<(u64, [u8; 20]), u64> = TableDefinition::new("nonces");
/// (origin, destination) -> the route's [`Books`] (locked, released), booked in the same
/// transaction as the scan cursor that passes their block.
const BOOKS: TableDefinition<(u32, u32), [u8; 64]> = TableDefinition::new("accountant_books");
/// Message id -> the [`Held`] transfer (JSON).
const HELD: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("held_transfers");

/// What waits in the pipeline: see [`Store::pending`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// Messages per (destination chain id, non-final stage).
    pub counts: BTreeMap<(u32, Stage), u64>,
    /// Per destination chain id, the origin block timestamp (seconds) of its oldest pending message.
    pub oldest: BTreeMap<u32, u64>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// redb's page cache (its default is 1 GiB, which a long run would fill): the hot set is
/// the records of messages in flight and the stage index.
const CACHE_BYTES: usize = 32 << 20;

/// The process's redb file.
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    /// Opens (or creates) the store file and its tables. redb locks the file: one process
    /// at a time.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| StoreError::Open { path: path.into(), reason: e.to_string() })?;
        let txn = db.begin_write()?;
        txn.open_table(RECORDS)?;
        txn.open_table(SEQUENCES)?;
        txn.open_table(STAGES)?;
        txn.open_table(CURSORS)?;
        txn.open_table(NONCES)?;
        txn.open_table(BOOKS)?;
        txn.open_table(HELD)?;
        txn.commit()?;
        let store = Self { db: Arc::new(db) };
        store.move_legacy_records()?;
        Ok(store)
    }

    /// Moves the records of a store written before [`RECORDS`] into it, oldest first
    /// (by when each was first recorded), in one transaction, and drops the old tables.
    fn move_legacy_records(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read()?;
        let legacy = match txn.open_table(LEGACY_MESSAGES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut records = Vec::new();
        for entry in legacy.iter()? {
            records.push(decode(entry?.1.value())?);
        }
        drop((legacy, txn));
        records.sort_by_key(|r: &MessageRecord| (r.history().first().map_or(0, |e| e.at_ms), r.id));
        let count = records.len();
        self.write_then(
            |tx| records.iter().try_for_each(|record| tx.put(record)),
            |txn| {
                txn.delete_table(LEGACY_MESSAGES)?;
                txn.delete_table(LEGACY_BY_STAGE)?;
                Ok(())
            },
        )?;
        tracing::info!(records = count, "records of an older store moved to the arrival-ordered tables");
        Ok(())
    }

    /// The database, to share with the light clients' checkpoint store.
    pub fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    /// One message's record.
    pub fn get(&self, id: &B256) -> Result<Option<MessageRecord>, StoreError> {
        cpu::scope(cpu::Stage::Store, || {
            let txn = self.db.begin_read()?;
            record_of(&txn.open_table(SEQUENCES)?, &txn.open_table(RECORDS)?, id)
        })
    }

    /// Records in `stage` (or all), oldest stage entry first, at most `limit`.
    pub fn list(&self, stage: Option<Stage>, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
        cpu::scope(cpu::Stage::Store, || self.list_uncharged(stage, limit))
    }

    fn list_uncharged(&self, stage: Option<Stage>, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let mut out = Vec::new();
        match stage {
            Some(stage) => {
                let index = txn.open_table(STAGES)?;
                let mut sequences: Vec<(u64, u64)> = Vec::new();
                for entry in index.range(stage_range(stage))? {
                    let (key, at) = entry?;
                    sequences.push((at.value(), key.value().2));
                }
                sequences.sort_unstable();
                for (_, sequence) in sequences.into_iter().take(limit) {
                    if let Some(v) = records.get(sequence)? {
                        out.push(decode(v.value())?);
                    }
                }
            }
            None => {
                for entry in records.iter()? {
                    if out.len() >= limit {
                        break;
                    }
                    out.push(decode(entry?.1.value())?);
                }
            }
        }
        Ok(out)
    }

    /// How many messages are in `stage` now (a walk of that stage's part of the index:
    /// it grows with the stage).
    pub fn count(&self, stage: Stage) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(STAGES)?;
        Ok(index.range(stage_range(stage))?.count() as u64)
    }

    /// How many messages are in each stage now.
    pub fn counts(&self) -> Result<BTreeMap<Stage, u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(STAGES)?;
        let mut counts = BTreeMap::new();
        for stage in Stage::ALL {
            counts.insert(stage, index.range(stage_range(stage))?.count() as u64);
        }
        Ok(counts)
    }

    /// How many messages wait in each non-final stage, per destination, and the origin block
    /// timestamp of the oldest of them per destination.
    pub fn pending(&self) -> Result<Pending, StoreError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(STAGES)?;
        let records = txn.open_table(RECORDS)?;
        let mut pending = Pending::default();
        for stage in Stage::ALL.into_iter().filter(|s| !s.is_final()) {
            for entry in index.range(stage_range(stage))? {
                let (key, _) = entry?;
                let (_, destination, sequence) = key.value();
                *pending.counts.entry((destination, stage)).or_insert(0) += 1;
                // What waits on someone else (a payment, an operator) is not late.
                if stage.waits_on_others() {
                    continue;
                }
                if let Some(record) = records.get(sequence)?.map(|v| decode(v.value())).transpose()? {
                    let oldest = pending.oldest.entry(destination).or_insert(u64::MAX);
                    *oldest = (*oldest).min(record.block.timestamp);
                }
            }
        }
        Ok(pending)
    }

    /// The last scanned final block of `chain_id`.
    pub fn cursor(&self, chain_id: u64) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(CURSORS)?.get(chain_id)?.map(|v| v.value()))
    }

    /// The stored next nonce of `account` on `chain_id`.
    pub fn nonce(&self, chain_id: u64, account: Address) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(NONCES)?.get((chain_id, account.0.0))?.map(|v| v.value()))
    }

    /// The accountant's books of every route.
    pub fn books(&self) -> Result<Ledger, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BOOKS)?;
        let mut routes = BTreeMap::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            routes.insert(key.value(), Books::from_bytes(&value.value()));
        }
        Ok(Ledger::new(routes))
    }

    /// Every held transfer, oldest first.
    pub fn held(&self) -> Result<Vec<Held>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HELD)?;
        let mut held = Vec::new();
        for entry in table.iter()? {
            held.push(decode_as::<Held>(entry?.1.value())?);
        }
        held.sort_by_key(|h| h.held_at_ms);
        Ok(held)
    }

    /// Runs `f` inside one write transaction and commits it if `f` succeeds.
    pub fn write<R>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<R, StoreError>) -> Result<R, StoreError> {
        cpu::scope(cpu::Stage::Store, || self.write_uncharged(f))
    }

    fn write_uncharged<R>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.write_then(f, |_| Ok(()))
    }

    /// Runs `f` in a new write transaction, then `then` on the transaction itself (with
    /// `f`'s tables closed: to delete tables in the same commit), and commits.
    fn write_then<R>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R, StoreError>,
        then: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<R, StoreError> {
        let txn = self.db.begin_write()?;
        let result = {
            let mut tx = Transaction {
                records: txn.open_table(RECORDS)?,
                sequences: txn.open_table(SEQUENCES)?,
                stages: txn.open_table(STAGES)?,
                next_sequence: None,
                last: None,
                cursors: txn.open_table(CURSORS)?,
                nonces: txn.open_table(NONCES)?,
                books: txn.open_table(BOOKS)?,
                held: txn.open_table(HELD)?,
            };
            f(&mut tx)?
        };
        then(&txn)?;
        txn.commit()?;
        Ok(result)
    }

    /// Applies `change` to each existing record of `ids` in one transaction; returns the
    /// records as written (missing ids are skipped).
    pub fn update(
        &self,
        ids: &[B256],
        mut change: impl FnMut(&mut MessageRecord) -> bool,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        self.write(|tx| {
            let mut written = Vec::new();
            for id in ids {
                if let Some(mut record) = tx.get(id)?
                    && change(&mut record)
                {
                    tx.put(&record)?;
                    written.push(record);
                }
            }
            Ok(written)
        })
    }
}

/// The tables of one write transaction.
pub struct Transaction<'t> {
    records: redb::Table<'t, u64, &'static [u8]>,
    sequences: redb::Table<'t, [u8; 32], u64>,
    stages: redb::Table<'t, (u8, u32, u64), u64>,
    /// The sequence number the next new record takes (read from [`RECORDS`] once).
    next_sequence: Option<u64>,
    /// The last record looked up, by id, and its sequence number: a record is read and
    /// then written back, and the write need not look its sequence up again.
    last: Option<([u8; 32], u64)>,
    cursors: redb::Table<'t, u64, u64>,
    nonces: redb::Table<'t, (u64, [u8; 20]), u64>,
    books: redb::Table<'t, (u32, u32), [u8; 64]>,
    held: redb::Table<'t, [u8; 32], &'static [u8]>,
}

impl Transaction<'_> {
    /// A record as this transaction sees it.
    pub fn get(&mut self, id: &B256) -> Result<Option<MessageRecord>, StoreError> {
        let Some(sequence) = sequence_of(&self.sequences, id)? else { return Ok(None) };
        self.last = Some((id.0, sequence));
        record_at(&self.records, sequence)
    }

    /// Writes a record (a new one after every record stored so far) and keeps the stage
    /// index in step.
    pub fn put(&mut self, record: &MessageRecord) -> Result<(), StoreError> {
        let bytes = encode(record)?;
        let known = match self.last {
            Some((id, sequence)) if id == record.id.0 => Some(sequence),
            _ => sequence_of(&self.sequences, &record.id)?,
        };
        let sequence = match known {
            Some(sequence) => sequence,
            None => {
                let sequence = self.next_sequence()?;
                self.sequences.insert(record.id.0, sequence)?;
                sequence
            }
        };
        let old = self.records.insert(sequence, bytes.as_slice())?.map(|v| indexed(v.value())).transpose()?;
        if let Some(old) = old {
            self.stages.remove((code(old.stage), old.destination, sequence))?;
        }
        let at = record.history().last().map_or(0, |e| e.at_ms);
        self.stages.insert((code(record.stage()), record.destination, sequence), at)?;
        Ok(())
    }

    /// The sequence number of a record not stored before.
    fn next_sequence(&mut self) -> Result<u64, StoreError> {
        let next = match self.next_sequence {
            Some(next) => next,
            None => self.records.last()?.map_or(0, |(key, _)| key.value() + 1),
        };
        self.next_sequence = Some(next + 1);
        Ok(next)
    }

    /// Moves the scan cursor of `chain_id`.
    pub fn set_cursor(&mut self, chain_id: u64, block: u64) -> Result<(), StoreError> {
        self.cursors.insert(chain_id, block)?;
        Ok(())
    }

    /// Books `flows` on their routes.
    pub fn book(&mut self, flows: &[Flow]) -> Result<(), StoreError> {
        for flow in flows {
            let key = (flow.origin, flow.destination);
            let books = self.books.get(key)?.map(|v| Books::from_bytes(&v.value())).unwrap_or_default();
            let mut ledger = Ledger::new(BTreeMap::from([(key, books)]));
            ledger.add(flow);
            self.books.insert(key, ledger.route(key.0, key.1).to_bytes())?;
        }
        Ok(())
    }

    /// A held transfer.
    pub fn held(&self, id: &B256) -> Result<Option<Held>, StoreError> {
        self.held.get(id.0)?.map(|v| decode_as::<Held>(v.value())).transpose()
    }

    /// Holds a transfer (or updates why it is held).
    pub fn hold(&mut self, held: &Held) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(held).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.held.insert(held.id.0, bytes.as_slice())?;
        Ok(())
    }

    /// Lets a held transfer go; returns it if it was held.
    pub fn unhold(&mut self, id: &B256) -> Result<Option<Held>, StoreError> {
        self.held.remove(id.0)?.map(|v| decode_as::<Held>(v.value())).transpose()
    }

    /// Stores the next nonce of `account` on `chain_id`.
    pub fn set_nonce(&mut self, chain_id: u64, account: Address, nonce: u64) -> Result<(), StoreError> {
        self.nonces.insert((chain_id, account.0.0), nonce)?;
        Ok(())
    }
}

/// The record of `id`, found through its sequence number (read and write
/// transactions alike).
fn record_of(
    sequences: &impl ReadableTable<[u8; 32], u64>,
    records: &impl ReadableTable<u64, &'static [u8]>,
    id: &B256,
) -> Result<Option<MessageRecord>, StoreError> {
    let Some(sequence) = sequence_of(sequences, id)? else { return Ok(None) };
    record_at(records, sequence)
}

/// The sequence number of record `id`, if it is stored.
fn sequence_of(sequences: &impl ReadableTable<[u8; 32], u64>, id: &B256) -> Result<Option<u64>, StoreError> {
    Ok(sequences.get(id.0)?.map(|v| v.value()))
}

/// The record stored under `sequence`.
fn record_at(
    records: &impl ReadableTable<u64, &'static [u8]>,
    sequence: u64,
) -> Result<Option<MessageRecord>, StoreError> {
    records.get(sequence)?.map(|v| decode(v.value())).transpose()
}

fn stage_range(stage: Stage) -> std::ops::RangeInclusive<(u8, u32, u64)> {
    (code(stage), 0, 0)..=(code(stage), u32::MAX, u64::MAX)
}

/// A stage's key in the stage index.
fn code(stage: Stage) -> u8 {
    stage as u8
}

/// A record as stored: a MessagePack map with named fields (bytes as bytes, not hex:
/// about 60% of the JSON's size, and cheaper to write and read on every stage change).
fn encode(record: &MessageRecord) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(record).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// What the stage index keys a stored record by.
#[derive(serde::Deserialize)]
struct Indexed {
    stage: Stage,
    destination: u32,
}

/// The index key of a stored record, read without building the rest of it (the other
/// fields are skipped, not decoded).
fn indexed(bytes: &[u8]) -> Result<Indexed, StoreError> {
    decode_as(bytes)
}

/// A stored record.
fn decode(bytes: &[u8]) -> Result<MessageRecord, StoreError> {
    decode_as(bytes)
}

/// A stored record's bytes as a `T`. Stores written before records were MessagePack hold
/// JSON, which starts with `{`: never the first byte of a MessagePack map, so both are read.
fn decode_as<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.first() {
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string())),
        _ => rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::Bytes;
    use ferry_messages::{Message, wire::OriginBlock};

    fn message(nonce: u32) -> Message {
        Message {
            version: ferry_messages::VERSION,
            nonce,
            origin: 31337,
            sender: B256::repeat_byte(1),
            destination: 31338,
            recipient: B256::repeat_byte(2),
            body: vec![nonce as u8].into(),
        }
    }

    fn record(nonce: u32) -> MessageRecord {
        let block = OriginBlock { number: 3, hash: B256::repeat_byte(3), timestamp: 10 };
        let mut record = MessageRecord::observe(&message(nonce), Address::repeat_byte(9), block);
        record.prove("proof".into()).unwrap();
        record.attest(Bytes::from_static(b"qc"), "signatures".into()).unwrap();
        record
    }

    #[test]
    fn records_are_compact_and_json_records_of_older_stores_still_read() {
        let mut record = record(7);
        record.signatures.insert(Address::repeat_byte(5), Bytes::from(vec![0x1b; 65]));
        let packed = encode(&record).unwrap();
        let json = serde_json::to_vec(&record).unwrap();
        assert_eq!(decode(&packed).unwrap(), record);
        assert_eq!(decode(&json).unwrap(), record, "a record an older ferry wrote");
        assert!(packed.len() * 3 < json.len() * 2, "{} bytes packed, {} as JSON", packed.len(), json.len());
        assert!(decode(b"\x93garbage").is_err());

        // An older store's JSON record is read, moved and written back packed.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.redb");
        legacy_store(&path, &[(record.clone(), json)]);
        let store = Store::open(&path).unwrap();
        let moved = store.update(&[record.id], |r| r.publish(None).is_ok()).unwrap();
        assert_eq!(moved.len(), 1);
        assert_eq!(store.get(&record.id).unwrap().unwrap().stage(), Stage::Published);
    }

    /// A store as ferry wrote it before records were keyed by arrival: `records` (with
    /// their bytes) in the id-keyed table and its stage index.
    fn legacy_store(path: &Path, records: &[(MessageRecord, Vec<u8>)]) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut messages = txn.open_table(LEGACY_MESSAGES).unwrap();
            let mut index = txn.open_table(LEGACY_BY_STAGE).unwrap();
            for (record, bytes) in records {
                messages.insert(record.id.0, bytes.as_slice()).unwrap();
                let at = record.history().last().map_or(0, |e| e.at_ms);
                index.insert((code(record.stage()), record.destination, record.id.0), at).unwrap();
            }
        }
        txn.open_table(CURSORS).unwrap().insert(31337, 40).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn an_older_store_is_moved_to_arrival_order_whole_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.redb");
        // Recorded in the order 3, 1, 2 (ids are hashes, so the old table held another order).
        let observed_at = |record: MessageRecord, at: u64| {
            let mut value = serde_json::to_value(record).unwrap();
            value["history"][0]["at_ms"] = at.into();
            serde_json::from_value::<MessageRecord>(value).unwrap()
        };
        let mut records: Vec<MessageRecord> =
            (1..=3).zip([2_000, 3_000, 1_000]).map(|(nonce, at)| observed_at(record(nonce), at)).collect();
        records[1].publish(None).unwrap();
        let legacy: Vec<_> = records.iter().map(|r| (r.clone(), encode(r).unwrap())).collect();
        legacy_store(&path, &legacy);

        let store = Store::open(&path).unwrap();
        let listed: Vec<B256> = store.list(None, 10).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(listed, [records[2].id, records[0].id, records[1].id], "oldest first");
        for record in &records {
            assert_eq!(store.get(&record.id).unwrap().as_ref(), Some(record));
        }
        let counts = store.counts().unwrap();
        assert_eq!((counts[&Stage::Attested], counts[&Stage::Published]), (2, 1));
        assert_eq!(store.cursor(31337).unwrap(), Some(40), "the other tables are untouched");
        // A new message goes after them all; the old tables are gone, so reopening moves
        // nothing twice.
        let new = record(4);
        store.write(|tx| tx.put(&new)).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        let listed: Vec<B256> = store.list(None, 10).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(listed, [records[2].id, records[0].id, records[1].id, new.id]);
        assert_eq!(store.counts().unwrap()[&Stage::Attested], 3);
        assert_eq!(store.count(Stage::Attested).unwrap(), 3);
        let txn = store.db.begin_read().unwrap();
        assert!(matches!(txn.open_table(LEGACY_MESSAGES), Err(redb::TableError::TableDoesNotExist(_))));
    }

    #[test]
    fn records_move_through_stages_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.redb");
        let store = Store::open(&path).unwrap();
        let (a, b) = (record(1), record(2));
        store
            .write(|tx| {
                tx.put(&a)?;
                tx.put(&b)?;
                tx.set_cursor(31337, 12)
            })
            .unwrap();
        let moved = store.update(&[a.id], |r| r.publish(None).is_ok()).unwrap();
        assert_eq!(moved.len(), 1);
        store.update(&[b.id], |r| r.publish(None).and_then(|()| r.deliver(None, "0xabc".into())).is_ok()).unwrap();
        // A refused move writes nothing.
        assert!(store.update(&[b.id], |r| r.park("reverts".into()).is_ok()).unwrap().is_empty());
        drop(store);

        let store = Store::open(&path).unwrap();
        assert_eq!(store.cursor(31337).unwrap(), Some(12));
        assert_eq!(store.cursor(31338).unwrap(), None);
        let a = store.get(&a.id).unwrap().unwrap();
        assert_eq!(
            a.history().iter().map(|e| e.stage).collect::<Vec<_>>(),
            [Stage::Observed, Stage::Proven, Stage::Attested, Stage::Published]
        );
        let counts = store.counts().unwrap();
        assert_eq!((counts[&Stage::Published], counts[&Stage::Delivered], counts[&Stage::Attested]), (1, 1, 0));
        assert_eq!(store.list(Some(Stage::Delivered), 10).unwrap()[0].id, b.id);
        assert_eq!(store.list(None, 10).unwrap().len(), 2);
    }

    #[test]
    fn a_failed_transaction_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ferry.redb")).unwrap();
        let r = record(1);
        let failed: Result<(), _> = store.write(|tx| {
            tx.put(&r)?;
            tx.set_nonce(31338, Address::repeat_byte(1), 5)?;
            Err(StoreError::Corrupt("abort".into()))
        });
        assert!(failed.is_err());
        assert!(store.get(&r.id).unwrap().is_none());
        assert_eq!(store.nonce(31338, Address::repeat_byte(1)).unwrap(), None);
    }
}
