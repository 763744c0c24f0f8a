//! Fork choice and finality over a bounded window of non-final headers.

use std::collections::{BTreeMap, HashMap, HashSet};

use alloy::{eips::BlockNumHash, primitives::B256};

use crate::{Finality, HeaderError, LightClientError, SealedHeader};

/// What happened to a chain as a header went in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The canonical head moved to this header.
    NewHead(SealedHeader),
    /// This header became final (events come in ascending order).
    Finalized(SealedHeader),
    /// The canonical branch changed: what left it and what joined it.
    Reorg(Reorg),
}

/// A switch of canonical branch above the final header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reorg {
    /// The last header both branches share.
    pub common_ancestor: BlockNumHash,
    /// Headers no longer canonical, newest first.
    pub dropped: Vec<BlockNumHash>,
    /// Headers now canonical, oldest first.
    pub added: Vec<BlockNumHash>,
}

/// Where a new header fits.
#[derive(Debug)]
pub(crate) enum Placement<'a> {
    /// Already held (in the window or final).
    Known,
    /// Its parent is held; it may extend a branch or start one.
    Extends {
        /// The parent.
        parent: &'a SealedHeader,
        /// The parent already has another child.
        starts_branch: bool,
    },
    /// It builds on the final chain at or below the final height with another hash than
    /// the final header there: if it is valid, finality is broken.
    ConflictsWithFinal {
        /// Its (final) parent.
        parent: &'a SealedHeader,
        /// The final header it would replace.
        final_hash: B256,
    },
}

/// The non-final window of one chain, its canonical head, and its final headers.
#[derive(Debug, Clone)]
pub struct ForkChoice {
    finality: Finality,
    window_limit: usize,
    history_limit: usize,
    /// Recent final headers by number; the last is the finality cursor.
    finals: BTreeMap<u64, SealedHeader>,
    window: HashMap<B256, SealedHeader>,
    children: HashMap<B256, Vec<B256>>,
    head: SealedHeader,
}

impl ForkChoice {
    /// A fork choice whose final chain ends at `checkpoint`, with `earlier` final headers
    /// below it (for detecting conflicts with them). Holds at most `window_limit`
    /// non-final headers and `history_limit` final ones.
    pub fn new(
        checkpoint: SealedHeader,
        earlier: impl IntoIterator<Item = SealedHeader>,
        finality: Finality,
        window_limit: usize,
        history_limit: usize,
    ) -> Self {
        let mut finals: BTreeMap<u64, SealedHeader> =
            earlier.into_iter().filter(|h| h.number < checkpoint.number).map(|h| (h.number, h)).collect();
        finals.insert(checkpoint.number, checkpoint.clone());
        let head = checkpoint;
        Self {
            finality,
            window_limit,
            history_limit: history_limit.max(1),
            finals,
            window: HashMap::new(),
            children: HashMap::new(),
            head,
        }
    }

    /// The canonical head.
    pub fn head(&self) -> &SealedHeader {
        &self.head
    }

    /// The newest final header.
    pub fn finalized(&self) -> &SealedHeader {
        // `finals` is never empty: `new` takes at least the checkpoint and pruning keeps one.
        self.finals.values().next_back().unwrap_or(&self.head)
    }

    /// A held header (non-final or recent final) by hash.
    pub fn get(&self, hash: &B256) -> Option<&SealedHeader> {
        self.window.get(hash).or_else(|| self.finals.values().rev().find(|h| h.hash() == *hash))
    }

    /// Whether `hash` is a final header still in memory.
    pub fn is_final(&self, hash: &B256) -> bool {
        self.finals.values().rev().any(|h| h.hash() == *hash)
    }

    /// The canonical header at `number`, if held.
    pub fn canonical(&self, number: u64) -> Option<&SealedHeader> {
        if let Some(h) = self.finals.get(&number) {
            return Some(h);
        }
        let mut cursor = &self.head;
        while cursor.number > number {
            cursor = self.window.get(&cursor.parent_hash)?;
        }
        (cursor.number == number).then_some(cursor)
    }

    /// Non-final headers held.
    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    /// Final headers in memory, oldest first.
    pub fn final_headers(&self) -> impl Iterator<Item = &SealedHeader> {
        self.finals.values()
    }

