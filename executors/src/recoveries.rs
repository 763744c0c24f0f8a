//! A memo of secp256k1 recoveries that the EVM's `ecrecover` precompile consults.
//!
//! A relayer recovers every validator signature before it certifies a message; the
//! Mailbox then recovers the same signatures again on chain, and predicting the delivery
//! runs that precompile once more per signature. Recovery is deterministic, so a result
//! the caller already holds ([`remember`]) answers the precompile exactly: the memo keys
//! on the precompile's whole input (message hash, `r || s`, recovery id), and anything it
//! does not hold is recovered as revm always does. The memo is process-wide because revm
//! takes its crypto provider process-wide ([`revm::precompile::install_crypto`]).

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use alloy::primitives::{Address, B256, Signature};
use revm::precompile::{Crypto, DefaultCrypto, PrecompileHalt, install_crypto};

/// Entries per generation: the signatures of a few rounds of deliveries. When the newer
/// generation fills, the older one is dropped, so the memo never grows past twice this.
const GENERATION: usize = 1 << 15;

/// (message hash, `r || s`, recovery id).
type Key = ([u8; 32], [u8; 64], u8);

/// The memo's two generations and its counters.
#[derive(Debug, Default)]
struct Memo {
    generations: Mutex<[HashMap<Key, Address>; 2]>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Memo {
    fn lookup(&self, key: &Key) -> Option<Address> {
        let generations = self.generations.lock().ok()?;
        generations.iter().find_map(|generation| generation.get(key).copied())
    }

    fn remember(&self, key: Key, signer: Address) {
        let Ok(mut generations) = self.generations.lock() else { return };
        if generations[0].len() >= GENERATION {
            generations.swap(0, 1);
            generations[0].clear();
        }
        generations[0].insert(key, signer);
    }
}

static MEMO: std::sync::LazyLock<Memo> = std::sync::LazyLock::new(Memo::default);

/// revm's crypto provider with `ecrecover` answered from a memo first.
#[derive(Debug)]
struct MemoCrypto(&'static Memo);

impl Crypto for MemoCrypto {
    fn secp256k1_ecrecover(&self, sig: &[u8; 64], recid: u8, msg: &[u8; 32]) -> Result<[u8; 32], PrecompileHalt> {
        if let Some(signer) = self.0.lookup(&(*msg, *sig, recid)) {
            self.0.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(signer.into_word().0);
        }
        self.0.misses.fetch_add(1, Ordering::Relaxed);
        DefaultCrypto.secp256k1_ecrecover(sig, recid, msg)
    }
}

/// Makes the EVM's `ecrecover` consult the memo; calling it again changes nothing.
/// Returns false when another crypto provider was installed first (or an EVM already ran
/// with revm's default one): then [`remember`] is harmless and useless.
pub fn install() -> bool {
    *INSTALLED.get_or_init(|| install_crypto(MemoCrypto(&MEMO)))
}

/// Whether [`install`] succeeded in this process: whether anyone here will consult the
/// memo (a process that only signs need not fill it).
pub fn installed() -> bool {
    INSTALLED.get().copied().unwrap_or(false)
}

static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Records that `signature` (`r || s` and a recovery id of 0 or 1) over `hash` recovers
/// to `signer`. The caller must have recovered it, or made it with `signer`'s key: the
/// precompile believes the memo.
pub fn remember(hash: B256, rs: [u8; 64], recovery_id: u8, signer: Address) {
    MEMO.remember((hash.0, rs, recovery_id), signer);
}

/// [`remember`] of an alloy signature over `hash`, recovered to `signer`.
pub fn remember_signature(hash: B256, signature: &Signature, signer: Address) {
    remember(hash, rs_of(signature), u8::from(signature.v()), signer);
}

/// The signer of `signature` over `hash`, if the memo holds it (someone in this process
/// recovered it). Not counted in [`stats`], which count the EVM's `ecrecover` calls.
pub fn recall(hash: &B256, signature: &Signature) -> Option<Address> {
    MEMO.lookup(&(hash.0, rs_of(signature), u8::from(signature.v())))
}

/// `r || s` of a signature, as the precompile takes them.
fn rs_of(signature: &Signature) -> [u8; 64] {
    let mut rs = [0u8; 64];
    rs[..32].copy_from_slice(&signature.r().to_be_bytes::<32>());
    rs[32..].copy_from_slice(&signature.s().to_be_bytes::<32>());
    rs
}

/// How many `ecrecover` calls the memo answered, and how many it passed on.
pub fn stats() -> (u64, u64) {
    (MEMO.hits.load(Ordering::Relaxed), MEMO.misses.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use alloy::signers::{SignerSync, local::PrivateKeySigner};

    use super::*;

    fn memo() -> &'static Memo {
        Box::leak(Box::default())
    }

    #[test]
    fn the_memo_answers_what_it_was_told_and_recovers_the_rest() {
        let crypto = MemoCrypto(memo());
        let signer = PrivateKeySigner::random();
        let hash = B256::repeat_byte(7);
        let signature = signer.sign_hash_sync(&hash).unwrap();
        let rs: [u8; 64] = signature.as_bytes()[..64].try_into().unwrap();
        let recid = u8::from(signature.v());

        // Not remembered: recovered the ordinary way, to the real signer.
        let plain = crypto.secp256k1_ecrecover(&rs, recid, &hash.0).unwrap();
        assert_eq!(Address::from_word(plain.into()), signer.address());
        assert_eq!((crypto.0.hits.load(Ordering::Relaxed), crypto.0.misses.load(Ordering::Relaxed)), (0, 1));

        // Remembered (with a signer the curve would not give, to see the memo answer).
        let told = Address::repeat_byte(0x42);
        crypto.0.remember((hash.0, rs, recid), told);
        let answered = crypto.secp256k1_ecrecover(&rs, recid, &hash.0).unwrap();
        assert_eq!(Address::from_word(answered.into()), told);
        assert_eq!(crypto.0.hits.load(Ordering::Relaxed), 1);
        // Another recovery id is another input: not answered from the memo.
        let other = crypto.secp256k1_ecrecover(&rs, 1 - recid, &hash.0);
        assert_ne!(other.ok().map(|w| Address::from_word(w.into())), Some(told));
    }

    #[test]
    fn the_memo_keeps_at_most_two_generations() {
        let memo = memo();
        let key = |i: usize| (B256::from(alloy::primitives::U256::from(i)).0, [1; 64], 0);
        for i in 0..2 * GENERATION + 10 {
            memo.remember(key(i), Address::ZERO);
        }
        let generations = memo.generations.lock().unwrap();
        assert!(generations.iter().map(HashMap::len).sum::<usize>() <= 2 * GENERATION);
        assert!(memo_has(&generations, &key(2 * GENERATION + 9)));
        assert!(!memo_has(&generations, &key(0)));
    }

    #[test]
    fn a_remembered_signature_is_recalled_and_no_other() {
        let signer = PrivateKeySigner::random();
        let hash = B256::repeat_byte(0x5e);
        let signature = signer.sign_hash_sync(&hash).unwrap();
        assert_eq!(recall(&hash, &signature), None);
        remember_signature(hash, &signature, signer.address());
        assert_eq!(recall(&hash, &signature), Some(signer.address()));
        assert_eq!(recall(&B256::repeat_byte(0x5f), &signature), None, "another hash");
        let flipped = Signature::new(signature.r(), signature.s(), !signature.v());
        assert_eq!(recall(&hash, &flipped), None, "another recovery id");
    }

    fn memo_has(generations: &[HashMap<Key, Address>; 2], key: &Key) -> bool {
        generations.iter().any(|g| g.contains_key(key))
    }
}
