//! Committed state on top of a state source: what sequential execution reads, and what
//! the parallel engine commits into, transaction by transaction in batch order.

use std::sync::Arc;

use revm::{
    bytecode::Bytecode,
    primitives::{Address, B256, KECCAK_EMPTY, U256, hardfork::SpecId},
    state::AccountInfo,
};
use rustc_hash::FxHashMap;

use crate::{
    StateDiff, StateError, StateSource,
    mv_memory::{AccountLite, Location},
};

/// Changes made so far in a batch, over the state before it.
pub(crate) struct Overlay {
    pub base: Arc<dyn StateSource>,
    /// Accounts the batch wrote, each with the [`Self::piece`] that wrote it.
    accounts: FxHashMap<Address, (u32, Option<AccountLite>)>,
    /// Slots the batch wrote, each with the generation of its account's storage it was
    /// written in (a slot of an older generation was cleared since) and the piece that
    /// wrote it.
    storage: FxHashMap<(Address, U256), (u32, u32, U256)>,
    /// Accounts destroyed or created in the batch (their storage before it no longer
    /// shows through), with their storage's generation: how many times it was cleared.
    /// Clearing is a count, not a walk of every slot (a block of creations was
    /// quadratic), and costs nothing while no account is cleared.
    cleared: FxHashMap<Address, u32>,
    pub codes: FxHashMap<B256, Bytecode>,
    /// The beneficiary and its account as credited so far, kept apart from `accounts`:
    /// it is credited after every transaction, and a field costs less than a lookup.
    paid: Option<(Address, Option<AccountLite>)>,
    /// What changes applied from now on are stamped with: split execution's piece of the
    /// batch (see `split`), so that a worker's read can be checked against what was
    /// committed since the state it ran on. Zero, and unused, elsewhere.
    pub piece: u32,
    /// Whether accounts are stamped only when their fields change (split execution: a
    /// contract whose storage alone changed is read by every call into it).
    pub tracking: bool,
}

impl Overlay {
    pub(crate) fn with_capacity(base: Arc<dyn StateSource>, entries: usize) -> Self {
        Self {
            base,
            accounts: FxHashMap::with_capacity_and_hasher(entries, Default::default()),
            storage: FxHashMap::with_capacity_and_hasher(entries, Default::default()),
            cleared: FxHashMap::default(),
            codes: FxHashMap::default(),
            paid: None,
            piece: 0,
            tracking: false,
        }
    }

    pub(crate) fn basic(&self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        let account = match &self.paid {
            Some((beneficiary, paid)) if *beneficiary == address => Some(paid),
            _ => self.accounts.get(&address).map(|(_, a)| a),
        };
        match account {
            // An account without code needs no lookup in the batch's new code.
            Some(Some(a)) if a.code_hash == KECCAK_EMPTY => Ok(Some(info(a, None))),
            Some(Some(a)) => Ok(Some(info(a, self.codes.get(&a.code_hash).cloned()))),
            Some(None) => Ok(None),
            None => self.base.basic(address),
        }
    }

    pub(crate) fn code_by_hash(&self, hash: B256) -> Result<Bytecode, StateError> {
        match self.codes.get(&hash) {
            Some(code) => Ok(code.clone()),
            None => self.base.code_by_hash(hash),
        }
    }

    pub(crate) fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError> {
        let generation = self.generation(address);
        match self.storage.get(&(address, slot)) {
            Some((written, _, value)) if *written == generation => Ok(*value),
            _ if generation > 0 => Ok(U256::ZERO),
            _ => self.base.storage(address, slot),
        }
    }

    /// How many times the batch cleared `address`'s storage.
    fn generation(&self, address: Address) -> u32 {
        if self.cleared.is_empty() { 0 } else { self.cleared.get(&address).copied().unwrap_or(0) }
    }

    /// Applies committed changes (to resume one by one after a parallel prefix).
    pub(crate) fn apply(&mut self, diff: &StateDiff) {
        for (address, account) in diff.iter() {
            let info = account.info;
            if account.clears_storage() {
                *self.cleared.entry(*address).or_default() += 1;
            }
            if let (Some(i), Some(code)) = (info, &account.code) {
                self.codes.insert(i.code_hash, code.clone());
            }
            match &mut self.paid {
                Some((beneficiary, paid)) if beneficiary == address => *paid = info,
                _ if self.tracking => self.stamp(*address, info),
                _ => {
                    self.accounts.insert(*address, (self.piece, info));
                }
            }
            if !account.storage.is_empty() {
                let generation = self.generation(*address);
                for (slot, value) in &account.storage {
                    self.storage.insert((*address, *slot), (generation, self.piece, *value));
                }
            }
        }
    }

    /// Credits the beneficiary's fee for one transaction, as the mainnet handler would
    /// have right after it (which also touches, and so creates, the account).
    pub(crate) fn credit(
        &mut self,
        beneficiary: Address,
        fee: U256,
        spec: SpecId,
        diff: &mut StateDiff,
    ) -> Result<(), StateError> {
        let before = match self.paid {
            Some((paid, before)) if paid == beneficiary => before,
            // First credited: its account as the batch left it so far, which moves here.
            _ => match self.accounts.remove(&beneficiary) {
                Some((_, account)) => account,
                None => self.base.account(beneficiary)?,
            },
        };
        let after = credit_fee(beneficiary, before, fee, spec, diff).or(before);
        self.paid = Some((beneficiary, after));
        Ok(())
    }
}