    pub(crate) fn locate(&self, header: &SealedHeader) -> Result<Placement<'_>, HeaderError> {
        let (number, hash) = (header.number, header.hash());
        if self.window.contains_key(&hash) || self.finals.get(&number).is_some_and(|f| f.hash() == hash) {
            return Ok(Placement::Known);
        }
        let finalized = self.finalized();
        if number <= finalized.number {
            let parent = number.checked_sub(1).and_then(|p| self.finals.get(&p));
            let final_here = self.finals.get(&number);
            return match (parent, final_here) {
                (Some(parent), Some(fin)) if parent.hash() == header.parent_hash => {
                    Ok(Placement::ConflictsWithFinal { parent, final_hash: fin.hash() })
                }
                _ => Err(HeaderError::BelowFinality { number, hash }),
            };
        }
        let parent = if header.parent_hash == finalized.hash() {
            finalized
        } else {
            self.window.get(&header.parent_hash).ok_or(HeaderError::UnknownParent {
                number,
                hash,
                parent: header.parent_hash,
            })?
        };
        let starts_branch = self.children.get(&header.parent_hash).is_some_and(|c| !c.is_empty());
        Ok(Placement::Extends { parent, starts_branch })
    }

    /// Adds a header whose parent [`locate`](Self::locate) found and whose rules were
    /// checked; returns the head, reorg and finality events it causes.
    pub(crate) fn attach(&mut self, header: SealedHeader) -> Result<Vec<Event>, HeaderError> {
        if self.window.len() >= self.window_limit {
            return Err(HeaderError::WindowFull { limit: self.window_limit });
        }
        let hash = header.hash();
        self.children.entry(header.parent_hash).or_default().push(hash);
        self.window.insert(hash, header.clone());

        let mut events = Vec::new();
        // Longest valid branch wins; on equal length the head seen first stays.
        if header.number > self.head.number {
            if header.parent_hash != self.head.hash() {
                events.push(Event::Reorg(self.reorg_to(&header)));
            }
            self.head = header.clone();
            events.push(Event::NewHead(header));
            if let Finality::Confirmations(n) = self.finality
                && let Some(target) = self.head.number.checked_sub(n)
            {
                events.extend(self.finalize_through(target));
            }
        }
        Ok(events)
    }

    /// Marks the canonical header `hash` and its ancestors final (the `finalized` tag).
    pub(crate) fn finalize_hash(&mut self, hash: B256) -> Result<Vec<Event>, LightClientError> {
        if self.is_final(&hash) {
            return Ok(vec![]);
        }
        let header = self.window.get(&hash).ok_or(LightClientError::NotCanonical { hash })?;
        if self.canonical(header.number).map(|h| h.hash()) != Some(hash) {
            return Err(LightClientError::NotCanonical { hash });
        }
        Ok(self.finalize_through(header.number))
    }

    fn reorg_to(&self, new_head: &SealedHeader) -> Reorg {
        let mut old: Vec<BlockNumHash> = Vec::new();
        let mut cursor = Some(&self.head);
        while let Some(h) = cursor.filter(|h| h.number > self.finalized().number) {
            old.push(h.num_hash_slow_cached());
            cursor = self.window.get(&h.parent_hash);
        }
        let old_set: HashSet<B256> = old.iter().map(|n| n.hash).collect();
        let mut added = Vec::new();
        let mut cursor = new_head;
        let ancestor = loop {
            if old_set.contains(&cursor.hash()) || cursor.hash() == self.finalized().hash() {
                break cursor.num_hash_slow_cached();
            }
            added.push(cursor.num_hash_slow_cached());
            match self.get(&cursor.parent_hash) {
                Some(parent) => cursor = parent,
                None => break BlockNumHash::new(cursor.number.saturating_sub(1), cursor.parent_hash),
            }
        };
        added.reverse();
        let dropped = old.into_iter().take_while(|n| n.hash != ancestor.hash).collect();
        Reorg { common_ancestor: ancestor, dropped, added }
    }

    /// Finalizes the canonical headers above the cursor up to `target`, in order, and
    /// drops from the window everything that does not descend from the new cursor.
    fn finalize_through(&mut self, target: u64) -> Vec<Event> {
        let from = self.finalized().number;
        if target <= from {
            return vec![];
        }
        let mut newly: Vec<SealedHeader> = (from + 1..=target).filter_map(|n| self.canonical(n).cloned()).collect();
        newly.sort_by_key(|h| h.number);
        for header in &newly {
            self.finals.insert(header.number, header.clone());
        }
        while self.finals.len() > self.history_limit {
            self.finals.pop_first();
        }
        self.prune_window();
        newly.into_iter().map(Event::Finalized).collect()
    }

    /// Keeps only the non-final descendants of the newest final header.
    fn prune_window(&mut self) {
        let root = self.finalized().hash();
        let mut keep = HashSet::new();
        let mut stack = vec![root];
        while let Some(hash) = stack.pop() {
            for child in self.children.get(&hash).into_iter().flatten() {
                if keep.insert(*child) {
                    stack.push(*child);
                }
            }
        }
        let final_number = self.finalized().number;
        self.window.retain(|hash, h| keep.contains(hash) && h.number > final_number);
        let window = &self.window;
        self.children.retain(|parent, _| *parent == root || window.contains_key(parent));
    }
}

trait NumHash {
    fn num_hash_slow_cached(&self) -> BlockNumHash;
}

impl NumHash for SealedHeader {
    fn num_hash_slow_cached(&self) -> BlockNumHash {
        BlockNumHash::new(self.number, self.hash())
    }
}
