//! Validators: signing attestations with k256, and checking quorum certificates the way
//! the Mailbox does on chain (EIP-191 over the attestation digest, low s, signers
//! strictly ascending and in the set, at least `threshold` of them).

use std::{collections::HashSet, fmt};

use alloy::primitives::{Address, B256, Signature};
use ferry_messages::{Attestation, QuorumCertificate};
use k256::ecdsa::SigningKey;

use crate::CommitteeError;

/// A validator's signing key. `Debug` never shows the key.
#[derive(Clone)]
pub struct ValidatorKey {
    key: SigningKey,
    address: Address,
}

impl ValidatorKey {
    /// The key from its 32 secret bytes.
    pub fn from_bytes(secret: &B256) -> Result<Self, CommitteeError> {
        let key = SigningKey::from_bytes(&secret.0.into()).map_err(|_| CommitteeError::InvalidKey)?;
        let address = Address::from_public_key(key.verifying_key());
        Ok(Self { key, address })
    }

    /// The validator's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs the EIP-191 hash of the attestation's digest (low s, as the Mailbox wants).
    pub fn sign(&self, attestation: &Attestation) -> Result<Signature, CommitteeError> {
        let (signature, recovery) = self
            .key
            .sign_prehash_recoverable(attestation.signing_hash().as_slice())
            .map_err(|e| CommitteeError::Signing(e.to_string()))?;
        Ok(Signature::from_signature_and_parity(signature, recovery.is_y_odd()))
    }
}

impl fmt::Debug for ValidatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatorKey").field("address", &self.address).finish_non_exhaustive()
    }
}

/// A validator set and its threshold, as a destination Mailbox holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<Address>,
    members: HashSet<Address>,
    threshold: usize,
}

impl ValidatorSet {
    /// A set of distinct, non-zero validators with `1 <= threshold <= len`.
    pub fn new(validators: Vec<Address>, threshold: usize) -> Result<Self, CommitteeError> {
        let members: HashSet<Address> = validators.iter().copied().collect();
        if members.len() != validators.len() || members.contains(&Address::ZERO) {
            return Err(CommitteeError::InvalidSet { reason: "validators must be distinct and non-zero".into() });
        }
        if threshold == 0 || threshold > validators.len() {
            return Err(CommitteeError::InvalidSet {
                reason: format!("threshold {threshold} is not between 1 and {}", validators.len()),
            });
        }
        Ok(Self { validators, members, threshold })
    }

    /// The validators.
    pub fn validators(&self) -> &[Address] {
        &self.validators
    }

    /// Signatures needed.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Whether `address` is in the set.
    pub fn contains(&self, address: &Address) -> bool {
        self.members.contains(address)
    }

    /// Checks `certificate` over `attestation` exactly as `Mailbox.process` will, and
    /// returns its signers.
    pub fn verify(
        &self,
        attestation: &Attestation,
        certificate: &QuorumCertificate,
    ) -> Result<Vec<Address>, CommitteeError> {
        if certificate.block_hash != attestation.block_hash {
            return Err(CommitteeError::BlockMismatch {
                certificate: certificate.block_hash,
                attestation: attestation.block_hash,
            });
        }
        let count = certificate.signatures.len();
        if count < self.threshold {
            return Err(CommitteeError::InsufficientSignatures { count, threshold: self.threshold });
        }
        let mut previous = Address::ZERO;
        let mut signers = Vec::with_capacity(count);
        for (index, signature) in certificate.signatures.iter().enumerate() {
            let signer = self.recover(attestation, index, signature)?;
            if signer <= previous {
                return Err(CommitteeError::SignersNotAscending { previous, signer });
            }
            if !self.contains(&signer) {
                return Err(CommitteeError::NotValidator { signer });
            }
            previous = signer;
            signers.push(signer);
        }
        Ok(signers)
    }

    /// The recovered signer of one signature, refusing what the Mailbox refuses.
    pub fn recover(
        &self,
        attestation: &Attestation,
        index: usize,
        signature: &Signature,
    ) -> Result<Address, CommitteeError> {
        if signature.normalize_s().is_some() {
            return Err(CommitteeError::HighS { index });
        }
        attestation.recover_signer(signature).map_err(|e| CommitteeError::Recovery { index, reason: e.to_string() })
    }

    /// A certificate from whatever signatures were collected: the valid ones from
    /// distinct validators, the first `threshold` of them in ascending signer order.
    pub fn certify(
        &self,
        attestation: &Attestation,
        signatures: impl IntoIterator<Item = Signature>,
    ) -> Result<QuorumCertificate, CommitteeError> {
        let recovered = signatures.into_iter().enumerate().filter_map(|(index, signature)| {
            self.recover(attestation, index, &signature).ok().map(|signer| (signer, signature))
        });
        self.certify_recovered(attestation, recovered)
    }

    /// [`certify`](Self::certify) from signatures whose signers were recovered already
    /// (each by [`recover`](Self::recover), so low-s and matching its signer): the ones of
    /// distinct validators of this set, the first `threshold` in ascending signer order.
    /// Recovering is most of a certificate's cost; a collector that checked each signature
    /// as it came in need not pay it twice.
    pub fn certify_recovered(
        &self,
        attestation: &Attestation,
        recovered: impl IntoIterator<Item = (Address, Signature)>,
    ) -> Result<QuorumCertificate, CommitteeError> {
        let mut valid: Vec<(Address, Signature)> = Vec::new();
        for (signer, signature) in recovered {
            if self.contains(&signer) && !valid.iter().any(|(s, _)| *s == signer) {
                valid.push((signer, signature));
            }
        }
        if valid.len() < self.threshold {
            return Err(CommitteeError::InsufficientSignatures { count: valid.len(), threshold: self.threshold });
        }
        valid.sort_by_key(|(signer, _)| *signer);
        valid.truncate(self.threshold);
        let certificate = QuorumCertificate {
            block_hash: attestation.block_hash,
            signatures: valid.into_iter().map(|(_, s)| s).collect(),
        };
        Ok(certificate)
    }
}