impl Overlay {
    /// Records `info` for `address`, stamped with the current piece only if it differs
    /// from what was there: the batch's last value, or the state before it (read once
    /// per account, the first time the batch writes it).
    fn stamp(&mut self, address: Address, info: Option<AccountLite>) {
        use std::collections::hash_map::Entry;
        match self.accounts.entry(address) {
            Entry::Occupied(mut entry) => {
                if entry.get().1 != info {
                    entry.insert((self.piece, info));
                }
            }
            Entry::Vacant(entry) => {
                // Unchanged from the state before the batch: nothing to record. A
                // failed read records it, which is only ever stale, never wrong.
                if self.base.account(address).ok() != Some(info) {
                    entry.insert((self.piece, info));
                }
            }
        }
    }

    /// Whether `location` holds a value committed by a piece other than `piece`, or was
    /// credited a fee: a worker of split execution that read it before read a value that
    /// is no longer the one sequential execution sees. Storage cleared by another piece
    /// needs no check of its own: whoever reads a slot has loaded its account, which the
    /// clearing wrote.
    pub(crate) fn stale(&self, location: &Location, piece: u32) -> bool {
        match location {
            Location::Basic(address) => match &self.paid {
                Some((beneficiary, _)) if beneficiary == address => true,
                _ => self.accounts.get(address).is_some_and(|(by, _)| *by != piece),
            },
            Location::Storage(address, slot) => {
                self.storage.get(&(*address, *slot)).is_some_and(|(_, by, _)| *by != piece)
            }
            Location::Cleared(_) => true,
        }
    }
}

/// Pays the beneficiary its fee as the mainnet handler does right after a transaction
/// (which also touches the account: before Spurious Dragon that creates it, from then on
/// an absent one paid nothing stays absent, EIP-161), recording the change in `diff`.
/// Returns the account after, or `None` if nothing changed.
pub(crate) fn credit_fee(
    beneficiary: Address,
    before: Option<AccountLite>,
    fee: U256,
    spec: SpecId,
    diff: &mut StateDiff,
) -> Option<AccountLite> {
    // No fee changes nothing, but for an absent account the touch creates (before
    // Spurious Dragon; from then on it stays absent). Decided before building anything:
    // this runs after every transaction.
    if fee.is_zero() && (before.is_some() || crate::commit::stays_absent(spec, true)) {
        return None;
    }
    let mut after = before.unwrap_or_else(AccountLite::empty);
    after.balance += fee;
    diff.entry(beneficiary).info = Some(after);
    Some(after)
}

pub(crate) fn lite(info: &AccountInfo) -> AccountLite {
    AccountLite { balance: info.balance, nonce: info.nonce, code_hash: info.code_hash }
}

pub(crate) fn info(a: &AccountLite, code: Option<Bytecode>) -> AccountInfo {
    let mut info = AccountInfo::default().with_code_hash(a.code_hash);
    info.balance = a.balance;
    info.nonce = a.nonce;
    info.code = code;
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccountDiff, InMemoryState};

    fn diff(address: Address, account: AccountDiff) -> StateDiff {
        StateDiff::from_accounts(vec![(address, account)])
    }

    fn written(slots: &[(u64, u64)]) -> AccountDiff {
        let storage = slots.iter().map(|(s, v)| (U256::from(*s), U256::from(*v))).collect();
        AccountDiff { info: Some(AccountLite::empty()), storage, ..Default::default() }
    }

    #[test]
    fn a_cleared_account_reads_empty_until_written_again_and_others_read_on() {
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let mut base = InMemoryState::new();
        base.set_storage(a, U256::from(1), U256::from(10));
        base.set_storage(b, U256::from(1), U256::from(20));
        let mut overlay = Overlay::with_capacity(Arc::new(base), 4);
        let read = |overlay: &Overlay, address, slot: u64| overlay.storage(address, U256::from(slot)).unwrap();

        overlay.apply(&diff(a, written(&[(2, 30)])));
        assert_eq!((read(&overlay, a, 1), read(&overlay, a, 2)), (U256::from(10), U256::from(30)));
        overlay.apply(&diff(a, AccountDiff::destroyed()));
        assert_eq!((read(&overlay, a, 1), read(&overlay, a, 2)), (U256::ZERO, U256::ZERO), "destroyed");
        assert_eq!(read(&overlay, b, 1), U256::from(20), "another account's storage shows through");
        // Created again with one slot: the rest stays empty, what it wrote before too.
        overlay.apply(&diff(a, AccountDiff { storage_cleared: true, ..written(&[(3, 40)]) }));
        assert_eq!((read(&overlay, a, 2), read(&overlay, a, 3)), (U256::ZERO, U256::from(40)));
        overlay.apply(&diff(a, written(&[(2, 50)])));
        assert_eq!((read(&overlay, a, 1), read(&overlay, a, 2)), (U256::ZERO, U256::from(50)));
        overlay.apply(&diff(a, AccountDiff::destroyed()));
        assert_eq!((read(&overlay, a, 2), read(&overlay, a, 3)), (U256::ZERO, U256::ZERO), "destroyed again");
    }
}
