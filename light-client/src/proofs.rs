//! Merkle-Patricia proofs: receipts against `receiptsRoot`, accounts and storage against
//! `stateRoot`, and the proven message built on them.

use alloy::{
    consensus::{Header, ReceiptEnvelope},
    eips::eip2718::{Decodable2718, Encodable2718},
    primitives::{Address, B256, Bytes, U256, keccak256},
    rlp::Encodable,
    rpc::types::EIP1186AccountProofResponse,
    sol_types::SolEvent,
    trie::{
        HashBuilder, Nibbles, TrieAccount,
        proof::{ProofNodes, ProofRetainer, verify_proof},
    },
};
use ferry_messages::{Attestation, Message, MessageId, contracts::Mailbox};
use serde::{Deserialize, Serialize};

use crate::{ProofError, SealedHeader};

/// A receipt and the trie nodes that lead from a block's `receiptsRoot` to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptProof {
    /// The transaction's index in the block (the trie key is `rlp(index)`).
    pub index: u64,
    /// The receipt's EIP-2718 encoding (the trie value).
    pub receipt: Bytes,
    /// Trie nodes from the root down.
    pub nodes: Vec<Bytes>,
}

impl ReceiptProof {
    /// Builds the receipts trie of a block and the proof of receipt `index`, checking
    /// that the trie's root is `receipts_root`. To prove several receipts of one block,
    /// build a [`ReceiptTrie`] once instead.
    pub fn build(receipts: &[ReceiptEnvelope], index: u64, receipts_root: B256) -> Result<Self, ProofError> {
        ReceiptTrie::build(receipts, &[index], receipts_root)?.proof(index)
    }

    /// Verifies the proof against `receipts_root` and returns the receipt.
    pub fn verify(&self, receipts_root: B256) -> Result<ReceiptEnvelope, ProofError> {
        verify_proof(receipts_root, Nibbles::unpack(rlp_index(self.index)), Some(self.receipt.to_vec()), &self.nodes)
            .map_err(|e| ProofError::Trie { what: "receipt", root: receipts_root, reason: e.to_string() })?;
        ReceiptEnvelope::decode_2718(&mut self.receipt.as_ref())
            .map_err(|e| ProofError::Malformed { what: "receipt", reason: e.to_string() })
    }
}

/// A block's receipts trie, hashed once, holding the proof nodes of chosen receipts:
/// proving every message of a block with one trie instead of one per message keeps a
/// block of `n` dispatches at O(n) hashing, not O(n²).
#[derive(Debug, Clone)]
pub struct ReceiptTrie {
    /// Each receipt's EIP-2718 encoding, by index.
    encoded: Vec<Vec<u8>>,
    /// The retained nodes on the paths to the chosen receipts.
    nodes: ProofNodes,
    /// The chosen receipts' indices.
    targets: Vec<u64>,
    /// The trie's root, equal to the `receiptsRoot` it was checked against.
    root: B256,
}

impl ReceiptTrie {
    /// Builds the receipts trie of a block, keeping the proof nodes of the receipts at
    /// `targets`, and checks that its root is `receipts_root`.
    pub fn build(receipts: &[ReceiptEnvelope], targets: &[u64], receipts_root: B256) -> Result<Self, ProofError> {
        if let Some(&index) = targets.iter().find(|&&i| usize::try_from(i).map_or(true, |i| i >= receipts.len())) {
            return Err(ProofError::NoSuchReceipt { index, count: receipts.len() });
        }
        let retain = targets.iter().map(|&i| Nibbles::unpack(rlp_index(i))).collect();
        let mut builder = HashBuilder::default().with_proof_retainer(ProofRetainer::new(retain));
        let encoded = checked_trie(&mut builder, receipts, receipts_root)?;
        Ok(Self { encoded, nodes: builder.take_proof_nodes(), targets: targets.to_vec(), root: receipts_root })
    }

    /// Checks that `receipts` are exactly the receipts under `receipts_root` (their trie
    /// hashes to it), retaining no proof: every receipt of the block is proven at once,
    /// for a reader that takes them from the list itself (see [`dispatched`]).
    pub fn check_root(receipts: &[ReceiptEnvelope], receipts_root: B256) -> Result<(), ProofError> {
        checked_trie(&mut HashBuilder::default(), receipts, receipts_root).map(drop)
    }

    /// The proof of receipt `index`, which must be one of the targets it was built for.
    pub fn proof(&self, index: u64) -> Result<ReceiptProof, ProofError> {
        let receipt = usize::try_from(index)
            .ok()
            .and_then(|i| self.encoded.get(i))
            .filter(|_| self.targets.contains(&index))
            .ok_or(ProofError::NoSuchReceipt { index, count: self.encoded.len() })?;
        let key = Nibbles::unpack(rlp_index(index));
        let nodes = self.nodes.matching_nodes_sorted(&key).into_iter().map(|(_, n)| n).collect();
        Ok(ReceiptProof { index, receipt: receipt.clone().into(), nodes })
    }
}

