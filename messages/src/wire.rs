//! What travels on NATS (docs/architecture.md, steps 2 and 3): subjects and the two envelopes,
//! JSON-encoded, size-capped and strictly decoded because anyone on the bus can publish.

use alloy::primitives::{Address, B256, Bytes, Signature};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{Attestation, Message, QuorumCertificate, SIGNATURE_LEN};

/// Envelope format version.
pub const WIRE_VERSION: u8 = 1;

/// The largest envelope accepted: a maximal message with a generous certificate, hex
/// encoded, fits with room to spare.
pub const MAX_ENVELOPE_LEN: usize = 96 * 1024;

/// Subject a validator's signature for a message from `origin` to `destination` goes to.
pub fn attestation_subject(origin: u32, destination: u32) -> String {
    format!("ferry.att.{origin}.{destination}")
}

/// Subject of deliverable messages bound for `destination`.
pub fn message_subject(destination: u32) -> String {
    format!("ferry.msg.{destination}")
}

/// Why bytes from the bus are not a usable envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Over [`MAX_ENVELOPE_LEN`].
    #[error("envelope is {0} bytes, over the {MAX_ENVELOPE_LEN}-byte limit")]
    TooLarge(usize),
    /// Not JSON of the right shape.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// A version this code does not speak.
    #[error("unsupported envelope version {0}")]
    Version(u8),
    /// The message bytes do not decode.
    #[error("message: {0}")]
    Message(#[from] crate::MessageError),
    /// The signature or certificate bytes do not parse.
    #[error("signature: {0}")]
    Signature(String),
}

impl WireError {
    /// A short label for metrics (`ferry_bad_input_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::Malformed(_) => "malformed",
            Self::Version(_) => "version",
            Self::Message(_) => "malformed_message",
            Self::Signature(_) => "malformed_signature",
        }
    }
}

/// Where a message was dispatched: the origin block that the attestation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginBlock {
    /// Block number.
    pub number: u64,
    /// Block hash (signed over).
    pub hash: B256,
    /// Block timestamp (informational: delivery latency runs from it).
    pub timestamp: u64,
}

/// One validator's signature over one message (subject [`attestation_subject`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAttestation {
    /// [`WIRE_VERSION`].
    pub version: u8,
    /// The packed message.
    pub message: Bytes,
    /// The origin Mailbox.
    pub origin_mailbox: Address,
    /// The origin block.
    pub block: OriginBlock,
    /// Who claims to have signed (checked against the recovered signer).
    pub validator: Address,
    /// `r | s | v`, 65 bytes.
    pub signature: Bytes,
}

/// A message with a quorum certificate, ready for its destination (subject
/// [`message_subject`], `Nats-Msg-Id` = its id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deliverable {
    /// [`WIRE_VERSION`].
    pub version: u8,
    /// The packed message.
    pub message: Bytes,
    /// The origin Mailbox.
    pub origin_mailbox: Address,
    /// The origin block.
    pub block: OriginBlock,
    /// The quorum certificate as `Mailbox.process` metadata.
    pub metadata: Bytes,
}

fn decode_json<T: DeserializeOwned>(bytes: &[u8], version: impl Fn(&T) -> u8) -> Result<T, WireError> {
    if bytes.len() > MAX_ENVELOPE_LEN {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let value: T = serde_json::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    match version(&value) {
        WIRE_VERSION => Ok(value),
        other => Err(WireError::Version(other)),
    }
}

fn encode_json(value: &impl Serialize) -> Vec<u8> {
    // Serialising these plain structs cannot fail; an empty payload would be refused
    // by every reader rather than silently accepted.
    serde_json::to_vec(value).unwrap_or_default()
}

impl SignedAttestation {
    /// The JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode_json(self)
    }

    /// Parses bytes from the bus, refusing oversize input, unknown fields and versions.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode_json(bytes, |s: &Self| s.version)
    }

    /// The message, the attestation it signs, and the signature.
    pub fn open(&self) -> Result<(Message, Attestation, Signature), WireError> {
        let message = Message::decode(&self.message)?;
        let attestation = attestation(&message, self.origin_mailbox, self.block.hash);
        if self.signature.len() != SIGNATURE_LEN {
            return Err(WireError::Signature(format!("{} bytes, not {SIGNATURE_LEN}", self.signature.len())));
        }
        let signature = Signature::from_raw(&self.signature).map_err(|e| WireError::Signature(e.to_string()))?;
        Ok((message, attestation, signature))
    }
}

