//! Validators: signing attestations, and checking quorum certificates the way the
//! Mailbox does on chain (EIP-191 over the attestation digest, low s, signers strictly
//! ascending and in the set, at least `threshold` of them).
//!
//! Keys are k256's; the signing itself runs on libsecp256k1 (the backend every signature
//! recovery of the workspace already uses), which signs in a fraction of k256's time.
//! Both are RFC 6979 with low s, so the signatures are the same bytes (a test holds
//! them to it).

use std::{collections::HashSet, fmt, sync::LazyLock};

use alloy::primitives::{Address, B256, Signature};
use ferry_messages::{Attestation, QuorumCertificate};
use k256::ecdsa::SigningKey;

use crate::CommitteeError;

/// A validator's signing key. `Debug` never shows the key.
#[derive(Clone)]
pub struct ValidatorKey {
    secret: secp256k1::SecretKey,
    address: Address,
}

/// libsecp256k1's signing context, built once (its tables take a while to make).
static SIGNING: LazyLock<secp256k1::Secp256k1<secp256k1::SignOnly>> = LazyLock::new(secp256k1::Secp256k1::signing_only);

impl ValidatorKey {
    /// The key from its 32 secret bytes.
    pub fn from_bytes(secret: &B256) -> Result<Self, CommitteeError> {
        let key = SigningKey::from_bytes(&secret.0.into()).map_err(|_| CommitteeError::InvalidKey)?;
        let address = Address::from_public_key(key.verifying_key());
        let secret = secp256k1::SecretKey::from_byte_array(secret.0).map_err(|_| CommitteeError::InvalidKey)?;
        Ok(Self { secret, address })
    }

    /// The validator's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs the EIP-191 hash of the attestation's digest (low s, as the Mailbox wants).
    pub fn sign(&self, attestation: &Attestation) -> Result<Signature, CommitteeError> {
        self.sign_hash(attestation.signing_hash())
    }

    /// Signs an attestation's signing hash ([`Attestation::signing_hash`]), for a caller
    /// that signs it with several keys and hashes it once.
    pub fn sign_hash(&self, signing_hash: B256) -> Result<Signature, CommitteeError> {
        let digest = secp256k1::Message::from_digest(signing_hash.0);
        let (recovery, bytes) = SIGNING.sign_ecdsa_recoverable(digest, &self.secret).serialize_compact();
        Ok(Signature::from_bytes_and_parity(&bytes, i32::from(recovery) == 1))
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
        self.verify_recalled(attestation, certificate, |_, _| None)
    }

    /// [`verify`](Self::verify), taking a signature's signer from `recall` (given the
    /// signing hash and the signature) where it knows it: signatures this process
    /// recovered itself before. Every check but the curve arithmetic is made as usual.
    pub fn verify_recalled(
        &self,
        attestation: &Attestation,
        certificate: &QuorumCertificate,
        recall: impl Fn(&B256, &Signature) -> Option<Address>,
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
        let signing_hash = attestation.signing_hash();
        for (index, signature) in certificate.signatures.iter().enumerate() {
            let (signer, _) = self.signer_recalled(&signing_hash, index, signature, &recall)?;
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
        self.recover_from_hash(&attestation.signing_hash(), index, signature)
    }

    /// [`recover`](Self::recover) for a caller that holds the attestation's
    /// [`signing_hash`](Attestation::signing_hash) already.
    pub fn recover_from_hash(
        &self,
        signing_hash: &B256,
        index: usize,
        signature: &Signature,
    ) -> Result<Address, CommitteeError> {
        if signature.normalize_s().is_some() {
            return Err(CommitteeError::HighS { index });
        }
        signature
            .recover_address_from_prehash(signing_hash)
            .map_err(|e| CommitteeError::Recovery { index, reason: e.to_string() })
    }

    /// [`recover_from_hash`](Self::recover_from_hash), taking the signer from `recall`
    /// where it knows it (a signature this process made or recovered before) and saying
    /// whether it did. Only a low-s signature is recalled: a high-s one is refused either
    /// way, as the Mailbox refuses it.
    pub fn signer_recalled(
        &self,
        signing_hash: &B256,
        index: usize,
        signature: &Signature,
        recall: impl Fn(&B256, &Signature) -> Option<Address>,
    ) -> Result<(Address, bool), CommitteeError> {
        match recall(signing_hash, signature) {
            Some(signer) if signature.normalize_s().is_none() => Ok((signer, true)),
            _ => Ok((self.recover_from_hash(signing_hash, index, signature)?, false)),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// libsecp256k1's signatures are k256's, byte for byte (RFC 6979, low s), and
    /// recover to the key's address.
    #[test]
    fn signatures_are_the_ones_k256_makes() {
        for k in 1..=16u8 {
            let key = ValidatorKey::from_bytes(&B256::repeat_byte(k)).unwrap();
            let attestation = Attestation {
                origin: 31337,
                origin_mailbox: B256::repeat_byte(k.wrapping_mul(3)),
                destination: 31338,
                block_hash: B256::repeat_byte(k.wrapping_mul(7)),
                id: B256::repeat_byte(k.wrapping_mul(11)),
            };
            let k256 = SigningKey::from_bytes(&B256::repeat_byte(k).0.into()).unwrap();
            let (reference, parity) = k256.sign_prehash_recoverable(attestation.signing_hash().as_slice()).unwrap();
            let reference = Signature::from_signature_and_parity(reference, parity.is_y_odd());
            let signed = key.sign(&attestation).unwrap();
            assert_eq!(signed, reference, "key {k}");
            assert_eq!(attestation.recover_signer(&signed).unwrap(), key.address());
            assert!(signed.normalize_s().is_none(), "high s");
        }
    }

    #[test]
    fn recalled_signers_spare_the_recovery_and_nothing_else() {
        let keys: Vec<ValidatorKey> =
            (1..=3u8).map(|k| ValidatorKey::from_bytes(&B256::repeat_byte(k)).unwrap()).collect();
        let set = ValidatorSet::new(keys.iter().map(ValidatorKey::address).collect(), 2).unwrap();
        let attestation = Attestation {
            origin: 31337,
            origin_mailbox: B256::repeat_byte(1),
            destination: 31338,
            block_hash: B256::repeat_byte(2),
            id: B256::repeat_byte(3),
        };
        let qc = set.certify(&attestation, keys.iter().map(|k| k.sign(&attestation).unwrap())).unwrap();
        let signers = set.verify(&attestation, &qc).unwrap();
        let hash = attestation.signing_hash();
        // A recall that knows every signer gives what recovery gives.
        let knows = |h: &B256, s: &Signature| (*h == hash).then(|| s.recover_address_from_prehash(h).ok()).flatten();
        assert_eq!(set.verify_recalled(&attestation, &qc, knows).unwrap(), signers);
        // What it says is believed (it holds only what this process recovered), so one that
        // names an outsider is refused as the outsider...
        let outsider = Address::repeat_byte(0x77);
        let refused = set.verify_recalled(&attestation, &qc, |_, _| Some(outsider));
        assert_eq!(refused, Err(CommitteeError::NotValidator { signer: outsider }));
        // ...and the Mailbox's other rules still hold: a high-s signature is refused even
        // when recalled.
        let mut high = qc.clone();
        let s = high.signatures[0].s();
        let n = alloy::primitives::uint!(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141_U256);
        high.signatures[0] = Signature::new(high.signatures[0].r(), n - s, !high.signatures[0].v());
        let refused = set.verify_recalled(&attestation, &high, knows);
        assert_eq!(refused, Err(CommitteeError::HighS { index: 0 }));
    }
}