/// Builds the trie of `receipts` with `builder` and checks that its root is
/// `receipts_root`; returns the receipts encoded.
fn checked_trie(
    builder: &mut HashBuilder,
    receipts: &[ReceiptEnvelope],
    receipts_root: B256,
) -> Result<Vec<Vec<u8>>, ProofError> {
    let encoded: Vec<Vec<u8>> = receipts.iter().map(|r| r.encoded_2718()).collect();
    let root = trie_root(builder, &encoded);
    if root != receipts_root {
        return Err(ProofError::ReceiptsRootMismatch { expected: receipts_root, actual: root });
    }
    Ok(encoded)
}

/// The root of the trie of `encoded` receipts (keyed by `rlp(index)`), built by `builder`.
fn trie_root(builder: &mut HashBuilder, encoded: &[Vec<u8>]) -> B256 {
    let mut keys: Vec<(Nibbles, usize)> =
        (0..encoded.len()).map(|i| (Nibbles::unpack(rlp_index(i as u64)), i)).collect();
    // The builder takes leaves in key order, and rlp(index) does not sort like index.
    keys.sort_unstable_by_key(|(key, _)| *key);
    for (key, i) in &keys {
        builder.add_leaf(*key, &encoded[*i]);
    }
    builder.root()
}

fn rlp_index(index: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    index.encode(&mut out);
    out
}

/// Verifies an `eth_getProof` answer against `state_root`: the account (present or
/// absent) and every storage slot in it (present or zero) against the account's
/// storage root.
pub fn verify_account_proof(state_root: B256, proof: &EIP1186AccountProofResponse) -> Result<(), ProofError> {
    let account = TrieAccount {
        nonce: proof.nonce,
        balance: proof.balance,
        storage_root: proof.storage_hash,
        code_hash: proof.code_hash,
    };
    let absent = account.nonce == 0
        && account.balance.is_zero()
        && account.code_hash == alloy::consensus::constants::KECCAK_EMPTY
        && account.storage_root == alloy::trie::EMPTY_ROOT_HASH;
    let value = (!absent).then(|| alloy::rlp::encode(account));
    verify_proof(state_root, Nibbles::unpack(keccak256(proof.address)), value, &proof.account_proof)
        .map_err(|e| ProofError::Trie { what: "account", root: state_root, reason: e.to_string() })?;
    for slot in &proof.storage_proof {
        verify_storage_proof(proof.storage_hash, slot.key.as_b256(), slot.value, &slot.proof)?;
    }
    Ok(())
}

/// Verifies that `slot` holds `value` (zero meaning absent) under `storage_root`.
pub fn verify_storage_proof(storage_root: B256, slot: B256, value: U256, nodes: &[Bytes]) -> Result<(), ProofError> {
    let expected = (!value.is_zero()).then(|| alloy::rlp::encode(value));
    verify_proof(storage_root, Nibbles::unpack(keccak256(slot)), expected, nodes).map_err(|e| ProofError::Trie {
        what: "storage",
        root: storage_root,
        reason: e.to_string(),
    })
}

/// A message with everything needed to check, offline and against nothing but a trusted
/// block hash, that the origin Mailbox dispatched it in that block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenMessage {
    /// The message.
    pub message: Message,
    /// The origin block's header.
    pub header: Header,
    /// The proof of the dispatching transaction's receipt.
    pub receipt_proof: ReceiptProof,
    /// The `Dispatch` log's index within that receipt's logs.
    pub log_index: u64,
}

impl ProvenMessage {
    /// Proves the `Dispatch` log `log_index` of receipt `tx_index` in `header`'s block.
    pub fn build(
        header: &SealedHeader,
        receipts: &[ReceiptEnvelope],
        tx_index: u64,
        log_index: u64,
    ) -> Result<Self, ProofError> {
        let trie = ReceiptTrie::build(receipts, &[tx_index], header.receipts_root)?;
        Self::from_trie(header, &trie, tx_index, log_index)
    }

    /// Proves the `Dispatch` log `log_index` of receipt `tx_index` from a receipts trie
    /// of `header`'s block built with `tx_index` among its targets.
    pub fn from_trie(
        header: &SealedHeader,
        trie: &ReceiptTrie,
        tx_index: u64,
        log_index: u64,
    ) -> Result<Self, ProofError> {
        if trie.root != header.receipts_root {
            return Err(ProofError::ReceiptsRootMismatch { expected: header.receipts_root, actual: trie.root });
        }
        let receipt_proof = trie.proof(tx_index)?;
        let receipt = receipt_proof.verify(header.receipts_root)?;
        let log = receipt_log(&receipt, log_index)?;
        let dispatch = Mailbox::Dispatch::decode_log_data(&log.data)
            .map_err(|e| ProofError::LogMismatch { reason: format!("not a Dispatch log: {e}") })?;
        let message = Message::decode(&dispatch.message)
            .map_err(|e| ProofError::Malformed { what: "message", reason: e.to_string() })?;
        Ok(Self { message, header: header.inner().clone(), receipt_proof, log_index })
    }

