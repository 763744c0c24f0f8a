//! What validators sign (docs/architecture.md, step 2) and how signatures travel to the Mailbox.

use alloy::primitives::{Address, B256, Signature, eip191_hash_message, keccak256};
use serde::{Deserialize, Serialize};

use crate::{MessageId, MetadataError};

/// Bytes of one signature in metadata: `r (32) | s (32) | v (1, 27 or 28)`.
pub const SIGNATURE_LEN: usize = 65;

/// Domain tag that keeps ferry attestations apart from anything else a key signs.
const DOMAIN: &[u8; 5] = b"FERRY";

/// The statement a validator signs: this message id was dispatched by `origin_mailbox`
/// on chain `origin`, in block `block_hash`, for chain `destination`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attestation {
    /// Origin chain id.
    pub origin: u32,
    /// The Mailbox on the origin chain, left-padded to 32 bytes.
    pub origin_mailbox: B256,
    /// Destination chain id.
    pub destination: u32,
    /// The origin block that holds the `Dispatch` log.
    pub block_hash: B256,
    /// The message id.
    pub id: MessageId,
}

impl Attestation {
    /// `keccak256("FERRY" | origin u32 | originMailbox | destination u32 | blockHash | id)`,
    /// as `Mailbox.attestationDigest` computes it.
    pub fn digest(&self) -> B256 {
        let mut packed = Vec::with_capacity(5 + 4 + 32 + 4 + 32 + 32);
        packed.extend_from_slice(DOMAIN);
        packed.extend_from_slice(&self.origin.to_be_bytes());
        packed.extend_from_slice(self.origin_mailbox.as_slice());
        packed.extend_from_slice(&self.destination.to_be_bytes());
        packed.extend_from_slice(self.block_hash.as_slice());
        packed.extend_from_slice(self.id.as_slice());
        keccak256(packed)
    }

    /// The EIP-191 hash of [`digest`](Self::digest): what a key actually signs and what
    /// the Mailbox recovers signers from.
    pub fn signing_hash(&self) -> B256 {
        eip191_hash_message(self.digest())
    }

    /// The address that produced `signature` over this attestation.
    pub fn recover_signer(&self, signature: &Signature) -> Result<Address, alloy::primitives::SignatureError> {
        signature.recover_address_from_prehash(&self.signing_hash())
    }
}

/// Validator signatures over one [`Attestation`], in the order the Mailbox checks them.
///
/// Its [`metadata`](Self::metadata) is the `metadata` argument of `Mailbox.process`:
/// the origin block hash, then 65-byte signatures whose signers must be strictly
/// ascending (which makes them distinct). Whether enough of the right validators
/// signed is the verifier's question, not this type's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumCertificate {
    /// The origin block the attestation names.
    pub block_hash: B256,
    /// Signatures in metadata order.
    pub signatures: Vec<Signature>,
}

impl QuorumCertificate {
    /// A certificate over `attestation` with the signatures put in ascending signer
    /// order, the order the Mailbox requires.
    pub fn ordered(attestation: &Attestation, signatures: Vec<Signature>) -> Result<Self, MetadataError> {
        let mut signed = signatures
            .into_iter()
            .enumerate()
            .map(|(index, signature)| {
                attestation
                    .recover_signer(&signature)
                    .map(|signer| (signer, signature))
                    .map_err(|e| MetadataError::Recovery { index, reason: e.to_string() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        signed.sort_by_key(|(signer, _)| *signer);
        Ok(Self { block_hash: attestation.block_hash, signatures: signed.into_iter().map(|(_, s)| s).collect() })
    }

    /// The signers, in certificate order.
    pub fn signers(&self, attestation: &Attestation) -> Result<Vec<Address>, MetadataError> {
        self.signatures
            .iter()
            .enumerate()
            .map(|(index, signature)| {
                attestation
                    .recover_signer(signature)
                    .map_err(|e| MetadataError::Recovery { index, reason: e.to_string() })
            })
            .collect()
    }

    /// The bytes `Mailbox.process` takes as `metadata`.
    pub fn metadata(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + SIGNATURE_LEN * self.signatures.len());
        out.extend_from_slice(self.block_hash.as_slice());
        for signature in &self.signatures {
            out.extend_from_slice(&signature.as_bytes());
        }
        out
    }

    /// Parses metadata bytes.
    pub fn from_metadata(bytes: &[u8]) -> Result<Self, MetadataError> {
        if bytes.len() < 32 || !(bytes.len() - 32).is_multiple_of(SIGNATURE_LEN) {
            return Err(MetadataError::Length(bytes.len()));
        }
        let signatures = bytes[32..]
            .chunks_exact(SIGNATURE_LEN)
            .enumerate()
            .map(|(index, raw)| {
                // The Mailbox's ecrecover takes v as 27 or 28 only; the parser would also
                // take 0 and 1, which the chain would then refuse.
                if !matches!(raw[64], 27 | 28) {
                    let reason = format!("v is {}, not 27 or 28", raw[64]);
                    return Err(MetadataError::Signature { index, reason });
                }
                Signature::from_raw(raw).map_err(|e| MetadataError::Signature { index, reason: e.to_string() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { block_hash: B256::from_slice(&bytes[..32]), signatures })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn metadata_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(qc) = QuorumCertificate::from_metadata(&bytes) {
                prop_assert_eq!(qc.signatures.len(), (bytes.len() - 32) / SIGNATURE_LEN);
                // What parses is exactly what the Mailbox is given back.
                prop_assert_eq!(qc.metadata(), bytes);
            }
        }
    }

    #[test]
    fn metadata_length_is_checked() {
        assert_eq!(QuorumCertificate::from_metadata(&[0; 31]), Err(MetadataError::Length(31)));
        assert_eq!(QuorumCertificate::from_metadata(&[0; 33]), Err(MetadataError::Length(33)));
        let empty = QuorumCertificate::from_metadata(&[7; 32]).map(|qc| qc.signatures.len());
        assert_eq!(empty, Ok(0));
    }

    #[test]
    fn v_must_be_what_the_mailbox_takes() {
        // Found by the quorum_certificate fuzz target: v = 0 parsed (as parity) and came
        // back out as 27, while the Mailbox's ecrecover refuses 0 and 1.
        let mut metadata = vec![7u8; 32 + SIGNATURE_LEN];
        metadata[32] = 1; // r
        metadata[64] = 1; // s
        for v in [0u8, 1, 2, 26, 29, 255] {
            metadata[96] = v;
            assert!(
                matches!(QuorumCertificate::from_metadata(&metadata), Err(MetadataError::Signature { index: 0, .. })),
                "v = {v}"
            );
        }
        for v in [27u8, 28] {
            metadata[96] = v;
            let qc = QuorumCertificate::from_metadata(&metadata).unwrap();
            assert_eq!(qc.metadata(), metadata);
        }
    }
}
