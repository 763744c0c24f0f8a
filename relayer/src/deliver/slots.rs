//! Storage slots a delivery will read that follow from its message: Solidity mapping
//! entries keyed by the message id (the Mailbox's `delivered[id]`) or by a word of its
//! body (a token bridge's recipient balance). Learned, not hard-coded: after a round
//! whose reads missed the cache, every slot it read is matched against
//! `keccak256(key . base)` for each item's keys and small base slots; each match is a
//! (contract, key, base) rule that later rounds apply to their own messages before they
//! run, so that those slots arrive with the round's one batched prefetch. A slot no key
//! explains is remembered, so that a miss that recurs every round (a slot only our own
//! transactions in flight had written) is not matched again every round.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use alloy::primitives::{Address, B256, U256, keccak256};
use ferry_messages::Message;

/// Mapping base slots tried (a contract's first state variables).
const BASES: u8 = 16;
/// Body words tried as keys.
const BODY_WORDS: usize = 4;
/// Rules kept at most (a destination has few kinds of recipient).
const MAX_RULES: usize = 64;
/// Unexplained slots remembered at most (forgotten all at once past it).
const MAX_UNEXPLAINED: usize = 1 << 14;

/// Which of a message's values keys a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    /// The message id.
    Id,
    /// A 32-byte word of the body.
    BodyWord(usize),
}

/// A learned rule: `contract` reads `keccak256(key . base)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Rule {
    contract: Address,
    key: Key,
    base: u8,
}

/// The rules learned for one destination.
#[derive(Debug, Default)]
pub(super) struct DerivedSlots {
    rules: Mutex<Vec<Rule>>,
    /// Slots read on demand that no message key explained.
    unexplained: Mutex<HashSet<(Address, U256)>>,
}

/// `keccak256(key . base)`: the slot of `mapping[key]` for a mapping at slot `base`.
fn mapping_slot(key: &B256, base: u8) -> U256 {
    let mut preimage = [0u8; 64];
    preimage[..32].copy_from_slice(key.as_slice());
    preimage[63] = base;
    U256::from_be_bytes(keccak256(preimage).0)
}

/// A message's candidate keys.
fn keys(message: &Message) -> impl Iterator<Item = (Key, B256)> + '_ {
    let words = message.body.chunks_exact(32).take(BODY_WORDS).map(B256::from_slice).enumerate();
    std::iter::once((Key::Id, message.id())).chain(words.map(|(i, w)| (Key::BodyWord(i), w)))
}

impl DerivedSlots {
    /// The slots the learned rules give for `messages`.
    pub(super) fn predict<'a>(&self, messages: impl Iterator<Item = &'a Message>) -> Vec<(Address, U256)> {
        let Ok(rules) = self.rules.lock() else { return Vec::new() };
        if rules.is_empty() {
            return Vec::new();
        }
        let mut slots = Vec::new();
        for message in messages {
            let keys: Vec<(Key, B256)> = keys(message).collect();
            for rule in rules.iter() {
                if let Some((_, key)) = keys.iter().find(|(k, _)| *k == rule.key) {
                    slots.push((rule.contract, mapping_slot(key, rule.base)));
                }
            }
        }
        slots
    }

    /// Learns the rules that explain slots of `read` from `messages`' keys. Returns how
    /// many new rules it found.
    pub(super) fn learn<'a>(&self, messages: impl Iterator<Item = &'a Message>, read: &[(Address, U256)]) -> usize {
        let Ok(mut unexplained) = self.unexplained.lock() else { return 0 };
        let read: Vec<&(Address, U256)> = read.iter().filter(|slot| !unexplained.contains(*slot)).collect();
        if read.is_empty() {
            return 0;
        }
        let mut derived: HashMap<U256, (Key, u8)> = HashMap::new();
        for message in messages {
            for (key, value) in keys(message) {
                for base in 0..BASES {
                    derived.insert(mapping_slot(&value, base), (key, base));
                }
            }
        }
        let Ok(mut rules) = self.rules.lock() else { return 0 };
        let before = rules.len();
        if unexplained.len() > MAX_UNEXPLAINED {
            unexplained.clear();
        }
        for &&(contract, slot) in &read {
            let Some((key, base)) = derived.get(&slot) else {
                unexplained.insert((contract, slot));
                continue;
            };
            let rule = Rule { contract, key: *key, base: *base };
            if rules.len() < MAX_RULES && !rules.contains(&rule) {
                rules.push(rule);
            }
        }
        rules.len() - before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(nonce: u32, recipient: Address) -> Message {
        let mut body = vec![0u8; 64];
        body[12..32].copy_from_slice(recipient.as_slice());
        body[63] = 7;
        Message {
            version: 0,
            nonce,
            origin: 1,
            sender: B256::repeat_byte(1),
            destination: 2,
            recipient: B256::repeat_byte(2),
            body: body.into(),
        }
    }

    #[test]
    fn learns_mapping_rules_from_read_slots_and_applies_them_to_new_messages() {
        let (mailbox, token) = (Address::repeat_byte(0xaa), Address::repeat_byte(0xbb));
        let first = [message(1, Address::repeat_byte(0x11)), message(2, Address::repeat_byte(0x12))];
        // What a round read: delivered[id] at base 3 of the Mailbox, balances[recipient] at
        // base 0 of the token, and a slot no key explains.
        let mut read = Vec::new();
        for m in &first {
            read.push((mailbox, mapping_slot(&m.id(), 3)));
            read.push((token, mapping_slot(&B256::from_slice(&m.body[..32]), 0)));
        }
        read.push((token, U256::from(2)));
        let slots = DerivedSlots::default();
        assert!(slots.predict(first.iter()).is_empty(), "nothing learned yet");
        assert_eq!(slots.learn(first.iter(), &read), 2);
        assert_eq!(slots.learn(first.iter(), &read), 0, "rules are learned once");
        assert!(slots.unexplained.lock().unwrap().contains(&(token, U256::from(2))), "the slot no key explains");

        let next = message(3, Address::repeat_byte(0x13));
        let predicted = slots.predict(std::iter::once(&next));
        assert_eq!(predicted.len(), 2);
        assert!(predicted.contains(&(mailbox, mapping_slot(&next.id(), 3))));
        let recipient_word = B256::left_padding_from(Address::repeat_byte(0x13).as_slice());
        assert!(predicted.contains(&(token, mapping_slot(&recipient_word, 0))));
    }
}