impl Deliverable {
    /// The JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode_json(self)
    }

    /// Parses bytes from the bus, refusing oversize input, unknown fields and versions.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode_json(bytes, |d: &Self| d.version)
    }

    /// The message, the attestation its certificate signs, and the certificate.
    pub fn open(&self) -> Result<(Message, Attestation, QuorumCertificate), WireError> {
        let message = Message::decode(&self.message)?;
        let qc = QuorumCertificate::from_metadata(&self.metadata).map_err(|e| WireError::Signature(e.to_string()))?;
        if qc.block_hash != self.block.hash {
            return Err(WireError::Signature("the certificate names another block".into()));
        }
        Ok((message.clone(), attestation(&message, self.origin_mailbox, self.block.hash), qc))
    }
}

/// The attestation of `message` dispatched by `origin_mailbox` in block `block_hash`.
pub fn attestation(message: &Message, origin_mailbox: Address, block_hash: B256) -> Attestation {
    Attestation {
        origin: message.origin,
        origin_mailbox: origin_mailbox.into_word(),
        destination: message.destination,
        block_hash,
        id: message.id(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SignedAttestation {
        let message = Message {
            version: crate::VERSION,
            nonce: 7,
            origin: 31337,
            sender: B256::repeat_byte(1),
            destination: 31338,
            recipient: B256::repeat_byte(2),
            body: vec![1, 2, 3].into(),
        };
        SignedAttestation {
            version: WIRE_VERSION,
            message: message.encode().into(),
            origin_mailbox: Address::repeat_byte(9),
            block: OriginBlock { number: 5, hash: B256::repeat_byte(5), timestamp: 1000 },
            validator: Address::repeat_byte(3),
            signature: vec![0x11; 64].into_iter().chain([27]).collect(),
        }
    }

    #[test]
    fn envelopes_round_trip() {
        let signed = sample();
        assert_eq!(SignedAttestation::decode(&signed.encode()).unwrap(), signed);
        let (message, attestation, _) = signed.open().unwrap();
        assert_eq!(attestation.id, message.id());
        assert_eq!(attestation.block_hash, B256::repeat_byte(5));
    }

    #[test]
    fn bad_envelopes_are_refused_with_a_reason() {
        assert!(matches!(SignedAttestation::decode(b"\x00\xff garbage"), Err(WireError::Malformed(_))));
        assert!(matches!(SignedAttestation::decode(&vec![b' '; MAX_ENVELOPE_LEN + 1]), Err(WireError::TooLarge(_))));
        let mut wrong = serde_json::to_value(sample()).unwrap();
        wrong["version"] = 2.into();
        assert_eq!(SignedAttestation::decode(wrong.to_string().as_bytes()), Err(WireError::Version(2)));
        // A deliverable is not an attestation: unknown and missing fields are refused.
        let deliverable = Deliverable {
            version: WIRE_VERSION,
            message: sample().message,
            origin_mailbox: Address::ZERO,
            block: sample().block,
            metadata: vec![0; 32].into(),
        };
        assert!(matches!(SignedAttestation::decode(&deliverable.encode()), Err(WireError::Malformed(_))));
        let mut short = sample();
        short.signature = vec![1; 10].into();
        assert!(matches!(short.open(), Err(WireError::Signature(_))));
        let mut truncated = sample();
        truncated.message = truncated.message[..20].to_vec().into();
        assert!(matches!(truncated.open(), Err(WireError::Message(_))));
    }
}