    /// The id of the message.
    pub fn id(&self) -> MessageId {
        self.message.id()
    }

    /// The header's hash.
    pub fn block_hash(&self) -> B256 {
        self.header.hash_slow()
    }

    /// Checks that the header is the trusted one, the receipt is in it, its log
    /// `log_index` is a `Dispatch` by `origin_mailbox` carrying exactly this message with
    /// its id, and the message claims `origin_chain` as its origin.
    pub fn verify(&self, trusted: B256, origin_chain: u32, origin_mailbox: Address) -> Result<MessageId, ProofError> {
        let actual = self.header.hash_slow();
        if actual != trusted {
            return Err(ProofError::UntrustedHeader { trusted, actual });
        }
        let receipt = self.receipt_proof.verify(self.header.receipts_root)?;
        let dispatch = dispatch_log(&receipt, self.log_index, origin_mailbox)?;
        if dispatch.message.as_ref() != self.message.encode().as_slice() {
            return Err(ProofError::LogMismatch { reason: "the log carries other message bytes".into() });
        }
        check_dispatch(&dispatch, &self.message, origin_chain)
    }

    /// The attestation a validator signs for this message.
    pub fn attestation(&self, origin_mailbox: Address) -> Attestation {
        ferry_messages::wire::attestation(&self.message, origin_mailbox, self.block_hash())
    }
}

/// A message a `Dispatch` log carries, with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchedMessage {
    /// The message.
    pub message: Message,
    /// Its id, checked against the bytes the log carries.
    pub id: MessageId,
    /// The message as the log carries it (`id` is their hash).
    pub bytes: Bytes,
}

/// The message of `receipt`'s log `log_index`, with every check of
/// [`ProvenMessage::verify`] but the proof: the receipt succeeded, the log is a `Dispatch`
/// by `origin_mailbox` whose id is its message's, and the message claims `origin_chain`.
/// For a receipt of a list [`ReceiptTrie::check_root`] checked against the block.
pub fn dispatched(
    receipt: &ReceiptEnvelope,
    log_index: u64,
    origin_chain: u32,
    origin_mailbox: Address,
) -> Result<DispatchedMessage, ProofError> {
    let dispatch = dispatch_log(receipt, log_index, origin_mailbox)?;
    let message = Message::decode(&dispatch.message)
        .map_err(|e| ProofError::Malformed { what: "message", reason: e.to_string() })?;
    let id = check_dispatch(&dispatch, &message, origin_chain)?;
    Ok(DispatchedMessage { message, id, bytes: dispatch.message })
}

/// The `Dispatch` event of a successful `receipt`'s log `log_index`, emitted by `origin_mailbox`.
fn dispatch_log(
    receipt: &ReceiptEnvelope,
    log_index: u64,
    origin_mailbox: Address,
) -> Result<Mailbox::Dispatch, ProofError> {
    if !receipt.status() {
        return Err(ProofError::LogMismatch { reason: "the dispatching transaction reverted".into() });
    }
    let log = receipt_log(receipt, log_index)?;
    if log.address != origin_mailbox {
        let reason = format!("log emitted by {}, not the Mailbox {origin_mailbox}", log.address);
        return Err(ProofError::LogMismatch { reason });
    }
    Mailbox::Dispatch::decode_log_data(&log.data)
        .map_err(|e| ProofError::LogMismatch { reason: format!("not a Dispatch log: {e}") })
}

/// Checks that `dispatch` (carrying `message`'s bytes) names the message's id and that
/// the message claims `origin_chain`; returns the id.
fn check_dispatch(dispatch: &Mailbox::Dispatch, message: &Message, origin_chain: u32) -> Result<MessageId, ProofError> {
    let id = keccak256(&dispatch.message);
    if dispatch.id != id {
        return Err(ProofError::LogMismatch {
            reason: format!("the log's id {} is not the message's {id}", dispatch.id),
        });
    }
    if message.origin != origin_chain {
        let reason = format!("message origin {} is not chain {origin_chain}", message.origin);
        return Err(ProofError::LogMismatch { reason });
    }
    Ok(id)
}

fn receipt_log(receipt: &ReceiptEnvelope, index: u64) -> Result<&alloy::primitives::Log, ProofError> {
    let logs = receipt.logs();
    usize::try_from(index).ok().and_then(|i| logs.get(i)).ok_or(ProofError::NoSuchLog { index, count: logs.len() })
}
